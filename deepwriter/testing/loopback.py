"""A real OpenAI-compatible HTTP server on loopback over any Generator (and, for the log-prob
endpoints, a model-backed Scorer such as `TransformersScorer`), with fault injection.

It is a test fixture, not part of the product: it stages what a real server cannot be made to do on
cue (429s with Retry-After, 5xx, dropped connections, hangs, truncated or non-JSON bodies, servers that
refuse vLLM's extra fields), so that the HTTP clients are tested against real sockets, status codes
and broken responses. The benches use it for repeatable latency. Users who want a local
OpenAI-compatible server run the real one: `make serve` (vLLM; tests/llm/test_vllm_server.py runs it).
For a quick look by hand, from the repository root:

    python -m deepwriter.testing.loopback --model tiny-qwen3 --port 8000

Endpoints (request/response shapes follow vLLM and SGLang):
- GET  /v1/models
- POST /v1/chat/completions  n, temperature, top_p, max_tokens, seed, stop; assistant prefill via
  vLLM's `continue_final_message=true, add_generation_prompt=false` with a final assistant message
- POST /v1/completions       scoring only: `echo=true, logprobs=k` (legacy OpenAI logprobs with
  `text_offset`) and vLLM's `prompt_logprobs=k`; `max_tokens` 0 or 1 (1 = one greedy token)
- POST /generate             SGLang-style `return_logprob` with `logprob_start_len`

Model calls are serialised by one lock (the model and tokenizer are not thread-safe); the artificial
`latency_s` is spent outside it, so concurrent clients overlap their waiting like on a real server.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import signal
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Sequence

from deepwriter.config.llm import ModelConfig
from deepwriter.config.root import CONF_DIR
from deepwriter.llm import models
from deepwriter.llm.base import Generator, Sampling, Scorer
from deepwriter.serving.fleet import KEY_ENV

log = logging.getLogger("deepwriter.testing.loopback")

# over_context: vLLM's 400 for a prompt over --max-model-len; 401/403/404: a wrong key, model or URL
FAULT_KINDS = ("429", "500", "503", "drop", "hang", "truncate", "nonjson", "over_context", "401", "403", "404")
OVER_CONTEXT_MESSAGE = (
    "This model's maximum context length is 1024 tokens. However, your prompt contains 1500 input tokens, "
    "which exceeds this limit even without any output tokens. Please reduce the length of the input prompt."
)


class FaultPlan:
    """Which fault (if any) the next request gets.

    - `sequence`: consumed one entry per request (None = serve normally); afterwards no faults.
    - `probabilities`: {kind: p}, drawn per request with `seed` once the sequence is used up.
    - `always_for`: {substring: kind}: every request whose body contains the substring gets the fault
      (a permanently failing sample among healthy ones).
    - `paths`: only requests to these paths consume the plan (default: every POST).
    """

    def __init__(
        self,
        sequence: Sequence[Optional[str]] = (),
        probabilities: Optional[Dict[str, float]] = None,
        seed: int = 0,
        always_for: Optional[Dict[str, str]] = None,
        retry_after_s: float = 1.0,
        hang_s: float = 30.0,
        paths: Optional[Sequence[str]] = None,
    ):
        for kind in list(sequence) + list((probabilities or {}).keys()) + list((always_for or {}).values()):
            if kind is not None and kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS} or None")
        self._sequence = list(sequence)
        self.probabilities = dict(probabilities or {})
        self.always_for = dict(always_for or {})
        self.retry_after_s = retry_after_s
        self.hang_s = hang_s
        self.paths = set(paths) if paths else None
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def next_fault(self, path: str, body: bytes) -> Optional[str]:
        if self.paths is not None and path not in self.paths:
            return None
        text = body.decode("utf-8", "replace")
        for needle, kind in self.always_for.items():
            if needle in text:
                return kind
        with self._lock:
            if self._sequence:
                return self._sequence.pop(0)
            draw = self._rng.random()
            acc = 0.0
            for kind, p in self.probabilities.items():
                acc += p
                if draw < acc:
                    return kind
        return None


@dataclass
class ServerStats:
    """Counters of what the server saw; read them after the client is done."""

    requests: int = 0  # every request that reached a handler
    ok: int = 0  # answered 200 with a valid body
    by_path: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)  # fault kind -> times injected
    in_flight: int = 0
    max_in_flight: int = 0
    authorization: List[Optional[str]] = field(default_factory=list)  # Authorization header per request
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def enter(self, path: str, auth: Optional[str]) -> None:
        with self._lock:
            self.requests += 1
            self.by_path[path] += 1
            self.authorization.append(auth)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)

    def fault(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------------------------------------
# The model side: log-probs of every prompt token, shared by the three scoring protocols.


def _model_and_tokenizer(scorer: Optional[Scorer]):
    model = getattr(scorer, "model", None)
    tok = getattr(scorer, "tokenizer", None)
    if model is None or tok is None:
        raise HTTPError(501, "this server has no model-backed scorer: log-prob endpoints are unavailable")
    return model, tok


def prompt_logprobs(scorer: Scorer, ids: List[int], top_k: int = 0) -> tuple:
    """(logprob of each token given the ones before it, first = None; top-k alternatives per position;
    greedy next token id after the whole prompt)."""
    import torch

    model, _ = _model_and_tokenizer(scorer)
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0]
        logp = torch.log_softmax(logits.float(), dim=-1)
    target = torch.tensor(ids[1:], device=device)
    values = logp[:-1].gather(1, target[:, None])[:, 0].tolist() if len(ids) > 1 else []
    tops: List[Optional[List[tuple]]] = [None]
    if top_k > 0:
        v, i = logp[:-1].topk(top_k, dim=-1)
        tops += [list(zip(i[r].tolist(), v[r].tolist())) for r in range(len(ids) - 1)]
    else:
        tops += [[] for _ in range(len(ids) - 1)]
    ranks: List[Optional[int]] = [None]
    for r, tid in enumerate(ids[1:]):
        ranks.append(int((logp[r] > logp[r, tid]).sum().item()) + 1)
    next_id = int(logp[-1].argmax().item())
    return [None] + values, tops, ranks, next_id, float(logp[-1, next_id].item())


def _token_texts(tok, ids: List[int]) -> tuple:
    """Each token's text and its character offset in the decoded whole, the way legacy OpenAI
    logprobs report them: offsets come from decoding growing prefixes, so multi-byte characters split
    across tokens still land on the right character."""
    offsets, texts = [], []
    prev = ""
    for i in range(len(ids)):
        cur = tok.decode(ids[: i + 1], skip_special_tokens=False)
        offsets.append(len(prev))
        if cur.endswith("\ufffd") and i + 1 < len(ids):
            # a character split across tokens: its first bytes are an empty token, the token that
            # completes it carries the whole character
            texts.append("")
            continue
        texts.append(cur[len(prev) :])
        prev = cur
    return texts, offsets, prev


class LoopbackApp:
    def __init__(
        self,
        generator: Optional[Generator],
        scorer: Optional[Scorer],
        model_id: str,
        faults: Optional[FaultPlan],
        latency_s: float,
        stats: ServerStats,
        stopping: threading.Event,
        native_prefill: bool = True,
        echo_max_tokens_zero: bool = True,
        token_id_prompts: bool = True,
        api_key: Optional[str] = None,
    ):
        self.generator = generator
        self.api_key = api_key
        self.scorer = scorer
        self.model_id = model_id
        self.faults = faults
        self.latency_s = latency_s
        self.stats = stats
        self.stopping = stopping
        self.native_prefill = native_prefill
        self.echo_max_tokens_zero = echo_max_tokens_zero
        self.token_id_prompts = token_id_prompts
        self.model_lock = threading.Lock()

    # -- helpers --
    def _encode_prompt(self, prompt: Any) -> List[int]:
        _, tok = _model_and_tokenizer(self.scorer)
        if isinstance(prompt, list) and len(prompt) == 1 and not isinstance(prompt[0], int):
            prompt = prompt[0]  # a batch of one
        if isinstance(prompt, str):
            return tok(prompt, add_special_tokens=False)["input_ids"]
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            if not self.token_id_prompts:
                raise HTTPError(400, "'prompt' must be a string: token ids are not accepted")
            return list(prompt)
        raise HTTPError(400, "'prompt' must be a string or a list of token ids")

    # -- endpoints --
    def models(self, _body: dict) -> dict:
        return {"object": "list", "data": [{"id": self.model_id, "object": "model", "owned_by": "deepwriter"}]}

    def chat_completions(self, body: dict) -> dict:
        if self.generator is None:
            raise HTTPError(501, "this server has no generator")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HTTPError(400, "'messages' must be a non-empty list")
        prefill = None
        if not self.native_prefill and ("continue_final_message" in body or "add_generation_prompt" in body):
            raise HTTPError(400, "unknown fields: continue_final_message, add_generation_prompt")
        repeat_prefill = False
        if not self.native_prefill and messages[-1].get("role") == "assistant":
            # like APIs with native prefill that answer with the whole assistant turn
            prefill, messages, repeat_prefill = messages[-1].get("content", ""), messages[:-1], True
        elif body.get("continue_final_message"):
            if body.get("add_generation_prompt", True):
                raise HTTPError(400, "continue_final_message requires add_generation_prompt=false")
            if messages[-1].get("role") != "assistant":
                raise HTTPError(400, "continue_final_message requires a final assistant message")
            prefill = messages[-1].get("content", "")
            messages = messages[:-1]
        elif messages[-1].get("role") == "assistant":
            raise HTTPError(400, "a final assistant message needs continue_final_message=true")
        n = int(body.get("n", 1))
        stop = body.get("stop") or ()
        sampling = Sampling(
            temperature=float(body.get("temperature", 1.0)),
            top_p=float(body.get("top_p", 1.0)),
            max_new_tokens=int(body.get("max_completion_tokens") or body.get("max_tokens") or 16),
            seed=body.get("seed"),
            stop=tuple([stop] if isinstance(stop, str) else stop),
        )
        # greedy decoding gives n identical texts (as on vLLM); asking the backend once avoids
        # generate() backends that refuse num_return_sequences > 1 without sampling
        ask = 1 if sampling.temperature <= 0 else n
        with self.model_lock:
            gens = self.generator.generate(
                [messages], sampling, n=ask, prefill=[prefill] if prefill is not None else None
            )[0]
        if ask != n:
            gens = [dataclasses.replace(gens[0]) for _ in range(n)]
        if repeat_prefill:
            gens = [dataclasses.replace(g, text=prefill + g.text) for g in gens]
        prompt_tokens = max((g.prompt_tokens for g in gens), default=0)
        completion_tokens = sum(g.completion_tokens for g in gens)
        self.stats.add(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_id,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": g.text},
                    "finish_reason": g.finish_reason,
                    "logprobs": None,
                }
                for i, g in enumerate(gens)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def completions(self, body: dict) -> dict:
        _, tok = _model_and_tokenizer(self.scorer)
        ids = self._encode_prompt(body.get("prompt"))
        max_tokens = int(body.get("max_tokens", 16) if body.get("max_tokens") is not None else 16)
        echo = bool(body.get("echo", False))
        k_logprobs = body.get("logprobs")
        k_prompt = body.get("prompt_logprobs")
        if max_tokens > 1:
            raise HTTPError(400, "this test server completes raw prompts for scoring only: max_tokens must be 0 or 1")
        if max_tokens == 0 and not (echo and self.echo_max_tokens_zero):
            raise HTTPError(
                400, "max_tokens must be at least 1" if echo else "max_tokens=0 is only allowed with echo=true"
            )
        if not ids:
            raise HTTPError(400, "empty prompt")
        top_k = max(int(k_logprobs or 0), int(k_prompt or 0))
        with self.model_lock:
            values, tops, ranks, next_id, next_lp = prompt_logprobs(self.scorer, ids, top_k=top_k)
        out_ids = [next_id] if max_tokens == 1 else []
        choice: Dict[str, Any] = {"index": 0, "finish_reason": "length", "logprobs": None}
        gen_text = tok.decode(out_ids, skip_special_tokens=False)
        if k_logprobs is not None:
            all_ids = (ids + out_ids) if echo else out_ids
            all_values = (values + [next_lp] * len(out_ids)) if echo else [next_lp] * len(out_ids)
            texts, offsets, _ = _token_texts(tok, ids + out_ids)
            if not echo:
                texts, offsets = texts[len(ids) :], offsets[len(ids) :]
            all_tops: List[Any] = []
            for pos, _tid in enumerate(all_ids):
                lp = all_values[pos]
                if lp is None:
                    all_tops.append(None)
                    continue
                alts = {texts[pos]: lp}
                row = tops[pos] if echo and pos < len(tops) else []
                for alt_id, alt_lp in (row or [])[: int(k_logprobs)]:
                    alts.setdefault(tok.decode([alt_id]), alt_lp)
                all_tops.append(alts)
            choice["logprobs"] = {
                "tokens": texts,
                "token_logprobs": all_values,
                "top_logprobs": all_tops,
                "text_offset": offsets,
            }
        if k_prompt is not None:
            entries: List[Optional[dict]] = [None]
            for pos in range(1, len(ids)):
                d = {
                    str(ids[pos]): {"logprob": values[pos], "rank": ranks[pos], "decoded_token": tok.decode([ids[pos]])}
                }
                for rank, (alt_id, alt_lp) in enumerate(tops[pos][: int(k_prompt)], start=1):
                    d.setdefault(str(alt_id), {"logprob": alt_lp, "rank": rank, "decoded_token": tok.decode([alt_id])})
                entries.append(d)
            choice["prompt_logprobs"] = entries
            choice["prompt_token_ids"] = ids
        prompt_text = tok.decode(ids, skip_special_tokens=False)
        choice["text"] = (prompt_text + gen_text) if echo else gen_text
        self.stats.add(prompt_tokens=len(ids), completion_tokens=len(out_ids))
        return {
            "id": f"cmpl-{uuid.uuid4().hex[:16]}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model_id,
            "choices": [choice],
            "usage": {
                "prompt_tokens": len(ids),
                "completion_tokens": len(out_ids),
                "total_tokens": len(ids) + len(out_ids),
            },
        }

    def sglang_generate(self, body: dict) -> dict:
        _, tok = _model_and_tokenizer(self.scorer)
        if body.get("input_ids") is not None:
            ids = self._encode_prompt(body["input_ids"])
        else:
            ids = self._encode_prompt(body.get("text"))
        params = body.get("sampling_params") or {}
        max_new = int(params.get("max_new_tokens", 16))
        if max_new > 1:
            raise HTTPError(400, "this test server serves /generate for scoring only: max_new_tokens must be 0 or 1")
        with self.model_lock:
            values, _, _, next_id, next_lp = prompt_logprobs(self.scorer, ids)
        out_ids = [next_id] if max_new == 1 else []
        meta: Dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "prompt_tokens": len(ids),
            "completion_tokens": len(out_ids),
            "cached_tokens": 0,
            "finish_reason": {"type": "length", "length": max_new},
        }
        if body.get("return_logprob"):
            with_text = bool(body.get("return_text_in_logprobs"))
            start = body.get("logprob_start_len")
            start = len(ids) - 1 if start is None or start < 0 else int(start)
            if start >= len(ids):
                raise HTTPError(400, f"logprob_start_len ({start}) must be smaller than the input length ({len(ids)})")
            # SGLang's convention: the first returned input position carries no log-prob (the hidden
            # state before it is not kept), later ones are log P(token | everything before it).
            meta["input_token_logprobs"] = [
                [None if pos == start else values[pos], ids[pos], tok.decode([ids[pos]]) if with_text else None]
                for pos in range(start, len(ids))
            ]
            meta["output_token_logprobs"] = [[next_lp, t, tok.decode([t]) if with_text else None] for t in out_ids]
        self.stats.add(prompt_tokens=len(ids), completion_tokens=len(out_ids))
        return {"text": tok.decode(out_ids), "output_ids": out_ids, "meta_info": meta}


class LoopbackHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body leave in one segment, sent at once: no Nagle/delayed-ACK stall per request
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    app: LoopbackApp  # set on the subclass made per server

    def log_message(self, fmt: str, *args: Any) -> None:  # stay quiet; requests are counted in stats
        log.debug("%s " + fmt, self.address_string(), *args)

    def _send_json(self, status: int, obj: Any, headers: Optional[Dict[str, str]] = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, headers: Optional[Dict[str, str]] = None) -> None:
        self._send_json(
            status,
            {
                "error": {
                    "message": message,
                    "type": "invalid_request_error" if status < 500 else "server_error",
                    "code": status,
                }
            },
            headers,
        )

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(2)
        except OSError:
            pass

    def do_GET(self) -> None:
        self._dispatch(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._dispatch(self.rfile.read(length) if length else b"")

    def _dispatch(self, raw: bytes) -> None:
        app = self.app
        path = self.path.split("?", 1)[0]
        app.stats.enter(path, self.headers.get("Authorization"))
        try:
            fault = app.faults.next_fault(path, raw) if (app.faults and self.command == "POST") else None
            if app.latency_s > 0:
                app.stopping.wait(app.latency_s)
            if fault is not None:
                app.stats.fault(fault)
                self._inject(fault)
                return
            routes = {
                ("GET", "/v1/models"): app.models,
                ("POST", "/v1/chat/completions"): app.chat_completions,
                ("POST", "/v1/completions"): app.completions,
                ("POST", "/generate"): app.sglang_generate,
            }
            route = routes.get((self.command, path))
            # like vLLM with --api-key: every /v1 route wants the key as the Bearer token
            if app.api_key and path.startswith("/v1") and self.headers.get("Authorization") != f"Bearer {app.api_key}":
                self._error(401, "Unauthorized")
                return
            if route is None:
                self._error(404, f"no route for {self.command} {path}")
                return
            try:
                body = json.loads(raw) if raw else {}
            except json.JSONDecodeError as exc:
                self._error(400, f"request body is not JSON: {exc}")
                return
            try:
                result = route(body)
            except HTTPError as exc:
                self._error(exc.status, str(exc))
                return
            except Exception as exc:  # a bug or a model error must reach the client as a 500, not a hang
                log.exception("handler failed")
                self._error(500, f"{type(exc).__name__}: {exc}")
                return
            app.stats.add(ok=1)
            self._send_json(200, result)
        finally:
            app.stats.leave()

    def _inject(self, fault: str) -> None:
        app = self.app
        if fault == "429":
            self._error(429, "rate limited (injected)", {"Retry-After": f"{app.faults.retry_after_s:g}"})
        elif fault in ("500", "503"):
            self._error(int(fault), "server error (injected)")
        elif fault == "over_context":
            self._error(400, OVER_CONTEXT_MESSAGE)
        elif fault in ("401", "403", "404"):
            self._error(int(fault), "refused (injected)")
        elif fault == "drop":
            self._drop()
        elif fault == "hang":
            app.stopping.wait(app.faults.hang_s)
            self._drop()
        elif fault == "truncate":
            data = json.dumps({"id": "cmpl-truncated", "choices": [{"index": 0, "text": "x" * 64}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self._drop()
        elif fault == "nonjson":
            data = b"<html><body>502 Bad Gateway</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)


class LoopbackHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


@dataclass
class ServerHandle:
    url: str  # base URL ending in /v1
    stats: ServerStats
    _server: LoopbackHTTPServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _stopping: threading.Event = field(repr=False)

    @property
    def root(self) -> str:
        """The server root (SGLang's /generate lives here, not under /v1)."""
        return self.url[: -len("/v1")]

    def stop(self) -> None:
        self._stopping.set()  # wakes hanging handlers and latency sleeps
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_server(
    generator: Optional[Generator],
    scorer: Optional[Scorer] = None,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: Optional[FaultPlan] = None,
    latency_s: float = 0.0,
    model_id: Optional[str] = None,
    native_prefill: bool = True,
    echo_max_tokens_zero: bool = True,
    token_id_prompts: bool = True,
    api_key: Optional[str] = None,
) -> ServerHandle:
    """Serve `generator` (and `scorer`) on host:port (0 = a free port) from a background thread.
    `native_prefill=False` plays a server without vLLM's continue_final_message: it refuses the
    field with a 400 and continues a trailing assistant message, repeating it in the answer;
    `echo_max_tokens_zero=False` refuses `echo` with `max_tokens=0` (servers that must generate);
    `token_id_prompts=False` refuses prompts given as token ids (servers that only take text);
    `api_key`: every /v1 request without it as its Bearer token gets a 401, as vLLM's --api-key does."""
    stats = ServerStats()
    stopping = threading.Event()
    mid = model_id or getattr(generator, "model_id", None) or getattr(scorer, "model_id", None) or "model"
    app = LoopbackApp(
        generator,
        scorer,
        mid,
        faults,
        latency_s,
        stats,
        stopping,
        native_prefill,
        echo_max_tokens_zero,
        token_id_prompts,
        api_key,
    )
    handler = type("Handler", (LoopbackHandler,), {"app": app})
    server = LoopbackHTTPServer((host, port), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="deepwriter-serve"
    )
    thread.start()
    bound_host, bound_port = server.server_address[:2]
    return ServerHandle(
        url=f"http://{bound_host}:{bound_port}/v1", stats=stats, _server=server, _thread=thread, _stopping=stopping
    )


def load_preset(name: str):
    from omegaconf import OmegaConf

    path = CONF_DIR / "model" / f"{name}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise SystemExit(f"--model: no preset {name!r} (conf/model/*.yaml: {choices})")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(path)))


def main(argv: Optional[List[str]] = None) -> None:
    import os

    parser = argparse.ArgumentParser(
        description="Serve a local model as an OpenAI-compatible endpoint (loopback by default)."
    )
    parser.add_argument("--model", default="tiny-qwen3", help="a preset in conf/model/ (tiny-qwen3, smollm2-135m, ...)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--cache-dir", default=os.environ.get("DEEPWRITER_CACHE", "~/.cache/deepwriter"))
    parser.add_argument("--latency-s", type=float, default=0.0, help="added to every request (benchmarks)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from deepwriter.llm.hf import TransformersGenerator, TransformersScorer, default_device  # torch: this path only

    cfg = load_preset(args.model)
    model, tok = models.load(cfg, args.cache_dir, device=default_device())
    handle = start_server(
        TransformersGenerator(model, tok, model_id=cfg.name),
        TransformersScorer(model, tok, model_id=cfg.name),
        host=args.host,
        port=args.port,
        latency_s=args.latency_s,
        model_id=cfg.name,
        api_key=os.environ.get(KEY_ENV) or None,  # the key a run's fleet hands its servers, as vLLM reads it
    )
    log.info("serving %s at %s (Ctrl-C or SIGTERM to stop)", cfg.name, handle.url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    handle.stop()
    log.info("stopped after %d requests", handle.stats.requests)


if __name__ == "__main__":
    main()

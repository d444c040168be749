"""The OpenAI-compatible HTTP backend: generation through /v1/chat/completions and exact target
log-probs through one of three server protocols, against one or several servers (`vllm serve`,
SGLang, a hosted API).

Scaling and robustness, shared by the generator and the scorer:
- several base URLs, each request sent to the one with the fewest outstanding requests;
- at most `max_concurrency` requests in flight per batch call (an asyncio semaphore);
- retries with exponential backoff and jitter on 429 (Retry-After honoured), 408, 5xx, timeouts,
  dropped connections and truncated, non-JSON or malformed bodies; other 4xx fail at once;
- a sample that still fails comes back marked failed (`Generation.error`, `TokenLogprobs.error`),
  the rest of the batch is unaffected;
- the API key comes from the environment variable named by `api_key_env`, is sent as a Bearer
  token and never appears in a repr or a log line;
- every HTTP call is recorded (URL, status, attempt, latency, token usage) in `.calls`, totals in
  `.usage`.

Structured output: `generate(..., json_schemas=[...])` sends each prompt's JSON schema as OpenAI's
`response_format: {"type": "json_schema", ...}`; vLLM (its structured-output backend), SGLang and
OpenAI decode under it, so the reply is JSON of that schema (a judge uses it for valid verdicts).

Assistant prefill: the final assistant message is sent with vLLM's (also SGLang's)
`continue_final_message=true, add_generation_prompt=false`. A server that rejects those fields with a
400 naming them is asked again without them (and the generator remembers): the trailing assistant
message is then left to the server, which APIs with native prefill continue; if the reply repeats
the prefill, the repeat is cut off.

The sync `generate`/`score` run the async `agenerate`/`ascore` with `asyncio.run`, or in a helper
thread when called from inside a running event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import logging
import os
import random
import ssl
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, TypeVar

import httpx

from deepwriter.config.llm import LOGPROBS_APIS, EndpointConfig
from deepwriter.core.errors import ConfigError
from deepwriter.llm.base import (
    Generation,
    Message,
    Sampling,
    ScoreRequest,
    TokenLogprobs,
    encode_for_scoring,
    scored_token_range,
)

log = logging.getLogger("deepwriter.llm.http")

T = TypeVar("T")
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
_MAX_BACKOFF_S = 60.0


class EndpointError(ConfigError):
    """A mistake in the endpoint configuration or environment (not a transient server failure)."""


class RequestFailed(Exception):
    """One request gave up: a non-retryable answer, or retries exhausted."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


class _BadPayload(Exception):
    """A 200 answer whose body does not have the expected shape (truncated proxies, wrong server):
    retried like a transient failure."""


@dataclass
class CallRecord:
    url: str
    status: Optional[int]  # None: no HTTP answer (timeout, dropped connection)
    attempt: int  # 0 = first try
    latency_s: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: Optional[str] = None


@dataclass
class Usage:
    requests: int = 0  # HTTP calls made, retries included
    retries: int = 0
    failed: int = 0  # logical requests given up on
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0  # summed over HTTP calls


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, also when this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepwriter-http") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def _retry_after(resp: httpx.Response) -> Optional[float]:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else None


def _error_message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        err = body.get("error", body) if isinstance(body, dict) else body
        msg = err.get("message", err) if isinstance(err, dict) else err
        return str(msg)[:500]
    except (json.JSONDecodeError, ValueError):
        return resp.text[:200]


class _Transport:
    """Base URLs, balancing, bounded concurrency, retries, the key and the call records."""

    def __init__(self, endpoint: EndpointConfig, where: str = "endpoint"):
        if not endpoint.base_urls:
            raise EndpointError(f"{where}.base_urls: at least one base URL is required (e.g. http://127.0.0.1:8000/v1)")
        if endpoint.max_concurrency < 1:
            raise EndpointError(f"{where}.max_concurrency: must be >= 1, got {endpoint.max_concurrency}")
        self.endpoint = endpoint
        self.base_urls = [u.rstrip("/") for u in endpoint.base_urls]
        self._headers = {"Content-Type": "application/json"}
        if endpoint.api_key_env:
            key = os.environ.get(endpoint.api_key_env)
            if not key:
                raise EndpointError(
                    f"{where}.api_key_env: the environment variable {endpoint.api_key_env} is not set "
                    f"(set it, or set api_key_env to null for a server without a key)"
                )
            self._headers["Authorization"] = f"Bearer {key}"
        self._outstanding = {u: 0 for u in self.base_urls}
        self._next = 0
        self._lock = threading.Lock()
        self._ssl_context: Optional[ssl.SSLContext] = None
        self.usage = Usage()
        self.calls: deque = deque(maxlen=100_000)

    def __repr__(self) -> str:
        return f"_Transport(base_urls={self.base_urls}, api_key_env={self.endpoint.api_key_env!r})"

    # -- balancing --
    def _acquire_url(self) -> str:
        with self._lock:
            low = min(self._outstanding.values())
            n = len(self.base_urls)
            # ties go round-robin, so an idle pool still spreads the first requests
            for k in range(n):
                url = self.base_urls[(self._next + k) % n]
                if self._outstanding[url] == low:
                    self._next = (self._next + k + 1) % n
                    self._outstanding[url] += 1
                    return url
        raise AssertionError("unreachable")

    def _release_url(self, url: str) -> None:
        with self._lock:
            self._outstanding[url] -= 1

    def _record(self, rec: CallRecord) -> None:
        with self._lock:
            self.calls.append(rec)
            self.usage.requests += 1
            self.usage.retries += rec.attempt > 0
            self.usage.latency_s += rec.latency_s
            self.usage.prompt_tokens += rec.prompt_tokens
            self.usage.completion_tokens += rec.completion_tokens

    def _backoff(self, attempt: int) -> float:
        base = min(_MAX_BACKOFF_S, self.endpoint.backoff_s * (2**attempt))
        return base * (0.5 + 0.5 * random.random())

    def client(self) -> httpx.AsyncClient:
        # One client per event loop (each sync call runs its own loop), but one SSL context for all:
        # loading the CA bundle costs ~0.15 s of CPU, which dominated short judge calls.
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        n = self.endpoint.max_concurrency
        return httpx.AsyncClient(
            verify=self._ssl_context,
            timeout=httpx.Timeout(self.endpoint.timeout_s),
            limits=httpx.Limits(
                max_connections=n * len(self.base_urls), max_keepalive_connections=n * len(self.base_urls)
            ),
            headers=self._headers,
        )

    async def call(
        self,
        client: httpx.AsyncClient,
        sem: asyncio.Semaphore,
        path: str,
        body: dict,
        parse: Callable[[dict], T],
        root: bool = False,
    ) -> T:
        """POST `body` to `path` (under /v1, or under the server root when `root`), retried until
        `parse` accepts the answer. Raises RequestFailed when it gives up."""
        last = "no attempt made"
        for attempt in range(self.endpoint.max_retries + 1):
            delay: Optional[float] = None
            async with sem:
                base = self._acquire_url()
                url = (base[: -len("/v1")] if root and base.endswith("/v1") else base) + path
                t0 = time.perf_counter()
                status: Optional[int] = None
                try:
                    resp = await client.post(url, json=body)
                    status = resp.status_code
                    if status == 200:
                        try:
                            payload = resp.json()
                            result = parse(payload)
                        except (
                            json.JSONDecodeError,
                            UnicodeDecodeError,
                            _BadPayload,
                            KeyError,
                            IndexError,
                            TypeError,
                        ) as exc:
                            raise _BadPayload(
                                f"malformed response body ({type(exc).__name__}: {str(exc)[:120]})"
                            ) from exc
                        usage = payload.get("usage") or payload.get("meta_info") or {}
                        self._record(
                            CallRecord(
                                url,
                                status,
                                attempt,
                                time.perf_counter() - t0,
                                int(usage.get("prompt_tokens") or 0),
                                int(usage.get("completion_tokens") or 0),
                            )
                        )
                        return result
                    last = f"HTTP {status} from {url}: {_error_message(resp)}"
                    self._record(CallRecord(url, status, attempt, time.perf_counter() - t0, error=last))
                    if status not in _RETRY_STATUS:
                        raise RequestFailed(last, status)
                    if status == 429:
                        delay = _retry_after(resp)
                except _BadPayload as exc:
                    last = f"{exc} from {url}"
                    self._record(CallRecord(url, status, attempt, time.perf_counter() - t0, error=last))
                except (httpx.TimeoutException, httpx.TransportError) as exc:
                    last = f"{type(exc).__name__} from {url}: {exc}"
                    self._record(CallRecord(url, None, attempt, time.perf_counter() - t0, error=last))
                finally:
                    self._release_url(base)
            if attempt == self.endpoint.max_retries:
                break
            # the semaphore is released while waiting, so other requests keep the servers busy
            if delay is not None:
                delay += random.uniform(0, min(0.1, 0.1 * delay))
            else:
                delay = self._backoff(attempt)
            log.warning("retry %d/%d in %.2fs after %s", attempt + 1, self.endpoint.max_retries, delay, last)
            await asyncio.sleep(delay)
        raise RequestFailed(f"gave up after {self.endpoint.max_retries + 1} attempts; last: {last}")

    def failed(self) -> None:
        with self._lock:
            self.usage.failed += 1

    async def map(
        self, items: Sequence[Any], one: Callable[[httpx.AsyncClient, asyncio.Semaphore, Any], Awaitable[T]], what: str
    ) -> List[T]:
        """Run `one` over `items` concurrently (bounded), keeping the input order."""
        sem = asyncio.Semaphore(self.endpoint.max_concurrency)
        async with self.client() as client:
            tasks = [asyncio.ensure_future(one(client, sem, it)) for it in items]
            if len(tasks) >= 64:  # a progress bar only for batches big enough to wait on
                from tqdm.auto import tqdm

                with tqdm(total=len(tasks), desc=what, unit="req", leave=False) as bar:
                    for t in tasks:
                        t.add_done_callback(lambda _t: bar.update(1))
                    return list(await asyncio.gather(*tasks))
            return list(await asyncio.gather(*tasks))


class _Client:
    """Shared by the generator and the scorer: usage totals and per-call records of the transport."""

    transport: "_Transport"

    @property
    def usage(self) -> Usage:
        return self.transport.usage

    @property
    def calls(self) -> deque:
        return self.transport.calls


class OpenAIGenerator(_Client):
    """`Generator` over /v1/chat/completions of one or more OpenAI-compatible servers."""

    concurrent_calls = True  # independent requests: schedulers send them one per item, concurrently

    def __init__(self, endpoint: EndpointConfig, model_id: str):
        self.endpoint = endpoint
        self.model_id = model_id
        self.transport = _Transport(endpoint)
        self._native_prefill = True  # cleared when a server refuses continue_final_message

    def __repr__(self) -> str:
        return (
            f"OpenAIGenerator(model_id={self.model_id!r}, base_urls={self.transport.base_urls}, "
            f"api_key_env={self.endpoint.api_key_env!r})"
        )

    def generate(
        self,
        prompts: Sequence[List[Message]],
        sampling: Sampling,
        n: int = 1,
        prefill: Optional[Sequence[str]] = None,
        seeds: Optional[Sequence[int]] = None,
        json_schemas: Optional[Sequence[Optional[dict]]] = None,
    ) -> List[List[Generation]]:
        return run_sync(
            lambda: self.agenerate(prompts, sampling, n=n, prefill=prefill, seeds=seeds, json_schemas=json_schemas)
        )

    async def agenerate(
        self,
        prompts: Sequence[List[Message]],
        sampling: Sampling,
        n: int = 1,
        prefill: Optional[Sequence[str]] = None,
        seeds: Optional[Sequence[int]] = None,
        json_schemas: Optional[Sequence[Optional[dict]]] = None,
    ) -> List[List[Generation]]:
        for name, given in (("prefill", prefill), ("seeds", seeds), ("json_schemas", json_schemas)):
            if given is not None and len(given) != len(prompts):
                raise ValueError(f"{name} has {len(given)} entries for {len(prompts)} prompts")
        items = [
            (
                list(m),
                prefill[i] if prefill is not None else None,
                seeds[i] if seeds is not None else sampling.seed,
                json_schemas[i] if json_schemas is not None else None,
            )
            for i, m in enumerate(prompts)
        ]

        async def one(client, sem, item):
            sampling_i = dataclasses.replace(sampling, seed=item[2])
            return await self._one(client, sem, item[0], item[1], sampling_i, n, item[3])

        return await self.transport.map(items, one, "generate")

    def _body(
        self, messages: List[Message], prefill: Optional[str], sampling: Sampling, n: int, schema: Optional[dict] = None
    ) -> dict:
        body: Dict[str, Any] = {
            "model": self.model_id,
            "messages": messages,
            "n": n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_new_tokens,
        }
        if sampling.seed is not None and self.endpoint.send_seed:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema.get("title", "reply"), "schema": schema, "strict": True},
            }
        if prefill:
            body["messages"] = messages + [{"role": "assistant", "content": prefill}]
            if self._native_prefill:
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
        return body

    async def _one(
        self,
        client,
        sem,
        messages: List[Message],
        prefill: Optional[str],
        sampling: Sampling,
        n: int,
        schema: Optional[dict] = None,
    ) -> List[Generation]:
        def parse_for(body: dict) -> Callable[[dict], List[Generation]]:
            # without continue_final_message a server may answer with the whole assistant turn
            return lambda payload: parse(payload, repeated=bool(prefill) and "continue_final_message" not in body)

        def parse(payload: dict, repeated: bool) -> List[Generation]:
            choices = sorted(payload["choices"], key=lambda c: c.get("index", 0))
            if len(choices) != n:
                raise _BadPayload(f"asked for n={n} choices, got {len(choices)}")
            usage = payload.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            # per-choice token counts are not reported; the total is shared out evenly
            completion_each = int(usage.get("completion_tokens") or 0) // n
            gens = []
            for c in choices:
                text = c["message"].get("content") or ""
                if repeated and text.startswith(prefill):
                    text = text[len(prefill) :]
                reason = c.get("finish_reason") or "stop"
                gens.append(
                    Generation(
                        text=text,
                        prompt_tokens=prompt_tokens,
                        completion_tokens=completion_each,
                        finish_reason="length" if reason == "length" else "stop",
                    )
                )
            return gens

        try:
            body = self._body(messages, prefill, sampling, n, schema)
            try:
                return await self.transport.call(client, sem, "/chat/completions", body, parse_for(body))
            except RequestFailed as exc:
                refused = exc.status in (400, 422) and (
                    "continue_final_message" in str(exc) or "add_generation_prompt" in str(exc)
                )
                if not (refused and "continue_final_message" in body):
                    raise
                if self._native_prefill:
                    log.warning(
                        "server refuses continue_final_message; sending prefills as a plain trailing assistant message"
                    )
                self._native_prefill = False
                body = self._body(messages, prefill, sampling, n, schema)
                return await self.transport.call(client, sem, "/chat/completions", body, parse_for(body))
        except RequestFailed as exc:
            self.transport.failed()
            return [Generation(text="", finish_reason="error", error=str(exc)) for _ in range(n)]


class OpenAIScorer(_Client):
    """`Scorer` over a server's log-prob API. The chat template is rendered here with `tokenizer`
    (the scorer model's own), so the server scores the same text the transformers backend would."""

    concurrent_calls = True

    def __init__(self, endpoint: EndpointConfig, tokenizer, model_id: str):
        if endpoint.logprobs_api not in LOGPROBS_APIS:
            raise EndpointError(f"endpoint.logprobs_api: {endpoint.logprobs_api!r} is not one of {LOGPROBS_APIS}")
        self.endpoint = endpoint
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.transport = _Transport(endpoint)
        self._echo_max_tokens = 0  # raised to 1 when a server refuses max_tokens=0
        self._echo_text = False  # set when a server refuses token-id prompts

    def __repr__(self) -> str:
        return (
            f"OpenAIScorer(model_id={self.model_id!r}, logprobs_api={self.endpoint.logprobs_api!r}, "
            f"base_urls={self.transport.base_urls}, api_key_env={self.endpoint.api_key_env!r})"
        )

    def score(self, requests: Sequence[ScoreRequest]) -> List[TokenLogprobs]:
        return run_sync(lambda: self.ascore(requests))

    async def ascore(self, requests: Sequence[ScoreRequest]) -> List[TokenLogprobs]:
        return await self.transport.map(list(requests), self._one, "score")

    def _context(self, req: ScoreRequest) -> str:
        from deepwriter.llm.hf import render_prompt

        return render_prompt(self.tokenizer, req.messages, req.assistant_prefix)

    async def _one(self, client, sem, req: ScoreRequest) -> TokenLogprobs:
        if not req.target:
            return TokenLogprobs()
        api = self.endpoint.logprobs_api
        context = self._context(req)
        # Context, target and suffix tokenized as one text; the scored tokens are the ones the shared
        # rule picks (llm.base.scored_token_range), as for the in-process scorers.
        ids, first, last = encode_for_scoring(self.tokenizer, context, req.target, req.suffix)
        if last <= first:
            return TokenLogprobs()
        try:
            if api == "completions_echo":
                out = await self._echo(client, sem, context, req, ids, first, last)
            elif api == "vllm_prompt_logprobs":
                out = await self._prompt_logprobs(client, sem, ids[:last], first)
            else:
                out = await self._sglang(client, sem, ids[:last], first)
        except RequestFailed as exc:
            self.transport.failed()
            return TokenLogprobs(error=str(exc))
        out.context_tokens = first
        return out

    async def _echo(self, client, sem, context: str, req: ScoreRequest, ids: List[int], first: int, last: int):
        """Legacy completions with echo. The prompt goes as token ids (the text tokenized here, as one)
        and the scored tokens' log-probs are the echoed entries at their positions. A server that
        refuses token-id prompts is sent the text; the scored tokens are then picked by the same rule
        from the characters of the server's tokens (`text_offset`)."""
        if self._echo_text:
            return await self._echo_text_offsets(client, sem, context, req)
        scored = ids[first:last]

        def parse(payload: dict) -> TokenLogprobs:
            lp = payload["choices"][0]["logprobs"]
            values = lp["token_logprobs"]
            if len(values) < last:  # the echoed prompt, then any generated token
                raise _BadPayload(f"{len(values)} echoed log-probs for {last} prompt tokens")
            out = values[first:last]
            if any(v is None for v in out):
                raise _BadPayload("no log-prob for a target token")
            return TokenLogprobs(tokens=self.tokenizer.convert_ids_to_tokens(scored), logprobs=[float(v) for v in out])

        try:
            return await self._echo_call(client, sem, ids[:last], parse)
        except RequestFailed as exc:
            if not (exc.status in (400, 422) and "prompt" in str(exc)):
                raise
            log.warning("server refuses token-id prompts; sending texts (the server tokenizes them)")
            self._echo_text = True
            return await self._echo_text_offsets(client, sem, context, req)

    async def _echo_call(self, client, sem, prompt: Any, parse: Callable[[dict], TokenLogprobs]) -> TokenLogprobs:
        def body() -> dict:
            return {
                "model": self.model_id,
                "prompt": prompt,
                "max_tokens": self._echo_max_tokens,
                "echo": True,
                "logprobs": 1,
                "temperature": 0.0,
            }

        sent = body()
        try:
            return await self.transport.call(client, sem, "/completions", sent, parse)
        except RequestFailed as exc:
            if not (exc.status in (400, 422) and sent["max_tokens"] == 0 and "max_tokens" in str(exc)):
                raise
            if self._echo_max_tokens == 0:
                log.warning("server refuses max_tokens=0 with echo; asking for one token and ignoring it")
            self._echo_max_tokens = 1
            return await self.transport.call(client, sem, "/completions", body(), parse)

    async def _echo_text_offsets(self, client, sem, context: str, req: ScoreRequest) -> TokenLogprobs:
        text = context + req.target + req.suffix
        start, end = len(context), len(context) + len(req.target)

        def parse(payload: dict) -> TokenLogprobs:
            lp = payload["choices"][0]["logprobs"]
            offsets, tokens, values = lp["text_offset"], lp["tokens"], lp["token_logprobs"]
            if not (len(offsets) == len(tokens) == len(values)):
                raise _BadPayload("logprobs arrays differ in length")
            spans = [
                (off, offsets[i + 1] if i + 1 < len(offsets) else off + len(tokens[i])) for i, off in enumerate(offsets)
            ]
            first, last = scored_token_range(spans, start, end)
            if last <= first:
                raise _BadPayload("no echoed token falls inside the target's characters")
            if any(values[i] is None for i in range(first, last)):
                raise _BadPayload("no log-prob for a target token")
            return TokenLogprobs(tokens=list(tokens[first:last]), logprobs=[float(v) for v in values[first:last]])

        return await self._echo_call(client, sem, text, parse)

    async def _prompt_logprobs(self, client, sem, ids: List[int], first: int) -> TokenLogprobs:
        """vLLM's `prompt_logprobs`: one {token_id: {logprob, rank, decoded_token}} per prompt
        position (None first); the prompt goes as token ids (up to the last scored one), so the
        scored positions are known exactly."""

        def parse(payload: dict) -> TokenLogprobs:
            entries = payload["choices"][0]["prompt_logprobs"]
            if len(entries) != len(ids):
                raise _BadPayload(f"{len(entries)} prompt_logprobs entries for {len(ids)} prompt tokens")
            values = [float(entries[p][str(ids[p])]["logprob"]) for p in range(first, len(ids))]
            return TokenLogprobs(tokens=self.tokenizer.convert_ids_to_tokens(ids[first:]), logprobs=values)

        # The reference's scorer call samples at temperature 1.0, top_p 1 (the log-probs of the prompt are
        # then the model's own whatever a server applies them to); one token, not its 100, is generated.
        body = {
            "model": self.model_id,
            "prompt": ids,
            "max_tokens": 1,
            "prompt_logprobs": 1,
            "temperature": 1.0,
            "top_p": 1.0,
        }
        return await self.transport.call(client, sem, "/completions", body, parse)

    async def _sglang(self, client, sem, ids: List[int], first: int) -> TokenLogprobs:
        """SGLang's /generate. Its first returned input position carries no log-prob, so logging
        starts one token before the scored ones; the context before that stays a cacheable prefix."""
        scored = ids[first:]
        start = max(0, first - 1)

        def parse(payload: dict) -> TokenLogprobs:
            rows = payload["meta_info"]["input_token_logprobs"][-len(scored) :]
            if len(rows) != len(scored) or [int(r[1]) for r in rows] != scored:
                raise _BadPayload("input_token_logprobs do not end with the target's tokens")
            if any(r[0] is None for r in rows):
                raise _BadPayload("a target token has no log-prob")
            return TokenLogprobs(
                tokens=self.tokenizer.convert_ids_to_tokens(scored), logprobs=[float(r[0]) for r in rows]
            )

        body = {
            "input_ids": ids,
            "sampling_params": {"max_new_tokens": 0, "temperature": 0.0},
            "return_logprob": True,
            "logprob_start_len": start,
            "top_logprobs_num": 0,
        }
        return await self.transport.call(client, sem, "/generate", body, parse, root=True)

"""Two fake fleets for bench/synthesis_fleet.py: an OpenAI-compatible generator server and scorer
server on loopback with a fixed number of slots, a latency that grows with the request's tokens,
and a record of when each slot was occupied. No model runs: answers are computed from hashes of the
request, so the same request gets the same answer and the same latency in every run and schedule.

The HTTP plumbing is tests/loopback_server.py's (handler, server, stats); only the two routes the
search uses are replaced. The loopback's own scoring runs a real model and decodes growing prefixes
(quadratic in the prompt), far too slow for thousands of multi-thousand-token requests on a CPU.

Slots: a request waits until one of the server's `slots` is free (waiting is not busy time),
holds it for its service time, then is answered. A chat request with n choices holds one slot: its
n sequences share the prompt's prefill and decode side by side, as vLLM's parallel sampling does.

Latency model (seconds a request holds its slot; tokens counted as below):

    generator  t = (t0 + prompt_tokens / prefill_rate + completion_tokens / decode_rate) * jitter
    scorer     t = (t0 + prompt_tokens / prefill_rate) * jitter
    jitter     = exp(sigma * z - sigma**2 / 2), z ~ N(0, 1) drawn from a hash of the request
                 (lognormal with mean 1; the sampling seed is left out of the hash, so a request's
                 latency does not depend on which schedule seeded it)

The generator counts tokens as characters / 4 (prompt: every message's content; completion: the
longest of the n choices, since they decode in parallel). The scorer counts the token ids it is sent
(the scorer client tokenizes with tiny-qwen3's small byte-level BPE, ~1.8 characters a token here).
Defaults (`GeneratorLatency`, `ScorerLatency`) make a generate call several times as long as a score
request, as a 32B instruct generator against an 8B base scorer.

Fake answers, shaped as the search parses them (deepwriter/synthesis/prompts.py):
- the first call (prefilled `<think>` + an opening phrase) gets a trajectory z0 whose number of
  segments is drawn per pair (`segment_count`: 5% one segment, which the search discards unscored;
  else 2..12, skewed to few), each a paragraph of 250-700 characters;
- a rewrite call gets a short analysis, `</analyze>`, then `<refine>` + a new paragraph + `</refine>`;
  each of the n choices differs;
- the scorer answers vLLM's legacy echo protocol with the prompt sent as token ids (what
  OpenAIScorer sends with `logprobs_api: completions_echo`): every position gets log-prob -s, so a
  trajectory's clipped mean NLL is s = floor + 0.8 * u, u uniform from a hash of the whole prompt and
  floor = 0.1 + 0.5 * v, v uniform from a hash of its last 48 tokens (the end of the pair's answer y,
  so fixed per pair). A pair whose floor is under the 0.25 stopping threshold (30% of pairs) can
  stop early; the others search all their segments, up to max_steps.
"""

from __future__ import annotations

import hashlib
import math
import random
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple

from deepwriter.testing.loopback import (
    HTTPError,
    LoopbackApp,
    LoopbackHandler,
    LoopbackHTTPServer,
    ServerHandle,
    ServerStats,
)

WORDS = (
    "reader argument structure evidence scene opening thesis paragraph tone audience claim detail example "
    "contrast rhythm voice image moment conflict resolution letter essay story report summary outline draft "
    "point section chapter source study figure number season river harbour city village market winter summer "
    "morning evening storm lantern window garden bridge road journey promise memory question answer plan "
    "purpose reason result method budget team project client partner meeting deadline schedule risk cost "
    "benefit policy market growth decline trend pattern signal noise balance weight measure scale range "
    "should could would might must will first then next finally because although while since unless therefore "
    "clear strong brief formal warm quiet sharp careful honest simple concrete vivid steady gentle bold "
    "describe explain compare argue persuade introduce support conclude revise organise emphasise soften "
    "the a an this that each every some many few more less most least of to in on for with about from by"
).split()


def _rng(*parts: Any) -> random.Random:
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def _uniform(data: bytes) -> float:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") / 2.0**64


def paragraph(rng: random.Random, min_chars: int) -> str:
    """Sentences of random words until `min_chars` characters: no blank line inside, little repetition."""
    out: List[str] = []
    size = 0
    while size < min_chars:
        words = rng.choices(WORDS, k=rng.randint(8, 16))
        sentence = " ".join(words).capitalize() + "."
        out.append(sentence)
        size += len(sentence) + 1
    return " ".join(out)


def segment_count(rng: random.Random) -> int:
    """Segments of a pair's z0: 5% one (discarded before scoring), else 2..12, skewed to few."""
    if rng.random() < 0.05:
        return 1
    return 2 + int(11 * rng.random() ** 2)


def fake_trajectory(key: str) -> str:
    """The continuation of z0 after its opening phrase: paragraphs separated by blank lines."""
    rng = _rng("z0", key)
    paras = [paragraph(rng, rng.randint(250, 700)) for _ in range(segment_count(rng))]
    return ", " + "\n\n".join(paras)


def fake_refinement(key: str, choice: int) -> str:
    """A rewrite reply after the `<analyze>` prefill: analysis, then the rewritten segment."""
    rng = _rng("refine", key, choice)
    analysis = paragraph(rng, rng.randint(150, 350))
    return f"{analysis}\n</analyze>\n<refine>\n{paragraph(rng, rng.randint(250, 700))}\n</refine>"


def fake_score(ids: Sequence[int]) -> float:
    """The clipped mean NLL the scorer gives this prompt (see the module docstring)."""
    floor = 0.1 + 0.5 * _uniform(struct.pack(f"<{min(48, len(ids))}i", *ids[-48:]))
    return floor + 0.8 * _uniform(struct.pack(f"<{len(ids)}i", *ids))


def jitter(sigma: float, key: bytes) -> float:
    """A lognormal factor of mean 1, drawn from `key`."""
    z = random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")).gauss(0.0, 1.0)
    return math.exp(sigma * z - sigma * sigma / 2)


@dataclass
class GeneratorLatency:
    t0_s: float = 0.05
    prefill_tokens_per_s: float = 20000.0
    decode_tokens_per_s: float = 1000.0
    sigma: float = 0.25
    scale: float = 1.0  # every latency times this (a quick run scales time down)

    def seconds(self, prompt_tokens: int, completion_tokens: int, key: bytes) -> float:
        base = self.t0_s + prompt_tokens / self.prefill_tokens_per_s + completion_tokens / self.decode_tokens_per_s
        return self.scale * base * jitter(self.sigma, key)


@dataclass
class ScorerLatency:
    t0_s: float = 0.02
    prefill_tokens_per_s: float = 70000.0
    sigma: float = 0.25
    scale: float = 1.0

    def seconds(self, prompt_tokens: int, key: bytes) -> float:
        return self.scale * (self.t0_s + prompt_tokens / self.prefill_tokens_per_s) * jitter(self.sigma, key)


@dataclass
class SlotLedger:
    """The server's slots and when each request held one: (start, end, modelled service seconds)."""

    slots: int
    spans: List[Tuple[float, float, float]] = field(default_factory=list)
    _free: threading.Semaphore = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._free = threading.Semaphore(self.slots)

    def hold(self, service_s: float, stopping: threading.Event) -> None:
        self._free.acquire()
        start = time.perf_counter()
        try:
            stopping.wait(service_s)
        finally:
            end = time.perf_counter()
            self._free.release()
            with self._lock:
                self.spans.append((start, end, service_s))

    def window(self, t0: float, t1: float) -> List[Tuple[float, float, float]]:
        with self._lock:
            return [s for s in self.spans if s[0] < t1 and s[1] > t0]

    def busy_share(self, t0: float, t1: float) -> float:
        """Occupied slot-seconds in [t0, t1] over slots x (t1 - t0)."""
        if t1 <= t0:
            return 0.0
        held = sum(min(e, t1) - max(s, t0) for s, e, _ in self.window(t0, t1))
        return held / (self.slots * (t1 - t0))

    def demand(self, t0: float, t1: float) -> Tuple[int, float]:
        """(requests, modelled slot-seconds) of the requests that started in [t0, t1]."""
        with self._lock:
            mine = [svc for s, _, svc in self.spans if t0 <= s <= t1]
        return len(mine), sum(mine)


class _FleetApp(LoopbackApp):
    """The loopback app with the two routes of the search replaced by fake, slot-bound ones."""

    def __init__(self, role: str, ledger: SlotLedger, latency: Any, model_id: str, stats, stopping):
        super().__init__(None, None, model_id, None, 0.0, stats, stopping)
        self.role, self.ledger, self.latency = role, ledger, latency

    def chat_completions(self, body: dict) -> dict:
        if self.role != "generator":
            raise HTTPError(501, "this fleet server only scores")
        messages = body.get("messages") or []
        if not body.get("continue_final_message") or not messages or messages[-1].get("role") != "assistant":
            raise HTTPError(400, "the fake generator expects an assistant prefill with continue_final_message")
        n = int(body.get("n", 1))
        prefill = messages[-1].get("content", "")
        request_text = "".join(m.get("content") or "" for m in messages)
        user = next(m["content"] for m in messages if m.get("role") == "user")
        if prefill.startswith("<think>"):
            texts = [fake_trajectory(user)] * n  # z0 is asked with n=1; identical if more
        else:
            texts = [fake_refinement(user, j) for j in range(n)]
        prompt_tokens = len(request_text) // 4
        completion_each = [len(t) // 4 for t in texts]
        key = f"{n}\x1f{request_text}".encode()
        self.ledger.hold(self.latency.seconds(prompt_tokens, max(completion_each), key), self.stopping)
        self.stats.add(prompt_tokens=prompt_tokens, completion_tokens=sum(completion_each))
        return {
            "id": f"chatcmpl-fleet-{len(self.ledger.spans)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_id,
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop", "logprobs": None}
                for i, t in enumerate(texts)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": sum(completion_each),
                "total_tokens": prompt_tokens + sum(completion_each),
            },
        }

    def completions(self, body: dict) -> dict:
        if self.role != "scorer":
            raise HTTPError(501, "this fleet server only generates")
        ids = body.get("prompt")
        if not (isinstance(ids, list) and ids and all(isinstance(t, int) for t in ids)):
            raise HTTPError(400, "the fake scorer takes the prompt as a list of token ids")
        if not body.get("echo") or body.get("logprobs") is None:
            raise HTTPError(400, "the fake scorer serves echo=true with logprobs only")
        value = -fake_score(ids)
        self.ledger.hold(self.latency.seconds(len(ids), struct.pack(f"<{len(ids)}i", *ids)), self.stopping)
        self.stats.add(prompt_tokens=len(ids))
        return {
            "id": f"cmpl-fleet-{len(self.ledger.spans)}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model_id,
            # only the log-probs: OpenAIScorer reads nothing else when it sends token ids
            "choices": [
                {
                    "index": 0,
                    "text": "",
                    "finish_reason": "length",
                    "logprobs": {"token_logprobs": [None] + [value] * (len(ids) - 1)},
                }
            ],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": 0, "total_tokens": len(ids)},
        }


@dataclass
class FleetServer:
    role: str  # generator | scorer
    handle: ServerHandle
    ledger: SlotLedger

    @property
    def url(self) -> str:
        return self.handle.url

    def stop(self) -> None:
        self.handle.stop()


def start_fleet_server(role: str, slots: int, latency: Any, model_id: Optional[str] = None) -> FleetServer:
    """A fake `role` fleet (generator | scorer) of `slots` slots on a free loopback port."""
    stats, stopping, ledger = ServerStats(), threading.Event(), SlotLedger(slots)
    app = _FleetApp(role, ledger, latency, model_id or f"fleet-{role}", stats, stopping)
    handler = type("FleetHandler", (LoopbackHandler,), {"app": app})
    server = LoopbackHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name=f"fleet-{role}"
    )
    thread.start()
    host, port = server.server_address[:2]
    handle = ServerHandle(
        url=f"http://{host}:{port}/v1", stats=stats, _server=server, _thread=thread, _stopping=stopping
    )
    return FleetServer(role, handle, ledger)


def make_pairs(
    count: int, seed: int = 0, answer_paragraphs: Tuple[int, int] = (4, 8)
) -> List[Tuple[str, str, str, str]]:
    """(id, x, y, category) writing requests and answers of random words, as long as typical ones."""
    kinds = ["letter", "essay", "story", "report", "speech", "review"]
    pairs = []
    for i in range(count):
        rng = _rng("pair", seed, i)
        kind = rng.choice(kinds)
        x = f"Write a {kind} for the team. " + paragraph(rng, rng.randint(150, 500))
        y = "\n\n".join(paragraph(rng, rng.randint(300, 600)) for _ in range(rng.randint(*answer_paragraphs)))
        pairs.append((f"fleet-{seed}-{i:05d}", x, y, kind))
    return pairs

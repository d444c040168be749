"""Drives many pair searches (`search.search` coroutines) against the generator and scorer.

Two schedules, one engine:
- **continuous** (default): up to `max_in_flight` pairs in flight; a pair's next call is sent as soon
  as its previous one returns and a finished pair's place goes to the next one in the queue, so the
  generator fleet works on some pairs while the scorer fleet works on others.
- **lockstep**: `batch_size` pairs at a time; every round sends all of their pending calls and waits
  for the slowest, and the next batch starts when the whole batch is done (the former behaviour,
  kept as the baseline of bench/synthesis_fleet.py).

How a call reaches a backend depends on the backend, not the schedule. An HTTP backend
(`concurrent_calls = True`: independent requests to a server fleet) gets one call per pair, up to its
endpoint's `max_concurrency` at once. An in-process backend gets dynamic batches: whenever the device
is free, every pending call of one kind (same sampling settings) becomes one batched call; the
generator and scorer of one process share a single device lane, so they never run at once.

Every generate call carries one seed per prompt (the pair's seed, plus the step): a pair's samples do
not depend on which other pairs share its batch or on the order in which calls complete.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from deepwriter.config.synthesis import SynthesisConfig
from deepwriter.llm.base import Generator, ModelCallFailed, Scorer
from deepwriter.synthesis.search import Call, GenerateCall, UnfinishedPair, search

# id, x, y, category (and, optionally, the authors' released thinking to compare with)
PairInput = Tuple[str, ...]
Outcome = Union[Dict[str, Any], UnfinishedPair]


@dataclass
class RoleUsage:
    """One fleet (generator or scorer) as this process saw it."""

    calls: int = 0  # backend calls (a dynamic batch is one)
    requests: int = 0  # prompts or score requests inside those calls
    call_s: float = 0.0  # sum of call durations: divided by wall time, the mean calls in flight
    prompt_tokens: int = 0
    completion_tokens: int = 0
    busy_done_s: float = 0.0  # closed stretches of time with at least one call in flight
    active: int = 0  # calls in flight now
    busy_since: float = 0.0  # start of the open stretch, when active > 0

    def start(self, t: float) -> None:
        if self.active == 0:
            self.busy_since = t
        self.active += 1

    def end(self, t0: float, t1: float) -> None:
        self.active -= 1
        self.calls += 1
        self.call_s += t1 - t0
        if self.active == 0:
            self.busy_done_s += t1 - self.busy_since

    def busy_s(self, now: float) -> float:
        """Time with at least one call of this fleet in flight, up to `now`."""
        return self.busy_done_s + (now - self.busy_since if self.active else 0.0)


@dataclass
class EndpointUsage:
    """Utilisation and throughput of a synthesis run's generator and scorer endpoints, for the stage
    summary, W&B and bench/synthesis_fleet.py. Busy share: the share of the wall time with at least one
    call of the role in flight."""

    generator: RoleUsage = field(default_factory=RoleUsage)
    scorer: RoleUsage = field(default_factory=RoleUsage)
    pairs: int = 0
    t_start: Optional[float] = None
    t_end: Optional[float] = None

    @property
    def wall_s(self) -> float:
        if self.t_start is None:
            return 0.0
        return (self.t_end if self.t_end is not None else time.perf_counter()) - self.t_start

    def as_dict(self) -> Dict[str, float]:
        wall = self.wall_s
        now = self.t_start + wall if self.t_start is not None else 0.0
        out: Dict[str, float] = {"wall_s": wall, "pairs": self.pairs}
        out["pairs_per_min"] = 60 * self.pairs / wall if wall else 0.0
        for name in ("generator", "scorer"):
            role: RoleUsage = getattr(self, name)
            out[f"{name}_calls"] = role.calls
            out[f"{name}_requests"] = role.requests
            out[f"{name}_busy_share"] = role.busy_s(now) / wall if wall else 0.0
            out[f"{name}_mean_in_flight"] = role.call_s / wall if wall else 0.0
            out[f"{name}_tokens_per_s"] = (role.prompt_tokens + role.completion_tokens) / wall if wall else 0.0
        return out


@dataclass
class _Flight:
    """One pair in flight: its search coroutine, the call it waits on, the time charged to it."""

    index: int
    pair: PairInput
    co: Any = None
    call: Optional[Call] = None
    timings: Dict[str, float] = field(default_factory=lambda: {"generate_s": 0.0, "score_s": 0.0, "total_s": 0.0})


def _executor(backend: Any, fallback: int) -> Optional[ThreadPoolExecutor]:
    """A thread per allowed request for a concurrent (HTTP) backend; None for an in-process one,
    whose batches go to the shared device lane."""
    if not getattr(backend, "concurrent_calls", False):
        return None
    endpoint = getattr(backend, "endpoint", None)
    return ThreadPoolExecutor(max_workers=max(1, getattr(endpoint, "max_concurrency", fallback)))


def run_pairs(
    pairs: Iterable[PairInput],
    generator: Generator,
    scorer: Scorer,
    cfg: SynthesisConfig,
    usage: Optional[EndpointUsage] = None,
) -> Iterator[Outcome]:
    """Search every pair and yield each record as its search ends (an UnfinishedPair for a pair a
    failed model call stopped). `pairs` is read lazily: a caller that stops yielding pairs (a
    failing fleet) stops new work without losing what is in flight."""
    return _Scheduler(pairs, generator, scorer, cfg, usage if usage is not None else EndpointUsage()).run()


class _Scheduler:
    """One run of the pool: the pairs in flight (each a suspended search), the calls waiting to be sent
    and the calls under way, advanced as answers come back."""

    def __init__(self, pairs: Iterable[PairInput], generator: Generator, scorer: Scorer, cfg: SynthesisConfig, usage):
        self.cfg, self.usage = cfg, usage
        self.model_ids = {"generator": generator.model_id, "scorer": scorer.model_id}
        self.lockstep = cfg.schedule == "lockstep"
        self.pool = cfg.batch_size if self.lockstep else cfg.max_in_flight
        self.backends = {"generator": generator, "scorer": scorer}
        self.device = ThreadPoolExecutor(max_workers=1)  # in-process backends share one device: one batch at a time
        self.http = {role: _executor(b, self.pool) for role, b in self.backends.items()}
        self.queue = iter(enumerate(pairs))
        self.flights: Dict[int, _Flight] = {}
        self.waiting: Deque[int] = deque()  # flights whose call is not sent yet, oldest first
        self.futures: Dict[Future, Tuple[str, List[_Flight]]] = {}
        self.lock = threading.Lock()
        self.exhausted = False

    def run(self) -> Iterator[Outcome]:
        self.usage.t_start, self.usage.t_end = time.perf_counter(), None
        try:
            yield from self.admit()
            self.dispatch()
            while self.futures:
                done, _ = wait(list(self.futures), return_when=FIRST_COMPLETED)
                for future in done:
                    role, members = self.futures.pop(future)
                    answers, seconds = future.result()
                    for f, answer in zip(members, answers):
                        f.timings["generate_s" if role == "generator" else "score_s"] += seconds / len(members)
                        yield from self.finished(f, self.advance(f, answer))
                yield from self.admit()
                self.dispatch()
        finally:
            self.usage.t_end = time.perf_counter()
            for f in self.flights.values():
                f.co.close()
            for executor in [e for e in self.http.values() if e is not None] + [self.device]:
                executor.shutdown(wait=True, cancel_futures=True)

    def advance(self, f: _Flight, answer: Any) -> Optional[Outcome]:
        """Send the answer into the pair's search: the pair's next call is queued, or its outcome returned."""
        try:
            f.call = f.co.send(answer)
        except StopIteration as done:
            return done.value
        except ModelCallFailed as exc:
            return UnfinishedPair(f.pair[0], str(exc))
        self.waiting.append(f.index)
        return None

    def finished(self, f: _Flight, outcome: Optional[Outcome]) -> Iterator[Outcome]:
        if outcome is not None:
            del self.flights[f.index]
            self.usage.pairs += 1
            yield outcome

    def admit(self) -> Iterator[Outcome]:
        """Fill the pool from the queue (lockstep: only once the whole batch is done)."""
        if self.lockstep and self.flights:
            return
        while not self.exhausted and len(self.flights) < self.pool:
            try:
                i, pair = next(self.queue)
            except StopIteration:
                self.exhausted = True
                return
            f = self.flights[i] = _Flight(i, pair)
            released = pair[4] if len(pair) > 4 else None
            f.co = search(pair[0], pair[1], pair[2], self.cfg, self.model_ids, pair[3], f.timings, released)
            yield from self.finished(f, self.advance(f, None))

    def submit(self, role: str, members: List[_Flight]) -> None:
        for f in members:
            self.waiting.remove(f.index)
        executor = self.http[role] or self.device
        calls = [f.call for f in members]
        self.futures[executor.submit(_call, self.backends[role], calls, self.usage, role, self.lock)] = (role, members)

    def dispatch(self) -> None:
        """HTTP calls go out at once (the executor's threads bound them); in-process calls wait for
        the device and then go as one batch per kind. Lockstep sends a round only when every pair
        of the batch waits, and then sends all of it."""
        if self.lockstep and (self.futures or len(self.waiting) < len(self.flights)):
            return
        device_busy = any(self.http[role] is None for role, _ in self.futures.values())
        local = []  # pending calls of in-process backends, oldest first
        for i in list(self.waiting):
            role = _role(self.flights[i].call)
            if self.http[role] is None:
                local.append(self.flights[i])
            else:
                self.submit(role, [self.flights[i]])
        while local and (self.lockstep or not device_busy):
            kind = _kind(local[0].call)  # the oldest pending call picks the kind; all of that kind join it
            self.submit(_role(local[0].call), [f for f in local if _kind(f.call) == kind])
            local = [f for f in local if _kind(f.call) != kind]
            device_busy = True


def _role(call: Optional[Call]) -> str:
    return "generator" if isinstance(call, GenerateCall) else "scorer"


def _kind(call: Call) -> tuple:
    """Calls that can share one batched backend call."""
    if isinstance(call, GenerateCall):
        s = call.sampling
        return ("generate", s.temperature, s.top_p, s.max_new_tokens, s.stop, call.n)
    return ("score",)


def _call(backend: Any, calls: Sequence[Call], usage: EndpointUsage, role: str, lock: threading.Lock):
    """One backend call for `calls` (one, or a dynamic batch); returns each call's answer and the
    call's duration, and books the call in `usage`."""
    role_usage: RoleUsage = getattr(usage, role)
    t0 = time.perf_counter()
    with lock:
        role_usage.start(t0)
    try:
        if role == "generator":
            first = calls[0]
            prefill = [c.prefill for c in calls] if any(c.prefill for c in calls) else None
            answers = backend.generate(
                [c.messages for c in calls],
                first.sampling,
                n=first.n,
                prefill=prefill,
                seeds=[c.sampling.seed for c in calls],
            )
            requests = len(calls)
            tokens = [(g.prompt_tokens, g.completion_tokens) for out in answers for g in out]
        else:
            flat = [r for c in calls for r in c.requests]
            scored = backend.score(flat)
            answers, at = [], 0
            for c in calls:
                answers.append(scored[at : at + len(c.requests)])
                at += len(c.requests)
            requests = len(flat)
            tokens = [(lp.context_tokens, len(lp)) for lp in scored]
    finally:
        t1 = time.perf_counter()
        with lock:
            role_usage.end(t0, t1)
    with lock:
        role_usage.requests += requests
        role_usage.prompt_tokens += sum(p for p, _ in tokens)
        role_usage.completion_tokens += sum(c for _, c in tokens)
    return answers, t1 - t0


def synthesize(
    pair_id: str,
    x: str,
    y: str,
    generator: Generator,
    scorer: Scorer,
    cfg: SynthesisConfig,
    category: Optional[str] = None,
) -> Outcome:
    """Run the search for one pair and return its record (an UnfinishedPair when a call failed)."""
    return next(iter(run_pairs([(pair_id, x, y, category)], generator, scorer, cfg)))

"""The LLM judge: any Generator (an OpenAI-compatible endpoint or an in-process transformers model)
turns judge tasks into allowed scores.

- HTTP judges write free JSON: it is extracted and repaired, checked against each slot's allowed
  values, and asked again (bounded) when unparseable, incomplete or out of range. Pending calls are
  sent together (the HTTP client keeps at most `max_concurrency` in flight, an optional rate limit
  paces them). Retries of failed calls are the endpoint's alone (`endpoint.max_retries`): a call that
  still fails leaves its task unfinished (no verdict), for a re-run; the judge adds no retries.
- A transformers judge (a 135M model cannot be trusted to write JSON) is decoded under a constraint
  (deepwriter.llm.constrained): every judgment parses and is in range.
- An HTTP judge with `eval.judge.constrained_http` is sent each task's JSON schema (verdict_schema: every
  slot, only its allowed values), which the server decodes under (vLLM's structured output): its
  replies parse and are in range too. Scores only, no reasons; off, the judge writes free JSON as the
  benchmarks' reference judges do.
- Each task carries its benchmark's judge sampling (temperature, top_p, seed, reply budget: the
  benchmark's reference values unless configured); a task without one uses `eval.judge`'s. Calls are
  batched per sampling, so every call is sent with its own task's parameters.
- Every reply is cached on disk (a record log, deepwriter.core.records) under a key of judge model,
  prompt, sampling parameters and sample index: a re-run makes no calls and a killed run resumes. A judge reply that
  stays unusable after its re-asks is a counted failure (the model's answer); a failed call is never
  a verdict, nor replaced by a default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from deepwriter.config.eval import JudgeConfig
from deepwriter.config.llm import Backend
from deepwriter.core.records import RecordLog
from deepwriter.eval.benchmarks.base import JudgeOutcome, JudgeTask, Slot, canonical_parser
from deepwriter.eval.replies import read_reply
from deepwriter.llm import make_generator
from deepwriter.llm.base import Generation, Sampling
from deepwriter.llm.openai_http.transport import EndpointRefused

log = logging.getLogger("deepwriter.eval.judge")


# --- cache -------------------------------------------------------------------------------------


def cache_key(
    model_id: str, messages: List[Dict[str, str]], sampling: Sampling, sample: int, mode: str, judge_sample: int = 0
) -> str:
    # judge sample 0 keeps the key it had before eval.judge_samples existed: old caches stay valid
    extra = {"judge_sample": judge_sample} if judge_sample else {}
    blob = json.dumps(
        {
            **extra,
            "model": model_id,
            "messages": messages,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_new_tokens": sampling.max_new_tokens,
            "seed": sampling.seed,
            "sample": sample,
            "mode": mode,
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def verdict_schema(slots: List[Slot]) -> Dict[str, Any]:
    """The JSON schema of a verdict on `slots`: an object with every slot, each one of its allowed values."""
    return {
        "title": "verdict",
        "type": "object",
        "properties": {s.name: {"enum": [json.loads(label) for label in s.labels]} for s in slots},
        "required": [s.name for s in slots],
        "additionalProperties": False,
    }


def _sampling_group(sampling: Sampling) -> tuple:
    """Tasks sent in one backend call must share every sampling parameter."""
    return (sampling.temperature, sampling.top_p, sampling.max_new_tokens, sampling.seed, tuple(sampling.stop))


def _grouped(indices: List[int], sampling_of: Callable[[int], Sampling]) -> List[List[int]]:
    """`indices` split by sampling, each group in its original order, groups in order of first appearance."""
    groups: Dict[tuple, List[int]] = {}
    for i in indices:
        groups.setdefault(_sampling_group(sampling_of(i)), []).append(i)
    return list(groups.values())


class RateLimiter:
    """At most `rps` call starts per second across threads (0: no limit)."""

    def __init__(self, rps: float):
        self.interval = 1.0 / rps if rps > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


# --- the judge -----------------------------------------------------------------------------------


@dataclass
class JudgeStats:
    tasks: int = 0
    ok: int = 0
    failed: int = 0
    unfinished: int = 0  # tasks with no verdict: the call failed after the endpoint's retries, or was not sent
    calls: int = 0  # calls that reached the judge model
    cache_hits: int = 0
    call_errors: int = 0  # calls that failed after the endpoint's retries
    reasks: int = 0
    bad_replies: int = 0  # unparseable, incomplete or out of range
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    call_seconds: float = 0.0
    failures: Dict[str, int] = field(default_factory=dict)  # reason kind -> count

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class _FreeState:
    task: JudgeTask
    messages: List[Dict[str, str]]
    out: JudgeOutcome
    ask: int = 0  # the sample index: 0 for the first ask, then one per re-ask


@dataclass
class _Run:
    """One run() of a judge: its open reply cache and the budget of items left unfinished."""

    cache: RecordLog
    stop_after: Optional[int]  # see Judge.run
    unfinished_items: set = field(default_factory=set)  # item ids with an unfinished task

    def stopped(self) -> bool:
        return self.stop_after is not None and len(self.unfinished_items) > self.stop_after


class Judge:
    """Runs judge tasks through a lazily created backend (a cache-only re-run never loads a model).

    `backend_factory()` returns a Generator (free JSON; with `json_schema`, an HTTP generator that takes
    `json_schemas`) or a ConstrainedJudgeBackend."""

    def __init__(
        self,
        backend_factory: Callable[[], Any],
        model_id: str,
        cfg: JudgeConfig,
        cache_dir: Path,
        constrained: bool,
        json_schema: bool = False,
    ):
        self._factory = backend_factory
        self._backend = None
        self._backend_lock = threading.Lock()
        self.model_id = model_id
        self.cfg = cfg
        self.constrained = constrained
        # the way this judge asks, chosen once: scores decoded under a constraint (a local model), or
        # free JSON (with a JSON schema per task where the server decodes under one), re-asked when unusable
        self._judge_tasks = self._run_constrained if constrained else self._run_free
        self.json_schema = json_schema and not constrained
        # every reply, by cache key: a record log (deepwriter.core.records), opened by each run()
        self.cache_path = Path(cache_dir) / "calls.jsonl"
        self.stats = JudgeStats()
        self._lock = threading.Lock()
        self._limiter = RateLimiter(cfg.rate_limit_rps)
        price = cfg.prices.get(model_id)
        self._price = (price.input_per_mtok, price.output_per_mtok) if price else (0.0, 0.0)
        self.sampling = Sampling(
            temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed
        )

    @property
    def backend(self):
        with self._backend_lock:
            if self._backend is None:
                self._backend = self._factory()
            return self._backend

    def release(self) -> None:
        """Drop the backend (a local model leaves memory); a later call makes it again."""
        with self._backend_lock:
            self._backend = None

    def _count(self, **inc: Any) -> None:
        with self._lock:
            for k, v in inc.items():
                setattr(self.stats, k, getattr(self.stats, k) + v)

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self._price[0] + completion_tokens * self._price[1]) / 1e6

    def sampling_for(self, task: JudgeTask) -> Sampling:
        """The task's own sampling (its benchmark's judge settings), else eval.judge's."""
        return task.sampling if task.sampling is not None else self.sampling

    def _record(
        self, run: "_Run", key: str, gen: Generation, latency: float, sample: int, mode: str, sampling: Sampling
    ) -> dict:
        rec = {
            "key": key,
            "model": self.model_id,
            "mode": mode,
            "sample": sample,
            "text": gen.text,
            "prompt_tokens": gen.prompt_tokens,
            "completion_tokens": gen.completion_tokens,
            "finish_reason": gen.finish_reason,
            "latency_s": round(latency, 4),
            "cost_usd": self._cost(gen.prompt_tokens, gen.completion_tokens),
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_new_tokens": sampling.max_new_tokens,
            "seed": sampling.seed,
            "time": time.time(),
        }
        if run.cache.get(key) is None:  # two tasks with the same prompt share one reply
            run.cache.append(rec)
        self._count(
            calls=1,
            prompt_tokens=gen.prompt_tokens,
            completion_tokens=gen.completion_tokens,
            cost_usd=rec["cost_usd"],
            call_seconds=latency,
        )
        return rec

    # -- free JSON (HTTP or unconstrained) ---------------------------------------------------------
    # Work goes in rounds: every task's next ask is looked up in the cache, the misses are sent to the
    # backend in chunks (an HTTP backend keeps `max_concurrency` requests in flight over one client),
    # replies are checked, and tasks with a bad reply go to the next round to be asked again. A failed
    # call ends its task unfinished; once more tasks are unfinished than run() allows, the rest are not
    # sent (a judge that is down would cost each its full retries).

    def _unfinished(self, run: "_Run", st: "_FreeState", error: str) -> None:
        st.out.unfinished, st.out.ok, st.out.error = True, False, error
        self._count(unfinished=1)
        with self._lock:
            run.unfinished_items.add(st.task.item_id)

    def _absorb(self, st: "_FreeState", rec: dict) -> bool:
        """Take one reply into a task's outcome; True when the task is finished."""
        out, task = st.out, st.task
        out.prompt_tokens += rec["prompt_tokens"]
        out.completion_tokens += rec["completion_tokens"]
        out.latency_s += rec["latency_s"]
        out.cost_usd += rec["cost_usd"]
        out.raw = rec["text"]
        try:
            out.values, out.reasons = self._read(task, rec["text"])
            out.ok, out.error = True, None
            return True
        except ValueError as exc:
            self._count(bad_replies=1)
            out.error = f"bad reply: {exc}"
            if st.ask >= self.cfg.max_reasks:
                return True
            st.messages = st.messages + [
                {"role": "assistant", "content": rec["text"]},
                {
                    "role": "user",
                    "content": f"Your reply could not be used ({exc}). Reply again with "
                    f"{task.format_hint or 'the JSON asked for'}, and nothing else.",
                },
            ]
            st.ask += 1
            out.reasks += 1
            self._count(reasks=1)
            return False

    def _read(self, task: JudgeTask, text: str):
        """(values, reasons) of a reply, or ValueError. Decoded under verdict_schema, the reply has the
        canonical shape and scores only; from a server that ignored the schema, it is read as free JSON."""
        if self.json_schema:
            try:
                values, _ = read_reply(task, text, parser=canonical_parser(task.slots))
                return values, {s.name: "JSON-schema judge: score only" for s in task.slots}
            except ValueError:
                pass
        return read_reply(task, text)

    def _mode(self, task: JudgeTask) -> str:
        if not self.json_schema:
            return "free"
        return "json_schema:" + json.dumps(verdict_schema(task.slots), sort_keys=True)

    def _key(self, st: "_FreeState") -> str:
        task = st.task
        return cache_key(
            self.model_id, st.messages, self.sampling_for(task), st.ask, self._mode(task), task.judge_sample
        )

    def _run_free(self, run: "_Run", tasks: List[JudgeTask], progress) -> List[JudgeOutcome]:
        states = [_FreeState(t, list(t.messages), JudgeOutcome(t.item_id, t.key, ok=False)) for t in tasks]
        active = list(range(len(states)))
        while active:
            misses = []
            for i in active:
                st = states[i]
                while True:  # follow cached replies (and cached re-asks) as far as they go
                    hit = run.cache.get(self._key(st))
                    if hit is None:
                        misses.append(i)
                        break
                    self._count(cache_hits=1)
                    st.out.cached += 1
                    if self._absorb(st, hit):
                        progress.update(1)
                        break
            next_active = []
            if self.cfg.rate_limit_rps > 0:
                chunk = max(1, int(self.cfg.rate_limit_rps))
            else:  # bounded, so a judge that is down is noticed after one chunk, not after every task
                chunk = max(1, 4 * self.cfg.max_concurrency)
            batches = [
                group[start : start + chunk]
                for group in _grouped(misses, lambda i: self.sampling_for(states[i].task))
                for start in range(0, len(group), chunk)
            ]
            for batch in batches:
                sampling = self.sampling_for(states[batch[0]].task)
                if run.stopped():
                    for i in batch:
                        self._unfinished(
                            run, states[i], f"not sent: the judge failed on {len(run.unfinished_items)} items"
                        )
                        progress.update(1)
                    continue
                for _ in batch:
                    self._limiter.wait()
                t0 = time.monotonic()
                try:
                    messages = [states[i].messages for i in batch]
                    if self.json_schema:
                        schemas = [verdict_schema(states[i].task.slots) for i in batch]
                        replies = self.backend.generate(messages, sampling, n=1, json_schemas=schemas)
                    else:
                        replies = self.backend.generate(messages, sampling, n=1)
                    gens = [g[0] for g in replies]
                except EndpointRefused:  # a wrong key, model name or URL: every call would get the same answer
                    raise
                except Exception as exc:  # e.g. a prompt too long for a local judge: its tasks, unfinished
                    gens = [Generation(text="", finish_reason="error", error=f"{type(exc).__name__}: {exc}")] * len(
                        batch
                    )
                latency = (time.monotonic() - t0) / len(batch)  # wall time shared by the batch's calls
                for i, gen in zip(batch, gens):
                    st = states[i]
                    if gen.finish_reason == "error" or gen.error:
                        self._count(call_errors=1)
                        self._unfinished(run, st, f"judge call failed: {gen.error or 'the backend reported an error'}")
                        progress.update(1)
                        continue
                    st.out.calls += 1
                    rec = self._record(run, self._key(st), gen, latency, st.ask, self._mode(st.task), sampling)
                    if self._absorb(st, rec):
                        progress.update(1)
                    else:
                        next_active.append(i)
            active = next_active
        return [st.out for st in states]

    # -- constrained (transformers) --------------------------------------------------------------------

    def _run_constrained(self, run: "_Run", tasks: List[JudgeTask], progress) -> List[JudgeOutcome]:
        outcomes: List[Optional[JudgeOutcome]] = [None] * len(tasks)
        pending = []
        for i, task in enumerate(tasks):
            key = cache_key(
                self.model_id,
                task.messages,
                self.sampling_for(task),
                0,
                "constrained:" + ",".join(f"{s.name}={'/'.join(s.labels)}" for s in task.slots),
                task.judge_sample,
            )
            hit = run.cache.get(key)
            if hit is not None:
                self._count(cache_hits=1)
                outcomes[i] = self._constrained_outcome(task, hit, cached=True)
                progress.update(1)
            else:
                pending.append((i, key))
        step = max(1, getattr(self.backend, "batch_size", 1)) if pending else 1
        by_position = dict(pending)
        chunks = [
            [(i, by_position[i]) for i in group[start : start + step]]
            for group in _grouped([i for i, _ in pending], lambda i: self.sampling_for(tasks[i]))
            for start in range(0, len(group), step)
        ]
        for chunk in chunks:
            sampling = self.sampling_for(tasks[chunk[0][0]])
            t0 = time.monotonic()
            try:
                gens = self.backend.judge(
                    [tasks[i].messages for i, _ in chunk], [tasks[i].slots for i, _ in chunk], sampling
                )
            except Exception as exc:  # a broken local model: its tasks are unfinished, visibly
                gens = [Generation(text="", finish_reason="error", error=f"{type(exc).__name__}: {exc}")] * len(chunk)
            latency = (time.monotonic() - t0) / len(chunk)
            for (i, key), gen in zip(chunk, gens):
                if gen.finish_reason == "error" or gen.error:  # not cached, no verdict: a re-run tries again
                    self._count(call_errors=1, unfinished=1)
                    outcomes[i] = JudgeOutcome(
                        tasks[i].item_id,
                        tasks[i].key,
                        ok=False,
                        unfinished=True,
                        error=f"local judge failed: {gen.error}",
                    )
                    continue
                rec = self._record(run, key, gen, latency, 0, "constrained", sampling)
                outcomes[i] = self._constrained_outcome(tasks[i], rec, cached=False)
            progress.update(len(chunk))
        return outcomes  # type: ignore[return-value]

    def _constrained_outcome(self, task: JudgeTask, rec: dict, cached: bool) -> JudgeOutcome:
        out = JudgeOutcome(
            task.item_id,
            task.key,
            ok=False,
            raw=rec["text"],
            calls=0 if cached else 1,
            cached=1 if cached else 0,
            prompt_tokens=rec["prompt_tokens"],
            completion_tokens=rec["completion_tokens"],
            latency_s=rec["latency_s"],
            cost_usd=rec["cost_usd"],
        )
        try:
            out.values, _ = read_reply(task, rec["text"], parser=canonical_parser(task.slots))
            out.reasons = {s.name: "constrained local judge: score only" for s in task.slots}
            out.ok = True
        except ValueError as exc:  # cannot happen with a correct constraint; counted if it does
            self._count(bad_replies=1)
            out.error = f"bad constrained reply: {exc}"
        return out

    # -- entry point -------------------------------------------------------------------------------------

    def run(
        self, tasks: List[JudgeTask], show_progress: bool = True, stop_after: Optional[int] = None
    ) -> List[JudgeOutcome]:
        """One outcome per task. `stop_after`: once more items (distinct task item ids) than this have an
        unfinished task (a failed call), the tasks not yet sent are left unfinished instead of sent."""
        with RecordLog(self.cache_path, key="key") as cache:
            return self._run(_Run(cache, stop_after), tasks, show_progress)

    def _run(self, run: "_Run", tasks: List[JudgeTask], show_progress: bool) -> List[JudgeOutcome]:
        from tqdm.auto import tqdm

        with tqdm(total=len(tasks), desc=f"judge {self.model_id}", unit="task", disable=not show_progress) as progress:
            outcomes = self._judge_tasks(run, tasks, progress)
        for o in outcomes:
            self._count(tasks=1, ok=int(o.ok), failed=int(not o.ok and not o.unfinished))
            if not o.ok and not o.unfinished:
                kind = (o.error or "unknown").split(":")[0]
                with self._lock:
                    self.stats.failures[kind] = self.stats.failures.get(kind, 0) + 1
        return outcomes


def make_judge(cfg, cache_dir: Path, model=None) -> Judge:
    """The judge of a run's config: models.judge (or `model`, a panel's other judge) through its backend,
    constrained when it is a local transformers model and `eval.judge.constrained_local` is on, or an
    HTTP one and `eval.judge.constrained_http` is on (a JSON schema per task)."""

    mcfg = model or cfg.models.judge
    local = mcfg.backend == Backend.transformers
    constrained = local and cfg.eval.judge.constrained_local
    model_id = mcfg.name if local else (mcfg.endpoint.model or mcfg.path)

    def factory():
        use = mcfg
        if not local:  # the eval's own bound on parallel judge requests, within the endpoint's
            limit = max(1, min(mcfg.endpoint.max_concurrency, cfg.eval.judge.max_concurrency))
            use = dataclasses.replace(mcfg, endpoint=dataclasses.replace(mcfg.endpoint, max_concurrency=limit))
        gen = make_generator(use, cfg.paths.cache_dir, batch_size=cfg.eval.batch_size)
        if constrained:
            from deepwriter.llm.constrained import ConstrainedJudgeBackend  # torch: only for a local judge

            return ConstrainedJudgeBackend(gen.model, gen.tokenizer, model_id, batch_size=cfg.eval.batch_size)
        return gen

    json_schema = not local and cfg.eval.judge.constrained_http
    return Judge(factory, model_id, cfg.eval.judge, cache_dir, constrained=constrained, json_schema=json_schema)

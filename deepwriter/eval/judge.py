"""The LLM judge: any Generator (an OpenAI-compatible endpoint or an in-process transformers model)
turns judge tasks into allowed scores.

- HTTP judges write free JSON: it is extracted and repaired, checked against each slot's allowed
  values, and asked again (bounded) when unparseable, incomplete or out of range. Pending calls are
  sent together (the HTTP client keeps at most `max_concurrency` in flight, an optional rate limit
  paces them). Retries of failed calls are the endpoint's alone (`endpoint.max_retries`): a call that
  still fails leaves its task unfinished (no verdict), for a re-run; the judge adds no retries.
- A transformers judge (a 135M model cannot be trusted to write JSON) is decoded under a constraint:
  the JSON is forced token by token and each score may only be one of the allowed values, so every
  judgment parses and is in range.
- Every reply is cached on disk (append-only JSONL) under a key of judge model, prompt, sampling
  parameters and sample index: a re-run makes no calls and a killed run resumes. A judge reply that
  stays unusable after its re-asks is a counted failure (the model's answer); a failed call is never
  a verdict, nor replaced by a default.
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import logging
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from deepwriter.eval.benchmarks.base import JudgeOutcome, JudgeTask, Slot, canonical_parser
from deepwriter.eval.config import JudgeConfig
from deepwriter.llm.base import Generation, Sampling

log = logging.getLogger("deepwriter.eval.judge")


# --- JSON extraction ---------------------------------------------------------------------------

_FENCE = re.compile(r"```(?:json|python)?", re.IGNORECASE)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def extract_json(text: str) -> Any:
    """The first JSON object or list in a reply, repairing what judges commonly get wrong (code
    fences, text around it, trailing commas, Python literals with single quotes)."""
    cleaned = _FENCE.sub("", text).strip()
    candidates = [cleaned]
    starts = [i for i in (cleaned.find("{"), cleaned.find("[")) if i >= 0]
    if starts:
        start = min(starts)
        close = "}" if cleaned[start] == "{" else "]"
        end = cleaned.rfind(close)
        if end > start:
            candidates.append(cleaned[start:end + 1])
    for cand in candidates:
        for attempt in (cand, _TRAILING_COMMA.sub(r"\1", cand)):
            try:
                return json.loads(attempt)
            except json.JSONDecodeError:
                pass
            try:
                value = ast.literal_eval(attempt)
                if isinstance(value, (dict, list)):
                    return value
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                pass
    raise ValueError("no JSON object or list found in the reply")


def read_reply(task: JudgeTask, text: str, parser=None) -> Tuple[Dict[str, float], Dict[str, str]]:
    """Allowed values for every slot of the task, or ValueError naming what is wrong."""
    obj = extract_json(text)
    raw, reasons = (parser or task.parser or canonical_parser(task.slots))(obj)
    values, problems = {}, []
    for slot in task.slots:
        if slot.name not in raw or raw[slot.name] is None:
            problems.append(f"{slot.name}: missing")
            continue
        try:
            values[slot.name] = slot.coerce(raw[slot.name])
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ValueError("; ".join(problems))
    return values, reasons


# --- cache -------------------------------------------------------------------------------------

class JudgeCache:
    """Replies by key, appended to one JSONL file as they arrive (a torn last line is skipped)."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / "calls.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.entries: Dict[str, dict] = {}
        self.broken_lines = 0
        if self.path.exists():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                        self.entries[rec["key"]] = rec
                    except (json.JSONDecodeError, KeyError, TypeError):
                        self.broken_lines += 1
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb+") as f:  # a torn last line must not swallow the next entry
                f.seek(-1, 2)
                if f.read(1) != b"\n":
                    f.write(b"\n")
        if self.broken_lines:
            log.warning("judge cache %s: skipped %d unreadable line(s) (a killed run)", self.path, self.broken_lines)

    def get(self, key: str) -> Optional[dict]:
        return self.entries.get(key)

    def put(self, rec: dict) -> None:
        line = json.dumps(rec, ensure_ascii=False) + "\n"
        with self._lock:
            self.entries[rec["key"]] = rec
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)


def cache_key(model_id: str, messages: List[Dict[str, str]], sampling: Sampling, sample: int, mode: str) -> str:
    blob = json.dumps({"model": model_id, "messages": messages, "temperature": sampling.temperature,
                       "top_p": sampling.top_p, "max_new_tokens": sampling.max_new_tokens, "seed": sampling.seed,
                       "sample": sample, "mode": mode}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


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


# --- constrained local judge ---------------------------------------------------------------------

class ConstrainedJudgeBackend:
    """Decodes `{"slot": value, ...}` with the JSON around the values forced and each value restricted
    to its slot's allowed labels: greedy (temperature 0) or sampled among the allowed tokens only."""

    def __init__(self, model, tokenizer, model_id: str, batch_size: int = 4):
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.batch_size = max(1, batch_size)

    def _ids(self, text: str) -> List[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def template(self, slots: Sequence[Slot]) -> List[Tuple[str, Any]]:
        segments: List[Tuple[str, Any]] = []
        for i, slot in enumerate(slots):
            lead = "{" if i == 0 else " "
            segments.append(("fixed", self._ids(f'{lead}"{slot.name}": ')))
            # The separator goes into each choice so no choice is a prefix of another ("1," vs "10,").
            sep = "}" if i == len(slots) - 1 else ","
            segments.append(("choice", [self._ids(label + sep) for label in slot.labels]))
        return segments

    @staticmethod
    def allowed_next(segments: List[Tuple[str, Any]], generated: List[int], eos: int) -> List[int]:
        pos = 0
        for kind, data in segments:
            rest = generated[pos:]
            if kind == "fixed":
                if len(rest) < len(data):
                    return [data[len(rest)]]
                pos += len(data)
                continue
            matched, nxt = None, set()
            for ids in data:
                if rest[:len(ids)] == ids and len(rest) >= len(ids):
                    matched = ids
                    break
                if len(rest) < len(ids) and ids[:len(rest)] == rest:
                    nxt.add(ids[len(rest)])
            if matched is None:
                return sorted(nxt) if nxt else [eos]
            pos += len(matched)
        return [eos]

    def judge(self, prompts: Sequence[List[Dict[str, str]]], slot_lists: Sequence[Sequence[Slot]],
              sampling: Sampling) -> List[Generation]:
        import torch

        rng = torch.Generator().manual_seed(sampling.seed if sampling.seed is not None else 0)
        out = []
        for m, s in zip(prompts, slot_lists):
            try:
                out.append(self._one(m, s, sampling, rng))
            except Exception as exc:  # one bad task (e.g. too long for the judge) fails alone, visibly
                out.append(Generation(text="", finish_reason="error", error=f"{type(exc).__name__}: {exc}"))
        return out

    def _one(self, messages, slots: Sequence[Slot], sampling: Sampling, rng) -> Generation:
        """Forced JSON text is fed in one forward pass with the token before it, so the model runs
        once per score token rather than once per output token."""
        import torch

        from deepwriter.llm.hf import render_prompt

        tok = self.tokenizer
        eos = tok.eos_token_id
        segments = self.template(slots)
        device = self.model.device
        prompt_ids = tok(render_prompt(tok, messages), add_special_tokens=False)["input_ids"]
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit and len(prompt_ids) + 64 > limit:
            raise ValueError(f"the judge prompt has {len(prompt_ids)} tokens; the judge model takes {limit}")
        generated: List[int] = []
        feed = list(prompt_ids)
        cache = None
        with torch.inference_mode():
            while True:
                allowed = self.allowed_next(segments, generated, eos)
                if len(allowed) == 1:  # forced: no need to ask the model
                    if allowed[0] == eos:
                        break
                    generated.append(allowed[0])
                    feed.append(allowed[0])
                    continue
                out = self.model(input_ids=torch.tensor([feed], device=device), past_key_values=cache, use_cache=True,
                                 logits_to_keep=1)
                cache = out.past_key_values
                logits = out.logits[0, -1].float()
                choice_logits = logits[torch.tensor(allowed, device=device)]
                if sampling.temperature > 0:
                    probs = torch.softmax(choice_logits / sampling.temperature, dim=-1).cpu()
                    pick = allowed[int(torch.multinomial(probs, 1, generator=rng))]
                else:
                    pick = allowed[int(torch.argmax(choice_logits))]
                generated.append(pick)
                feed = [pick]
        return Generation(text=tok.decode(generated, skip_special_tokens=True), prompt_tokens=len(prompt_ids),
                          completion_tokens=len(generated))


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


class Judge:
    """Runs judge tasks through a lazily created backend (a cache-only re-run never loads a model).

    `backend_factory()` returns a Generator (free JSON) or a ConstrainedJudgeBackend."""

    def __init__(self, backend_factory: Callable[[], Any], model_id: str, cfg: JudgeConfig, cache_dir: Path,
                 constrained: bool):
        self._factory = backend_factory
        self._backend = None
        self._backend_lock = threading.Lock()
        self.model_id = model_id
        self.cfg = cfg
        self.constrained = constrained
        self.cache = JudgeCache(cache_dir)
        self.stats = JudgeStats()
        self._lock = threading.Lock()
        self._limiter = RateLimiter(cfg.rate_limit_rps)
        self._stop_after: Optional[int] = None  # see run()
        self._unfinished_items: set = set()  # item ids with an unfinished task, for stop_after
        price = cfg.prices.get(model_id)
        self._price = (price.input_per_mtok, price.output_per_mtok) if price else (0.0, 0.0)
        self.sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)

    @property
    def backend(self):
        with self._backend_lock:
            if self._backend is None:
                self._backend = self._factory()
            return self._backend

    def _count(self, **inc: Any) -> None:
        with self._lock:
            for k, v in inc.items():
                setattr(self.stats, k, getattr(self.stats, k) + v)

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self._price[0] + completion_tokens * self._price[1]) / 1e6

    def _record(self, key: str, gen: Generation, latency: float, sample: int, mode: str) -> dict:
        rec = {"key": key, "model": self.model_id, "mode": mode, "sample": sample, "text": gen.text,
               "prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
               "finish_reason": gen.finish_reason, "latency_s": round(latency, 4),
               "cost_usd": self._cost(gen.prompt_tokens, gen.completion_tokens),
               "temperature": self.sampling.temperature, "seed": self.sampling.seed, "time": time.time()}
        self.cache.put(rec)
        self._count(calls=1, prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                    cost_usd=rec["cost_usd"], call_seconds=latency)
        return rec

    # -- free JSON (HTTP or unconstrained) ---------------------------------------------------------
    # Work goes in rounds: every task's next ask is looked up in the cache, the misses are sent to the
    # backend in chunks (an HTTP backend keeps `max_concurrency` requests in flight over one client),
    # replies are checked, and tasks with a bad reply go to the next round to be asked again. A failed
    # call ends its task unfinished; once more tasks are unfinished than run() allows, the rest are not
    # sent (a judge that is down would cost each its full retries).

    def _unfinished(self, st: "_FreeState", error: str) -> None:
        st.out.unfinished, st.out.ok, st.out.error = True, False, error
        self._count(unfinished=1)
        with self._lock:
            self._unfinished_items.add(st.task.item_id)

    def _stopped(self) -> bool:
        return self._stop_after is not None and len(self._unfinished_items) > self._stop_after

    def _absorb(self, st: "_FreeState", rec: dict) -> bool:
        """Take one reply into a task's outcome; True when the task is finished."""
        out, task = st.out, st.task
        out.prompt_tokens += rec["prompt_tokens"]
        out.completion_tokens += rec["completion_tokens"]
        out.latency_s += rec["latency_s"]
        out.cost_usd += rec["cost_usd"]
        out.raw = rec["text"]
        try:
            out.values, out.reasons = read_reply(task, rec["text"])
            out.ok, out.error = True, None
            return True
        except ValueError as exc:
            self._count(bad_replies=1)
            out.error = f"bad reply: {exc}"
            if st.ask >= self.cfg.max_reasks:
                return True
            st.messages = st.messages + [
                {"role": "assistant", "content": rec["text"]},
                {"role": "user", "content": f"Your reply could not be used ({exc}). Reply again with "
                                            f"{task.format_hint or 'the JSON asked for'}, and nothing else."},
            ]
            st.ask += 1
            out.reasks += 1
            self._count(reasks=1)
            return False

    def _key(self, st: "_FreeState") -> str:
        return cache_key(self.model_id, st.messages, self.sampling, st.ask, "free")

    def _run_free(self, tasks: List[JudgeTask], progress) -> List[JudgeOutcome]:
        states = [_FreeState(t, list(t.messages), JudgeOutcome(t.item_id, t.key, ok=False)) for t in tasks]
        active = list(range(len(states)))
        while active:
            misses = []
            for i in active:
                st = states[i]
                while True:  # follow cached replies (and cached re-asks) as far as they go
                    hit = self.cache.get(self._key(st))
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
            for start in range(0, len(misses), chunk):
                batch = misses[start:start + chunk]
                if self._stopped():
                    for i in batch:
                        self._unfinished(states[i], f"not sent: the judge failed on {len(self._unfinished_items)} items")
                        progress.update(1)
                    continue
                for _ in batch:
                    self._limiter.wait()
                t0 = time.monotonic()
                try:
                    gens = [g[0] for g in self.backend.generate([states[i].messages for i in batch], self.sampling, n=1)]
                except Exception as exc:  # e.g. a prompt too long for a local judge: its tasks, unfinished
                    gens = [Generation(text="", finish_reason="error", error=f"{type(exc).__name__}: {exc}")] * len(batch)
                latency = (time.monotonic() - t0) / len(batch)  # wall time shared by the batch's calls
                for i, gen in zip(batch, gens):
                    st = states[i]
                    if gen.finish_reason == "error" or gen.error:
                        self._count(call_errors=1)
                        self._unfinished(st, f"judge call failed: {gen.error or 'the backend reported an error'}")
                        progress.update(1)
                        continue
                    st.out.calls += 1
                    rec = self._record(self._key(st), gen, latency, st.ask, "free")
                    if self._absorb(st, rec):
                        progress.update(1)
                    else:
                        next_active.append(i)
            active = next_active
        return [st.out for st in states]

    # -- constrained (transformers) --------------------------------------------------------------------

    def _run_constrained(self, tasks: List[JudgeTask], progress) -> List[JudgeOutcome]:
        outcomes: List[Optional[JudgeOutcome]] = [None] * len(tasks)
        pending = []
        for i, task in enumerate(tasks):
            key = cache_key(self.model_id, task.messages, self.sampling, 0, "constrained:" + ",".join(
                f"{s.name}={'/'.join(s.labels)}" for s in task.slots))
            hit = self.cache.get(key)
            if hit is not None:
                self._count(cache_hits=1)
                outcomes[i] = self._constrained_outcome(task, hit, cached=True)
                progress.update(1)
            else:
                pending.append((i, key))
        step = max(1, getattr(self.backend, "batch_size", 1)) if pending else 1
        for start in range(0, len(pending), step):
            chunk = pending[start:start + step]
            t0 = time.monotonic()
            try:
                gens = self.backend.judge([tasks[i].messages for i, _ in chunk], [tasks[i].slots for i, _ in chunk], self.sampling)
            except Exception as exc:  # a broken local model: its tasks are unfinished, visibly
                gens = [Generation(text="", finish_reason="error", error=f"{type(exc).__name__}: {exc}")] * len(chunk)
            latency = (time.monotonic() - t0) / len(chunk)
            for (i, key), gen in zip(chunk, gens):
                if gen.finish_reason == "error" or gen.error:  # not cached, no verdict: a re-run tries again
                    self._count(call_errors=1, unfinished=1)
                    outcomes[i] = JudgeOutcome(tasks[i].item_id, tasks[i].key, ok=False, unfinished=True,
                                               error=f"local judge failed: {gen.error}")
                    continue
                rec = self._record(key, gen, latency, 0, "constrained")
                outcomes[i] = self._constrained_outcome(tasks[i], rec, cached=False)
            progress.update(len(chunk))
        return outcomes  # type: ignore[return-value]

    def _constrained_outcome(self, task: JudgeTask, rec: dict, cached: bool) -> JudgeOutcome:
        out = JudgeOutcome(task.item_id, task.key, ok=False, raw=rec["text"], calls=0 if cached else 1,
                           cached=1 if cached else 0, prompt_tokens=rec["prompt_tokens"],
                           completion_tokens=rec["completion_tokens"], latency_s=rec["latency_s"], cost_usd=rec["cost_usd"])
        try:
            out.values, _ = read_reply(task, rec["text"], parser=canonical_parser(task.slots))
            out.reasons = {s.name: "constrained local judge: score only" for s in task.slots}
            out.ok = True
        except ValueError as exc:  # cannot happen with a correct constraint; counted if it does
            self._count(bad_replies=1)
            out.error = f"bad constrained reply: {exc}"
        return out

    # -- entry point -------------------------------------------------------------------------------------

    def run(self, tasks: List[JudgeTask], show_progress: bool = True, stop_after: Optional[int] = None) -> List[JudgeOutcome]:
        """One outcome per task. `stop_after`: once more items (distinct task item ids) than this have an
        unfinished task (a failed call), the tasks not yet sent are left unfinished instead of sent."""
        from tqdm.auto import tqdm

        self._stop_after = stop_after
        self._unfinished_items = set()
        with tqdm(total=len(tasks), desc=f"judge {self.model_id}", unit="task", disable=not show_progress) as progress:
            if self.constrained:
                outcomes = self._run_constrained(tasks, progress)
            else:
                outcomes = self._run_free(tasks, progress)
        for o in outcomes:
            self._count(tasks=1, ok=int(o.ok), failed=int(not o.ok and not o.unfinished))
            if not o.ok and not o.unfinished:
                kind = (o.error or "unknown").split(":")[0]
                with self._lock:
                    self.stats.failures[kind] = self.stats.failures.get(kind, 0) + 1
        return outcomes


def make_judge(cfg, cache_dir: Path) -> Judge:
    """The judge of a run's config: models.judge through its backend, constrained when it is a local
    transformers model and `eval.judge.constrained_local` is on."""
    from deepwriter.llm.config import Backend

    mcfg = cfg.models.judge
    local = mcfg.backend == Backend.transformers
    constrained = local and cfg.eval.judge.constrained_local
    model_id = mcfg.name if local else (mcfg.endpoint.model or mcfg.path)

    def factory():
        from deepwriter.llm import make_generator

        use = mcfg
        if not local:  # the eval's own bound on parallel judge requests, within the endpoint's
            limit = max(1, min(mcfg.endpoint.max_concurrency, cfg.eval.judge.max_concurrency))
            use = dataclasses.replace(mcfg, endpoint=dataclasses.replace(mcfg.endpoint, max_concurrency=limit))
        gen = make_generator(use, cfg.paths.cache_dir, batch_size=cfg.eval.batch_size)
        if constrained:
            return ConstrainedJudgeBackend(gen.model, gen.tokenizer, model_id, batch_size=cfg.eval.batch_size)
        return gen

    return Judge(factory, model_id, cfg.eval.judge, cache_dir, constrained=constrained)

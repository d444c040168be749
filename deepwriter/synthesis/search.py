"""The REER search for one (x, y) pair: generate a first trajectory z0, then rewrite it segment by
segment, keeping a rewrite only when it makes y more likely under the scorer.

Pure algorithm over the Generator/Scorer protocols of deepwriter.llm.base: no backend is imported.
Quality of z is the clipped mean NLL of y given (x, z) (lower is better); the K candidates of one
step go to the scorer in a single call so a backend can share their common prefix.

The search for one pair is written as a coroutine (`search`) that yields the model calls it needs
(`GenerateCall`, `ScoreCall`) and receives their results; deepwriter/synthesis/schedule.py drives
many of them against the backends.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union
from typing import Generator as Coroutine

from deepwriter.config.synthesis import SamplingConfig, SynthesisConfig
from deepwriter.llm.base import (
    Message,
    ModelCallFailed,
    Sampling,
    ScoreRequest,
    TokenLogprobs,
    clipped_mean_nll,
)
from deepwriter.synthesis import filters, prompts, segments


def pair_seed(seed: int, pair_id: str) -> int:
    """A per-pair seed: the same config seed and pair id give the same samples on the same backend."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{pair_id}".encode()).digest()[:4], "big") & 0x7FFFFFFF


def opening(pair_id: str, x: str, cfg: SynthesisConfig) -> Tuple[int, str, str]:
    """The pair's seed, its prompts' language and the opening phrase of its z0."""
    seed = pair_seed(cfg.seed, pair_id)
    lang = prompts.language(x, cfg.language)
    return seed, lang, prompts.pick_trigger(lang, random.Random(seed))


def _sampling(s: SamplingConfig, seed: int, stop: tuple) -> Sampling:
    return Sampling(temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens, seed=seed, stop=stop)


@dataclass
class GenerateCall:
    messages: List[Message]
    sampling: Sampling
    n: int
    prefill: str


@dataclass
class ScoreCall:
    requests: List[ScoreRequest]


Call = Union[GenerateCall, ScoreCall]


@dataclass
class UnfinishedPair:
    """A search stopped by a failed model call (ModelCallFailed): no record, no verdict. The stage
    leaves the pair unfinished for a re-run."""

    id: str
    error: str


class Rejected(Exception):
    """A model call refused for length (Generation/TokenLogprobs.rejected): a deterministic answer,
    the same on every retry and re-run, so the search records it as the reference does instead of
    leaving the pair unfinished."""


class TrajectoryScorer:
    """Builds the scorer requests for a pair and turns log-probs into scores."""

    def __init__(self, x: str, y: str, cfg: SynthesisConfig, lang: Optional[str] = None):
        self.cfg = cfg
        lang = lang or prompts.language(x, cfg.language)
        # The measuring instrument is the same in every recipe: the no-reflection ablation changes
        # what the generator is asked for, not the instruction the scorer reads.
        self.messages = prompts.scorer_messages(x, lang, reflection=True, system=cfg.system_prompt)
        head, rest = prompts.split_answer(y, cfg.min_segment_chars) if cfg.score_answer_from_second_segment else ("", y)
        self.answer_head, self.target = head, rest
        self.target_tokens = 0
        self.requests = 0  # trajectories scored
        self.scored_tokens = 0  # context + target tokens the scorer read for them (0: not counted)

    def request(self, z: str) -> ScoreRequest:
        return ScoreRequest(
            self.messages, prompts.scorer_prefix(z, self.answer_head), self.target, prompts.scorer_suffix()
        )

    def scores(self, out: Sequence[TokenLogprobs]) -> List[Union[float, Rejected]]:
        """Scores of one scorer call's results; a request refused for length gives a Rejected in its
        place. A request the backend could not score otherwise raises ModelCallFailed: the pair is
        unfinished, not judged on fewer candidates."""
        scores: List[Union[float, Rejected]] = []
        for lp in out:
            if getattr(lp, "rejected", None):
                scores.append(Rejected(lp.rejected))
                continue
            if getattr(lp, "error", None) or not lp.logprobs:
                raise ModelCallFailed(f"scorer: {lp.error or 'no log-probs returned for the target'}")
            self.target_tokens = len(lp)
            self.scored_tokens += lp.context_tokens + len(lp)
            self.requests += 1
            scores.append(clipped_mean_nll(lp, self.cfg.clip_min, self.cfg.clip_max))
        return scores


def search(
    pair_id: str,
    x: str,
    y: str,
    cfg: SynthesisConfig,
    model_ids: Dict[str, str],
    category: Optional[str] = None,
    timings: Optional[Dict[str, float]] = None,
    released: Optional[str] = None,
) -> Coroutine[Call, Any, Dict[str, Any]]:
    """The search for one pair as a coroutine: yields GenerateCall (answered with that prompt's list
    of Generations) and ScoreCall (answered with one TokenLogprobs per request); returns the record.
    The driver charges model time to `timings` (generate_s, score_s), which the record holds.
    `released`: the authors' thinking for this pair (DeepWriting-20K); once our search is done it is
    scored under the same scorer, so the record compares ours with theirs (`record["released"]`)."""
    t_start = time.perf_counter()
    seed, lang, trigger = opening(pair_id, x, cfg)
    record = _new_record(pair_id, x, y, category, cfg, model_ids, timings, seed)
    if not y.strip():
        return _finish(record, cfg, t_start, filters.EMPTY_ANSWER)
    record["language"] = lang
    judge = TrajectoryScorer(x, y, cfg, lang)
    record["trigger"] = trigger
    try:
        first = (
            yield from _generate(
                record,
                prompts.initial_messages(x, y, lang, cfg.reflection, cfg.system_prompt),
                _sampling(cfg.initial, seed, (prompts.THINK_CLOSE,)),
                1,
                prompts.initial_prefill(trigger),
            )
        )[0]
    except Rejected as why:  # the reference gets no rollout and writes the pair without a trajectory
        record["rejected"] = str(why)
        return _finish(record, cfg, t_start, filters.OVER_GENERATOR_CONTEXT)
    # The scorer reads z0 as written (the reference scores the raw thinking, usually with a line break
    # before </think>); the trajectory kept is that text stripped.
    z0_scored = prompts.parse_initial(trigger, first.text)
    if z0_scored is not None and not cfg.reflection:
        z0_scored = prompts.strip_reflection(z0_scored, lang) or None
    z0 = z0_scored.strip() if z0_scored is not None else None
    record["z0"] = z0
    if z0_scored is not None and z0_scored != z0:
        record["z0_scored"] = z0_scored
    if z0 is None:
        record["raw_initial"] = first.text
    # A backend that does not count tokens (0) is measured in words instead.
    generated = first.completion_tokens or len((z0 or "").split())
    record["z0_generated_tokens"] = generated
    segs = segments.split(z0, cfg.min_segment_chars) if z0 else []
    record["num_segments"] = len(segs)
    # The reference's own discards come before any scoring: an unusable z0 costs no scorer call.
    early = filters.before_search(z0, generated, len(segs), cfg.filters)
    if early is not None:
        return _finish(record, cfg, t_start, early)

    best = (yield from _score(judge, [z0_scored]))[0]
    if isinstance(best, Rejected):  # z0 cannot be scored whole: no search can be measured
        record["rejected"] = str(best)
        return _finish(record, cfg, t_start, filters.OVER_SCORER_CONTEXT)
    record["scores"].append(best)
    if cfg.search:
        step = 0
        for i in range(len(segs)):
            if best < cfg.stop_threshold or step >= cfg.max_steps:
                break
            step += 1
            best = yield from _refine_segment(record, judge, segs, i, step, best, seed, lang, cfg)
            record["scores"].append(best)

    # Once the search has visited a segment, the trajectory is its segments rejoined with blank lines,
    # accepted edits or not, as the reference writes its `corrected_thinking`; a search that never
    # started (z0 under the threshold, or no search) keeps z0 as written.
    z_final = segments.join(segs) if record["steps"] else z0
    record["z_final"] = z_final
    if released:
        theirs = (yield from _score(judge, [released]))[0]
        record["released"] = {
            "score": None if isinstance(theirs, Rejected) else theirs,
            "rejected": str(theirs) if isinstance(theirs, Rejected) else None,
            "words": len(released.split()),
        }
    record["tokens"]["target"] = judge.target_tokens
    record["tokens"]["scorer_requests"] = judge.requests
    record["tokens"]["scorer"] = judge.scored_tokens
    return _finish(record, cfg, t_start, filters.after_search(z_final, cfg.filters, lang))


def _new_record(pair_id, x, y, category, cfg: SynthesisConfig, model_ids, timings, seed: int) -> Dict[str, Any]:
    return {
        "id": pair_id,
        "x": x,
        "y": y,
        "category": category,
        "z0": None,
        "z_final": None,
        "scores": [],
        "perplexities": [],
        "steps": [],
        "accepted_edits": [],
        # generator prompt/completion; y's scored target; the scorer's requests and tokens (context + target)
        "tokens": {"prompt": 0, "completion": 0, "target": 0, "scorer_requests": 0, "scorer": 0},
        "timings": timings if timings is not None else {"generate_s": 0.0, "score_s": 0.0, "total_s": 0.0},
        "models": dict(model_ids),
        "seed": seed,
        "search": cfg.search,
        "reflection": cfg.reflection,
        "verdict": {"kept": False, "reason": None},
    }


def _generate(record: Dict[str, Any], messages, sampling: Sampling, n: int, prefill: Optional[str]):
    """One generator call (n samples of one prompt), its tokens counted in the record."""
    out = yield GenerateCall(messages, sampling, n, prefill)
    refused = [g.rejected for g in out if getattr(g, "rejected", None)]
    if refused:
        raise Rejected(refused[0])
    failed = [g.error for g in out if g.error or g.finish_reason == "error"]
    if failed:  # one failed sample fails the call: a search on fewer candidates is another search
        raise ModelCallFailed(f"generator: {failed[0] or 'the backend reported an error'}")
    for g in out:
        record["tokens"]["prompt"] += g.prompt_tokens
        record["tokens"]["completion"] += g.completion_tokens
    return out


def _score(judge: "TrajectoryScorer", trajectories: List[str]):
    """One scorer call: the clipped mean NLL of y given each trajectory."""
    out = yield ScoreCall([judge.request(z) for z in trajectories])
    return judge.scores(out)


def _refine_segment(
    record: Dict[str, Any],
    judge: "TrajectoryScorer",
    segs: List[str],
    i: int,
    step: int,
    best: float,
    seed: int,
    lang: str,
    cfg: SynthesisConfig,
):
    """One search step: K rewrites of segment i spliced in and scored; the best replaces the segment
    (in `segs`) only when it strictly lowers the score. Returns the score after the step."""
    x, y = record["x"], record["y"]
    messages = prompts.refine_messages(
        x,
        y,
        segments.join(segs[:i]),
        segs[i],
        segments.join(segs[i + 1 :]),
        lang,
        cfg.reflection,
        cfg.refine_analysis,
        cfg.system_prompt,
    )
    prefill = prompts.refine_prefill(lang, cfg.refine_analysis)
    sampling = _sampling(cfg.refine, seed + step, prompts.refine_stop(cfg.refine_analysis))
    try:
        outs = yield from _generate(record, messages, sampling, cfg.num_candidates, prefill)
    except Rejected as why:
        # The reference's refine call then returns no rollout: no candidate, the segment stays as it is.
        record["steps"].append({"step": step, "segment": i, "candidates": [], "accepted": False, "rejected": str(why)})
        return best
    candidates = []
    for g in outs:
        # an empty rewrite is a candidate, as in the reference; a reply without <refine> is not
        text = prompts.parse_refinement(prefill + g.text)
        if text and not cfg.reflection:
            text = prompts.strip_reflection(text, lang)
        candidates.append({"text": text, "score": None, "raw": g.text if text is None else None})
    valid = [c for c in candidates if c["text"] is not None]
    if valid:
        trials = [segments.compose(segs[:i], c["text"], segs[i + 1 :]) for c in valid]
        for c, value in zip(valid, (yield from _score(judge, trials))):
            if isinstance(value, Rejected):  # as the reference's unscorable candidate: never the winner
                c["rejected"] = str(value)
            else:
                c["score"] = value
    valid = [c for c in valid if c["score"] is not None]
    winner = min(valid, key=lambda c: c["score"]) if valid else None
    accepted = winner is not None and winner["score"] < best  # strictly lower: ties keep the current trajectory
    if accepted:
        record["accepted_edits"].append(
            {
                "step": step,
                "segment": i,
                "before": segs[i],
                "after": winner["text"],
                "score_before": best,
                "score_after": winner["score"],
            }
        )
        segs[i] = winner["text"]
        best = winner["score"]
    record["steps"].append({"step": step, "segment": i, "candidates": candidates, "accepted": accepted})
    return best


def _finish(record: Dict[str, Any], cfg: SynthesisConfig, t_start: float, reason: Optional[str]) -> Dict[str, Any]:
    record["verdict"] = {"kept": reason is None, "reason": reason}
    record["perplexities"] = [math.exp(s) for s in record["scores"]]
    record["timings"]["total_s"] = time.perf_counter() - t_start
    return record

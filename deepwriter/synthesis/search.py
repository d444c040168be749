"""The REER search for one (x, y) pair: generate a first trajectory z0, then rewrite it segment by
segment, keeping a rewrite only when it makes y more likely under the scorer.

Pure algorithm over the Generator/Scorer protocols of deepwriter.llm.base: no backend is imported.
Quality of z is the clipped mean NLL of y given (x, z) (lower is better); the K candidates of one
step go to the scorer in a single call so a backend can share their common prefix.
"""
from __future__ import annotations

import hashlib
import math
import random
import time
from typing import Any, Dict, List, Optional

from deepwriter.llm.base import Generator, Sampling, Scorer, ScoreRequest, clipped_mean_nll
from deepwriter.synthesis import filters, prompts, segments
from deepwriter.synthesis.config import SamplingConfig, SynthesisConfig


def pair_seed(seed: int, pair_id: str) -> int:
    """A per-pair seed: the same config seed and pair id give the same samples on the same backend."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{pair_id}".encode()).digest()[:4], "big") & 0x7FFFFFFF


def _sampling(s: SamplingConfig, seed: int, stop: tuple) -> Sampling:
    return Sampling(temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens, seed=seed, stop=stop)


class TrajectoryScorer:
    """Builds the scorer requests for a pair and turns log-probs into scores."""

    def __init__(self, scorer: Scorer, x: str, y: str, cfg: SynthesisConfig):
        self.scorer = scorer
        self.cfg = cfg
        self.messages = prompts.scorer_messages(x)
        head, rest = prompts.split_answer(y) if cfg.score_answer_from_second_segment else ("", y)
        self.answer_head, self.target = head, rest
        self.target_tokens = 0
        self.seconds = 0.0
        self.calls = 0

    def request(self, z: str) -> ScoreRequest:
        return ScoreRequest(self.messages, prompts.scorer_prefix(z, self.answer_head), self.target)

    def score(self, trajectories: List[str]) -> List[Optional[float]]:
        """One scorer call for all trajectories; None for a request the backend could not score."""
        t0 = time.perf_counter()
        out = self.scorer.score([self.request(z) for z in trajectories])
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        scores: List[Optional[float]] = []
        for lp in out:
            if getattr(lp, "error", None) or not lp.logprobs:
                scores.append(None)
                continue
            self.target_tokens = len(lp)
            scores.append(clipped_mean_nll(lp, self.cfg.clip_min, self.cfg.clip_max))
        return scores


def synthesize(
    pair_id: str, x: str, y: str, generator: Generator, scorer: Scorer, cfg: SynthesisConfig,
    category: Optional[str] = None,
) -> Dict[str, Any]:
    """Run the search for one pair and return its record (see store.py for how it is written)."""
    t_start = time.perf_counter()
    seed = pair_seed(cfg.seed, pair_id)
    rng = random.Random(seed)
    record: Dict[str, Any] = {
        "id": pair_id, "x": x, "y": y, "category": category, "z0": None, "z_final": None,
        "scores": [], "perplexities": [], "steps": [], "accepted_edits": [],
        "tokens": {"prompt": 0, "completion": 0, "target": 0},
        "timings": {"generate_s": 0.0, "score_s": 0.0, "total_s": 0.0},
        "models": {"generator": generator.model_id, "scorer": scorer.model_id},
        "seed": seed, "search": cfg.search, "reflection": cfg.reflection,
        "verdict": {"kept": False, "reason": None},
    }
    if not y.strip():
        return _finish(record, None, cfg, t_start)

    def generate(messages, sampling, n, prefill):
        t0 = time.perf_counter()
        out = generator.generate([messages], sampling, n=n, prefill=[prefill] if prefill else None)[0]
        record["timings"]["generate_s"] += time.perf_counter() - t0
        for g in out:
            record["tokens"]["prompt"] += g.prompt_tokens
            record["tokens"]["completion"] += g.completion_tokens
        return out

    trigger = prompts.pick_trigger(x, rng)
    record["trigger"] = trigger
    first = generate(prompts.initial_messages(x, y, cfg.reflection), _sampling(cfg.initial, seed, (prompts.THINK_CLOSE,)),
                     1, prompts.THINK_OPEN + trigger)[0]
    z0 = None if first.error else prompts.parse_initial(trigger, first.text)
    if z0 is not None and not cfg.reflection:
        z0 = prompts.strip_reflection(z0) or None
    record["z0"] = z0
    if z0 is None:
        record["raw_initial"] = first.text
        return _finish(record, None, cfg, t_start)

    judge = TrajectoryScorer(scorer, x, y, cfg)
    best = judge.score([z0])[0]
    if best is None:
        record["z_final"] = z0
        return _finish(record, None, cfg, t_start, reason=filters.SCORE_FAILED)
    record["scores"].append(best)
    sep = segments.separator(z0)
    segs = segments.split(z0, cfg.min_segment_chars)
    record["num_segments"] = len(segs)

    if cfg.search:
        step = 0
        for i in range(len(segs)):
            if best < cfg.stop_threshold or step >= cfg.max_steps:
                break
            step += 1
            messages = prompts.refine_messages(
                x, y, segments.join(segs[:i], sep), segs[i], segments.join(segs[i + 1:], sep), cfg.reflection,
                cfg.refine_analysis,
            )
            prefill = prompts.refine_prefill(cfg.refine_analysis)
            outs = generate(messages, _sampling(cfg.refine, seed + step, (prompts.REWRITE_CLOSE,)),
                            cfg.num_candidates, prefill)
            candidates = []
            for g in outs:
                text = None if g.error else prompts.parse_rewrite(prefill + g.text)
                if text is not None and not cfg.reflection:
                    text = prompts.strip_reflection(text) or None
                candidates.append({"text": text, "score": None, "raw": g.text if text is None else None})
            valid = [c for c in candidates if c["text"] is not None]
            if valid:
                trials = [segments.join(segs[:i] + [c["text"]] + segs[i + 1:], sep) for c in valid]
                for c, s in zip(valid, judge.score(trials)):
                    c["score"] = s
                valid = [c for c in valid if c["score"] is not None]
            if valid:
                winner = min(valid, key=lambda c: c["score"])
                accepted = winner["score"] < best  # strictly lower: ties keep the current trajectory
            else:
                winner, accepted = None, False
            if accepted:
                record["accepted_edits"].append({"step": step, "segment": i, "before": segs[i], "after": winner["text"],
                                                 "score_before": best, "score_after": winner["score"]})
                segs[i] = winner["text"]
                best = winner["score"]
            record["scores"].append(best)
            record["steps"].append({"step": step, "segment": i, "candidates": candidates, "accepted": accepted})

    z_final = segments.join(segs, sep) if cfg.search else z0
    record["z_final"] = z_final
    record["tokens"]["target"] = judge.target_tokens
    record["timings"]["score_s"] = judge.seconds
    return _finish(record, z_final, cfg, t_start)


def _finish(record: Dict[str, Any], z: Optional[str], cfg: SynthesisConfig, t_start: float,
            reason: Optional[str] = None) -> Dict[str, Any]:
    reason = reason or filters.discard_reason(z, record["y"], cfg.filters, cfg.min_segment_chars)
    record["verdict"] = {"kept": reason is None, "reason": reason}
    record["perplexities"] = [math.exp(s) for s in record["scores"]]
    record["timings"]["total_s"] = time.perf_counter() - t_start
    return record

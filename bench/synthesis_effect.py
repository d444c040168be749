"""What the REER search does to real pairs: median relative score drop from z0 to z_final, accepted
steps, filter outcomes, and where z0 scores sit against the stop threshold. The demo recipe's models
(SmolLM2-135M, embedded) generate and score, on CPU.

    python -m bench.synthesis_effect [--pairs 20] [--max-steps 2] [--seed-pairs PATH]   (~30 min on 2 cores)

Pairs are the first N (by id) of the seed file whose answers are at most --max-words words, so the
run stays in minutes on a laptop; the search settings are printed with the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import time
from collections import Counter
from pathlib import Path

from deepwriter.config.compose import compose
from deepwriter.config.root import to_typed
from deepwriter.core import think
from deepwriter.llm.base import ScoreRequest, clipped_mean_nll
from deepwriter.synthesis import filters
from deepwriter.synthesis.schedule import run_pairs
from deepwriter.synthesis.search import TrajectoryScorer
from deepwriter.synthesis.stage import build_backends

DEFAULT_PAIRS = Path(__file__).resolve().parents[2] / "shared" / "seed_pairs" / "hellobench_gpt4o_0806.jsonl"


def load_pairs(path: Path, n: int, max_words: int) -> list:
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    rows = sorted((r for r in rows if len(r["solution"].split()) <= max_words), key=lambda r: str(r["id"]))
    return [(str(r["id"]), r["query"], r["solution"], r.get("category")) for r in rows[:n]]


# The scorer context before issue 13, rebuilt here only to measure how the score scale moved: a one-line
# instruction, no system message, the answer's first blank-line paragraph as head, no <answer> tag.
_OLD_INSTRUCTION = (
    "Before answering, plan the response step by step: what the request asks for, who will read it, "
    "what content it needs and how to structure it. Then write the response.\n\n{x}"
)


def _old_request(x: str, y: str, z: str) -> ScoreRequest:
    m = re.search(r"\n[ \t]*\n\s*", y)
    head, rest = ("", y) if m is None or not y[m.end() :].strip() else (y[: m.end()], y[m.end() :])
    return ScoreRequest([{"role": "user", "content": _OLD_INSTRUCTION.format(x=x)}], think.block(z) + head, rest)


def _spread(values: list) -> str:
    v = sorted(values)
    q = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else [v[0]] * 3
    return f"min {v[0]:.3f}, quartiles {q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f}, max {v[-1]:.3f}"


def print_score_scale(records: list, scorer, scfg) -> None:
    """Every z0 scored under the old and the new scorer context (the same z0, the same scorer): where
    the scores sit against the stop threshold, whatever the filters later decided."""
    with_z0 = [r for r in records if r["z0"]]
    if not with_z0:
        return
    new = [TrajectoryScorer(r["x"], r["y"], scfg, r["language"]).request(r["z0"]) for r in with_z0]
    old = [_old_request(r["x"], r["y"], r["z0"]) for r in with_z0]
    lps = scorer.score(new + old)
    s_new = [clipped_mean_nll(lp, scfg.clip_min, scfg.clip_max) for lp in lps[: len(new)]]
    s_old = [clipped_mean_nll(lp, scfg.clip_min, scfg.clip_max) for lp in lps[len(new) :]]
    t = scfg.stop_threshold
    for name, vals in (("old", s_old), ("new", s_new)):
        below = sum(1 for v in vals if v < t)
        print(f"  z0 score, {name} scorer context: {_spread(vals)}; {below}/{len(vals)} below the stop threshold {t}")
    lower = sum(1 for a, b in zip(s_old, s_new) if b < a)
    print(f"  new context scores the same z0 lower for {lower}/{len(vals)} pairs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--max-words", type=int, default=1000)
    ap.add_argument("--max-steps", type=int, default=2)
    ap.add_argument("--initial-tokens", type=int, default=256)
    ap.add_argument("--refine-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=10, help="pairs in flight (synthesis.max_in_flight)")
    ap.add_argument("--min-segment-chars", type=int, default=100, help="the reference's 100; lower to see the search")
    ap.add_argument("--seed-pairs", type=Path, default=DEFAULT_PAIRS)
    ap.add_argument("--out", type=Path, default=Path("bench/results/synthesis_effect.jsonl"))
    args = ap.parse_args()

    cfg = to_typed(compose(["+recipe=demo"]))
    scfg = dataclasses.replace(
        cfg.synthesis,
        max_steps=args.max_steps,
        min_segment_chars=args.min_segment_chars,
        refine_analysis=False,
        initial=dataclasses.replace(cfg.synthesis.initial, max_new_tokens=args.initial_tokens),
        refine=dataclasses.replace(cfg.synthesis.refine, max_new_tokens=args.refine_tokens),
        filters=dataclasses.replace(cfg.synthesis.filters, min_think_tokens=min(100, args.initial_tokens)),
        max_in_flight=args.batch,
    )
    cfg.synthesis = scfg
    pairs = load_pairs(args.seed_pairs, args.pairs, args.max_words)
    generator, scorer = build_backends(cfg)
    t0 = time.time()
    records = []
    for rec in run_pairs(pairs, generator, scorer, scfg):
        records.append(rec)
        print(f"  {len(records)}/{len(pairs)} pairs, {time.time() - t0:.0f}s", flush=True)
    elapsed = time.time() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")

    scored = [r for r in records if len(r["scores"]) >= 1]
    drops = [(r["scores"][0] - r["scores"][-1]) / r["scores"][0] for r in scored if r["scores"][0] > 0]
    steps = sum(len(r["steps"]) for r in records)
    accepted = [len(r["accepted_edits"]) for r in records]
    verdicts = Counter("kept" if r["verdict"]["kept"] else r["verdict"]["reason"] for r in records)
    print(
        f"\nREER search effect: {len(records)} real pairs (answers <= {args.max_words} words); generator "
        f"{generator.model_id}, scorer {scorer.model_id}; K={scfg.num_candidates}, max_steps={scfg.max_steps}, "
        f"stop_threshold={scfg.stop_threshold}, clip=[{scfg.clip_min}, {scfg.clip_max}], "
        f"refine_analysis={scfg.refine_analysis}, language={scfg.language}, system_prompt={scfg.system_prompt!r}, "
        f"z0 <= {args.initial_tokens} tokens, rewrites <= {args.refine_tokens} tokens; {elapsed:.0f}s"
    )
    if drops:
        print(
            f"  median relative score drop z0 -> z_final: {100 * statistics.median(drops):.2f}%  "
            f"(mean {100 * statistics.mean(drops):.2f}%, max {100 * max(drops):.2f}%)"
        )
        print(
            f"  mean score z0 {statistics.mean(r['scores'][0] for r in scored):.4f} -> "
            f"final {statistics.mean(r['scores'][-1] for r in scored):.4f}"
        )
    print_score_scale(records, scorer, scfg)
    print(
        f"  accepted edits: {sum(accepted)} of {steps} steps ({100 * sum(accepted) / max(1, steps):.0f}%); "
        f"pairs with >= 1 accepted edit: {sum(1 for a in accepted if a)}/{len(records)}"
    )
    before = {k: v for k, v in verdicts.items() if k in filters.BEFORE_SEARCH}
    quality = {k: v for k, v in verdicts.items() if k in filters.QUALITY}
    print(
        f"  filter outcomes: kept {verdicts.get('kept', 0)}/{len(records)}; discarded before search "
        f"(reference rules) {before}; by the quality filters {quality}"
    )
    print(f"  records: {args.out}")


if __name__ == "__main__":
    main()

"""What the REER search does to real pairs: median relative score drop from z0 to z_final, accepted
steps, filter outcomes. SmolLM2-135M generates and scores, on CPU.

    python -m bench.synthesis_effect [--pairs 20] [--max-steps 2] [--seed-pairs PATH]   (~30 min on 2 cores)

Pairs are the first N (by id) of the seed file whose answers are at most --max-words words, so the
run stays in minutes on a laptop; the search settings are printed with the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections import Counter
from pathlib import Path

from deepwriter.config import to_typed
from deepwriter.synthesis.search import synthesize_many
from deepwriter.synthesis.stage import build_backends
from deepwriter.train import compose

DEFAULT_PAIRS = Path(__file__).resolve().parents[2] / "shared" / "seed_pairs" / "hellobench_gpt4o_0806.jsonl"


def load_pairs(path: Path, n: int, max_words: int) -> list:
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    rows = sorted((r for r in rows if len(r["solution"].split()) <= max_words), key=lambda r: str(r["id"]))
    return [(str(r["id"]), r["query"], r["solution"], r.get("category")) for r in rows[:n]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--max-words", type=int, default=1000)
    ap.add_argument("--max-steps", type=int, default=2)
    ap.add_argument("--initial-tokens", type=int, default=256)
    ap.add_argument("--refine-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--seed-pairs", type=Path, default=DEFAULT_PAIRS)
    ap.add_argument("--out", type=Path, default=Path("bench/results/synthesis_effect.jsonl"))
    args = ap.parse_args()

    cfg = to_typed(compose(["+recipe=demo"]))
    scfg = dataclasses.replace(
        cfg.synthesis,
        max_steps=args.max_steps,
        refine_analysis=False,
        initial=dataclasses.replace(cfg.synthesis.initial, max_new_tokens=args.initial_tokens),
        refine=dataclasses.replace(cfg.synthesis.refine, max_new_tokens=args.refine_tokens),
    )
    cfg.synthesis = scfg
    pairs = load_pairs(args.seed_pairs, args.pairs, args.max_words)
    generator, scorer = build_backends(cfg)
    t0 = time.time()
    records = []
    for start in range(0, len(pairs), args.batch):
        records += list(synthesize_many(pairs[start : start + args.batch], generator, scorer, scfg))
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
        f"\nREER search effect: {len(records)} real pairs (answers <= {args.max_words} words), SmolLM2-135M as "
        f"generator and scorer, K={scfg.num_candidates}, max_steps={scfg.max_steps}, "
        f"z0 <= {args.initial_tokens} tokens, rewrites <= {args.refine_tokens} tokens; {elapsed:.0f}s"
    )
    print(
        f"  median relative score drop z0 -> z_final: {100 * statistics.median(drops):.2f}%  "
        f"(mean {100 * statistics.mean(drops):.2f}%, max {100 * max(drops):.2f}%)"
    )
    print(
        f"  mean score z0 {statistics.mean(r['scores'][0] for r in scored):.4f} -> "
        f"final {statistics.mean(r['scores'][-1] for r in scored):.4f}"
    )
    print(
        f"  accepted edits: {sum(accepted)} of {steps} steps ({100 * sum(accepted) / max(1, steps):.0f}%); "
        f"pairs with >= 1 accepted edit: {sum(1 for a in accepted if a)}/{len(records)}"
    )
    print(f"  filter outcomes: {dict(verdicts)}")
    print(f"  records: {args.out}")


if __name__ == "__main__":
    main()

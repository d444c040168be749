"""Intervals of published judgments: how sure are the numbers a benchmark's authors published?

    python -m deepwriter.eval.published hellobench --data DIR --a DIR --b DIR [--resamples N]

From two models' HelloBench judgment files (the format that
`python -m deepwriter.eval.benchmarks.hellobench_rescore` reads), each model's HB-A and HB-B with its
95% interval (items resampled within their subset), and the paired difference A − B over the samples
both were judged on, with its interval and a paired permutation test (deepwriter.eval.stats). Groups
as in deepwriter.eval.benchmarks.hellobench
(DEFAULT_GROUPS, or --group NAME=SUBSET,SUBSET).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from deepwriter.config.eval import HelloBenchConfig
from deepwriter.eval import stats
from deepwriter.eval.benchmarks import hellobench
from deepwriter.eval.benchmarks.base import BenchmarkDataError
from deepwriter.eval.benchmarks.hellobench_rescore import hellobench_records


def hellobench_intervals(
    a: Path, b: Path, data: Path, groups: Optional[Dict[str, List[str]]] = None, resamples: int = 1000, seed: int = 0
) -> Dict[str, Any]:
    """{"a": {column: Interval}, "b": {...}, "paired": {column: Paired}, "skipped": {a, b}}."""
    records_a, skipped_a = hellobench_records(a, data)
    records_b, skipped_b = hellobench_records(b, data)
    statistic = stats.headline_statistic(hellobench.KIND, hellobench, HelloBenchConfig(groups=dict(groups or {})))
    return {
        "a": stats.bootstrap(records_a, statistic, stats.strata_of(hellobench, records_a), resamples, seed),
        "b": stats.bootstrap(records_b, statistic, stats.strata_of(hellobench, records_b), resamples, seed),
        "paired": stats.paired(records_a, records_b, statistic, hellobench.STRATUM, resamples, seed),
        "skipped": {"a": len(skipped_a), "b": len(skipped_b)},
    }


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deepwriter.eval.published", description=__doc__.split("\n\n")[0])
    ap.add_argument("benchmark", choices=["hellobench"])
    ap.add_argument("--data", required=True, type=Path, help="HelloBench data folder (main_data/, weighted_scores.txt)")
    ap.add_argument("--a", required=True, type=Path, help="model A's folder of <subset>_results.jsonl")
    ap.add_argument("--b", required=True, type=Path, help="model B's folder of <subset>_results.jsonl")
    ap.add_argument("--group", action="append", default=[], metavar="NAME=SUBSET,SUBSET")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    groups = {g.partition("=")[0]: [m for m in g.partition("=")[2].split(",") if m] for g in args.group} or None
    try:
        res = hellobench_intervals(args.a, args.b, args.data, groups, args.resamples, args.seed)
    except BenchmarkDataError as exc:
        print(f"published: {exc}", file=sys.stderr)
        return 2
    print(f"{'column':<8} {'A: ' + args.a.name:<28} {'B: ' + args.b.name:<28} {'A − B (paired)':<36} {'n':>4}")
    for col, p in res["paired"].items():
        print(
            f"{col:<8} {res['a'][col].text():<28} {res['b'][col].text():<28} {stats.paired_text(p.as_dict()):<36} "
            f"{p.n:>4}"
        )
    print(
        "95% percentile bootstrap intervals, items resampled within their subset "
        f"({args.resamples} resamples); p: two-sided paired permutation test; * the interval excludes 0."
    )
    for name, members in (groups or hellobench.DEFAULT_GROUPS).items():
        print(f"{name} = mean of the subset means of {', '.join(members)}")
    if any(res["skipped"].values()):
        print(
            f"skipped lines: {res['skipped']} (python -m deepwriter.eval.benchmarks.hellobench_rescore lists them)",
            file=sys.stderr,
        )
    if args.json:
        out = {k: {c: v.as_dict() for c, v in res[k].items()} for k in ("a", "b", "paired")}
        args.json.write_text(json.dumps({**out, "skipped": res["skipped"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Score existing judgment files without calling any judge.

    python -m deepwriter.eval.benchmarks.hellobench_rescore hellobench --judgements DIR --data DIR

`--judgements` is a folder of HelloBench judgment files as the authors publish them
(`results/judgements/main_exp/<model>/<subset>_results.jsonl`, one JSON object per line with `id`,
`response` and `checklist_wise_evaluation`: a list of {checklist_id, reason, evaluation_score}).
`--data` is the HelloBench data folder (`main_data/<subset>.jsonl` for each sample's category and
checklist, `weighted_scores.txt` for the official weights). Prints per-subset and overall scores, raw
and rescaled ((score − 75)·4), and the HB-A / HB-B groups; lines that cannot be scored are listed
with file:line and reason and counted, never dropped silently.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from deepwriter.core.badinput import Skipped
from deepwriter.eval.benchmarks import hellobench
from deepwriter.eval.benchmarks.base import BenchmarkDataError, Slot, read_jsonl


def rescore_hellobench(
    judgements: Path, data: Path, groups: Optional[Dict[str, List[str]]] = None
) -> Tuple[Dict[str, Any], List[Skipped]]:
    records, skipped = hellobench_records(judgements, data)
    summary = hellobench.aggregate(records, groups)
    summary["skipped"] = len(skipped)
    return summary, skipped


def hellobench_records(judgements: Path, data: Path) -> Tuple[List[Dict[str, Any]], List[Skipped]]:
    """One scored record per usable judgment line (id, subset, category, checklist scores, score), and
    the lines that could not be scored."""
    judgements, data = Path(judgements), Path(data)
    weights = hellobench.load_weights(data)
    files = sorted(judgements.glob("*_results.jsonl"))
    if not files:
        raise BenchmarkDataError(f"{judgements}:0: field 'files': no *_results.jsonl judgment files here")
    records, skipped = [], []
    for f in files:
        subset = f.name[: -len("_results.jsonl")]
        data_file = data / "main_data" / f"{subset}.jsonl"
        if not data_file.is_file():
            skipped.append(Skipped(f"{f}:0", "subset", f"no benchmark data for subset {subset!r} ({data_file})"))
            continue
        samples = {rec["id"]: rec for _, rec in read_jsonl(data_file) if "id" in rec}
        for lineno, rec in read_jsonl(f):
            where = f"{f}:{lineno}"
            try:
                records.append(_score_line(rec, samples, weights, subset))
            except ValueError as exc:
                skipped.append(Skipped(where, "<line>", str(exc)))
    return records, skipped


def _score_line(
    rec: Dict[str, Any], samples: Dict[str, Any], weights: Dict[str, List[float]], subset: str
) -> Dict[str, Any]:
    sid = rec.get("id")
    if sid not in samples:
        raise ValueError(f"field 'id': {sid!r} is not in the benchmark data of {subset!r}")
    category = samples[sid]["category"]
    if category not in weights:
        raise ValueError(f"field 'category': {category!r} has no weights")
    evals = rec.get("checklist_wise_evaluation")
    if not isinstance(evals, list) or not evals:
        raise ValueError("field 'checklist_wise_evaluation': missing or empty (the judge gave no evaluation)")
    n = len(weights[category])
    values, _ = hellobench.parse_checklist_reply(evals)
    slot = Slot("evaluation_score", hellobench.SCORES)
    scores = []
    for i in range(n):
        if str(i) not in values:
            raise ValueError(f"field 'checklist_wise_evaluation': checklist_id {i} missing ({len(evals)} of {n} given)")
        scores.append(slot.coerce(values[str(i)]))
    if len(values) != n:
        raise ValueError(f"field 'checklist_wise_evaluation': {len(values)} checklist ids for {n} checklist items")
    return {
        "id": sid,
        "subset": subset,
        "category": category,
        "checklist_scores": scores,
        "score": hellobench.weighted_score(weights[category], scores),
    }


def _fmt(v: Optional[float]) -> str:
    return "–" if v is None else f"{v:.2f}"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m deepwriter.eval.benchmarks.hellobench_rescore", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("benchmark", choices=["hellobench"])
    ap.add_argument("--judgements", required=True, type=Path, help="folder of <subset>_results.jsonl judgment files")
    ap.add_argument("--data", required=True, type=Path, help="HelloBench data folder (main_data/, weighted_scores.txt)")
    ap.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="NAME=SUBSET,SUBSET",
        help="a named group of subsets (default: HB-A and HB-B as in conf/eval)",
    )
    ap.add_argument("--json", type=Path, help="also write the summary here")
    args = ap.parse_args(argv)
    groups = None
    if args.group:
        groups = {}
        for g in args.group:
            name, _, members = g.partition("=")
            groups[name] = [m for m in members.split(",") if m]
    try:
        summary, skipped = rescore_hellobench(args.judgements, args.data, groups)
    except BenchmarkDataError as exc:
        print(f"rescore: {exc}", file=sys.stderr)
        return 2
    print(f"{'subset':<28} {'n':>5} {'scored':>7} {'score':>8} {'rescaled':>9}")
    for name, s in summary["subsets"].items():
        print(f"{name:<28} {s['n']:>5} {s['scored']:>7} {_fmt(s['score']):>8} {_fmt(s['rescaled']):>9}")
    for name, v in summary["groups"].items():
        print(f"{name:<28} {'':>5} {'':>7} {_fmt(v):>8} {_fmt(summary['groups_rescaled'][name]):>9}")
    print(
        f"{'overall (pooled)':<28} {summary['n']:>5} {summary['scored']:>7} {_fmt(summary['overall']):>8} "
        f"{_fmt(summary['overall_rescaled']):>9}"
    )
    print(
        f"{'mean of subset means':<28} {'':>5} {'':>7} {_fmt(summary['subset_mean']):>8} "
        f"{_fmt(summary['subset_mean_rescaled']):>9}"
    )
    for name, members in summary["group_definitions"].items():
        print(f"{name} = samples of {', '.join(members)} ({hellobench.GROUP_NOTE})")
    if skipped:
        print(f"\nskipped {len(skipped)} line(s):", file=sys.stderr)
        for s in skipped:
            print(f"  {s.where}: {s.reason}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

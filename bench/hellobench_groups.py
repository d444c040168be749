"""Which HelloBench subsets make the REER paper's HB-A and HB-B: every grouping of the five subsets,
scored from HelloBench's own published judgments of GPT-4o and Claude-3.5-Sonnet, against the paper's
figures for those two models.

HelloBench defines no groups; the paper reports HB-A and HB-B on the raw weighted checklist scale,
with GPT-4o at 83.7 / 87.6 and Claude-3.5-Sonnet at 82.9 / 88.3. HelloBench publishes its judgments of
both models (results/judgements/main_exp/{gpt4o_0806,claude35}/<subset>_results.jsonl). Each sample
scores Σ weight·score with the category's weights, samples are dropped as results/scripts/compute.py
drops them (unknown or repeated id, a checklist of the wrong length, a score that is not a number in
[0, 1]), and a subset scores the mean over its samples. Every assignment of the subsets to A, B or
neither (A and B not empty) is scored two ways: a group as the mean of its subsets' means (as
compute.py averages the five subsets into its overall score), and pooled over the group's samples.

    python -m bench.hellobench_groups --repo PATH [--data DIR] [--top 15]
    make bench ARGS="hellobench_groups -- --repo PATH"

--repo: a clone of Quehry/HelloBench (a working tree or a bare git directory: files are then read at
HEAD). --data: a HelloBench data folder (main_data/<subset>.jsonl for each sample's category; default
../shared/benchmarks/hellobench, used where the clone lacks a file). HELLOBENCH_REPO stands in for
--repo; with neither, nothing is run. The published judgments are read where they are, never copied.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "benchmarks" / "hellobench"
SUBSETS = ("open_ended_qa", "summarization", "chat", "text_completion", "heuristic_text_generation")
MODELS = {"GPT-4o": "gpt4o_0806", "Claude-3.5-Sonnet": "claude35"}
# The paper's HB-A / HB-B for the two models (raw weighted checklist scale).
PAPER = {"GPT-4o": (83.7, 87.6), "Claude-3.5-Sonnet": (82.9, 88.3)}
# The grouping this project used before this comparison (issue 17's guess).
PREVIOUS = (("open_ended_qa", "summarization", "chat"), ("text_completion", "heuristic_text_generation"))
SHORT = {"open_ended_qa": "oqa", "summarization": "sum", "chat": "chat", "text_completion": "tc"}
SHORT["heuristic_text_generation"] = "htg"


class Source:
    """Files of a HelloBench clone: a working tree, or a bare git directory read at HEAD."""

    def __init__(self, path: Path):
        self.path = path
        self.bare = not (path / "results").is_dir()

    def text(self, rel: str) -> Optional[str]:
        if not self.bare:
            f = self.path / rel
            return f.read_text(encoding="utf-8") if f.is_file() else None
        out = subprocess.run(
            ["git", f"--git-dir={self.path}", "show", f"HEAD:{rel}"], capture_output=True, text=True, encoding="utf-8"
        )
        return out.stdout if out.returncode == 0 and out.stdout.strip() else None


def categories(source: Source, data: Path, subset: str) -> Dict[str, str]:
    text = source.text(f"data/main_data/{subset}.jsonl")
    if text is None:
        f = data / "main_data" / f"{subset}.jsonl"
        if not f.is_file():
            raise SystemExit(f"bench.hellobench_groups: {f}: not found, and the clone has no {subset}.jsonl")
        text = f.read_text(encoding="utf-8")
    return {r["id"]: r["category"] for r in (json.loads(line) for line in text.splitlines() if line.strip())}


def sample_scores(lines: Sequence[str], cats: Dict[str, str], weights: Dict[str, List[float]]) -> Tuple[list, int]:
    """(Σ weight·score per kept sample, samples dropped), by compute.py's rules."""
    seen, kept, dropped = set(), [], 0
    for line in lines:
        if not line.strip():
            continue
        rec = json.loads(line)
        sid = rec.get("id")
        if sid not in cats or sid in seen:
            dropped += 1
            continue
        seen.add(sid)
        w = weights[cats[sid]]
        values = []
        for entry in rec.get("checklist_wise_evaluation") or []:
            try:
                v = float(entry["evaluation_score"])
            except (KeyError, TypeError, ValueError):
                continue
            if 0.0 <= v <= 1.0:
                values.append(v)
        if len(rec.get("checklist_wise_evaluation") or []) != len(w) or len(values) != len(w):
            dropped += 1
            continue
        kept.append(sum(a * b for a, b in zip(w, values)))
    return kept, dropped


def group_score(samples: Dict[str, list], members: Sequence[str], how: str) -> float:
    if how == "mean of subset means":
        return sum(sum(samples[s]) / len(samples[s]) for s in members) / len(members)
    pooled = [v for s in members for v in samples[s]]
    return sum(pooled) / len(pooled)


def groupings(subsets: Sequence[str] = SUBSETS):
    """Every (A, B): each subset in A, in B or in neither, A and B not empty."""
    for assign in itertools.product("AB-", repeat=len(subsets)):
        a = tuple(s for s, g in zip(subsets, assign) if g == "A")
        b = tuple(s for s, g in zip(subsets, assign) if g == "B")
        if a and b:
            yield a, b


def fit(samples: Dict[str, Dict[str, list]], paper: Dict[str, Tuple[float, float]]) -> List[dict]:
    """Every grouping and aggregation with its four predicted figures and RMSE against the paper's,
    best first."""
    rows = []
    for a, b in groupings():
        for how in ("mean of subset means", "pooled over samples"):
            pred = {m: (group_score(samples[m], a, how), group_score(samples[m], b, how)) for m in paper}
            err = [pred[m][i] - paper[m][i] for m in paper for i in (0, 1)]
            rows.append(
                {
                    "A": a,
                    "B": b,
                    "how": how,
                    "pred": pred,
                    "rmse": math.sqrt(sum(e * e for e in err) / len(err)),
                    "max_err": max(abs(e) for e in err),
                }
            )
    rows.sort(key=lambda r: (r["rmse"], r["how"]))
    return rows


def _names(group: Sequence[str]) -> str:
    return "+".join(SHORT[s] for s in group)


def _row(rank: int, r: dict) -> str:
    figures = "  ".join(f"{r['pred'][m][0]:6.2f} {r['pred'][m][1]:6.2f}" for m in PAPER)
    return (
        f"{rank:>4}  {_names(r['A']):<20} {_names(r['B']):<20} {r['how']:<21} {figures}  "
        f"{r['rmse']:6.3f} {r['max_err']:6.3f}"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.hellobench_groups", description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=os.environ.get("HELLOBENCH_REPO"), help="a clone of Quehry/HelloBench")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="a HelloBench data folder (main_data/)")
    ap.add_argument("--top", type=int, default=15, help="groupings listed, best first")
    args = ap.parse_args(argv)
    if not args.repo:
        print("bench.hellobench_groups: not run: no HelloBench clone given (--repo PATH or HELLOBENCH_REPO)")
        return 0
    source = Source(Path(args.repo).expanduser())
    weights_text = source.text("weighted_scores.txt")
    if weights_text is None:
        raise SystemExit(f"bench.hellobench_groups: {args.repo}: no weighted_scores.txt (not a HelloBench clone?)")
    import tempfile

    from deepwriter.eval.benchmarks.hellobench import load_weights

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "weighted_scores.txt").write_text(weights_text, encoding="utf-8")
        weights = load_weights(Path(tmp))

    samples: Dict[str, Dict[str, list]] = {}
    print("per subset, raw weighted checklist score (samples kept / dropped), as compute.py scores it:")
    print(f"  {'subset':<27}" + "".join(f"{m:>26}" for m in MODELS))
    cats = {s: categories(source, Path(args.data), s) for s in SUBSETS}
    for m, folder in MODELS.items():
        samples[m] = {}
        for s in SUBSETS:
            text = source.text(f"results/judgements/main_exp/{folder}/{s}_results.jsonl")
            if text is None:
                raise SystemExit(f"bench.hellobench_groups: {args.repo}: no judgments of {folder} for {s}")
            kept, dropped = sample_scores(text.splitlines(), cats[s], weights)
            samples[m][s] = kept
            samples[m].setdefault("_dropped", {})[s] = dropped
    for s in SUBSETS:
        cells = []
        for m in MODELS:
            v = samples[m][s]
            cells.append(f"{sum(v) / len(v):10.2f} ({len(v)}/{samples[m]['_dropped'][s]})")
        print(f"  {s:<27}" + "".join(f"{c:>26}" for c in cells))
    for m in MODELS:
        samples[m].pop("_dropped")

    rows = fit(samples, PAPER)
    paper = "  ".join(f"{PAPER[m][0]:6.2f} {PAPER[m][1]:6.2f}" for m in PAPER)
    print(f"\n{len(rows)} candidates ({len(rows) // 2} groupings × 2 aggregations), best first; the paper: {paper}")
    print(f"{'rank':>4}  {'HB-A':<20} {'HB-B':<20} {'group score':<21} GPT-4o A / B   Claude A / B    rmse max|e|")
    for i, r in enumerate(rows[: args.top], 1):
        print(_row(i, r))
    prev = [(i, r) for i, r in enumerate(rows, 1) if (r["A"], r["B"]) == PREVIOUS]
    print("the previous default (oqa+sum+chat / tc+htg):")
    for i, r in prev:
        print(_row(i, r))
    best, second = rows[0], next(r for r in rows[1:] if (r["A"], r["B"]) != (rows[0]["A"], rows[0]["B"]))
    print(
        f"\nbest: HB-A = {' + '.join(best['A'])}; HB-B = {' + '.join(best['B'])} ({best['how']}), rmse "
        f"{best['rmse']:.3f}; next other grouping {second['rmse']:.3f}; previous default {prev[0][1]['rmse']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

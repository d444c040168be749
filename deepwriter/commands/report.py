"""Compare eval results of several runs side by side.

    python -m deepwriter.report RUN_DIR [RUN_DIR ...] [--out DIR]
    python -m deepwriter.report --html RUN_DIR [RUN_DIR ...] [--out PATH] [--pairwise DIR]

A RUN_DIR is a run folder (runs/<recipe>/<run-id>, whose eval/ holds summary.json) or an eval stage
folder itself. Writes compare.md, compare.csv, compare.png (bars) and radar.png into --out (default
./eval-report) and prints the markdown table: every figure with its 95% interval, and every run after
the first against the first as a paired difference (interval and permutation test) over the items
both scored; compare.json holds the same figures.

--html writes the browsable run report instead (deepwriter/viewer): for one run folder its
report.html (default RUN_DIR/report.html), for several a page with them side by side (default
./report.html), linked to each run's own report; prints the page's path. --pairwise DIR adds the runs'
head-to-head figures from `python -m deepwriter.eval.pairwise ... --out DIR` (its pairwise.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from deepwriter.eval import paired_runs, stats, tables
from deepwriter.viewer import build_report

PAIRED_NOTE = (
    "Paired difference on the items both runs scored, each benchmark's figure by its own formula: "
    "difference [95% bootstrap interval] and the two-sided p-value of a paired permutation test; * where the "
    "interval excludes 0. README: reading a comparison."
)


def find_summary(run_dir: Path) -> Path:
    for candidate in (run_dir / "summary.json", run_dir / "eval" / "summary.json"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{run_dir}: no summary.json here or in eval/ (has the eval stage finished?)")


def read_summary(run_dir: Path) -> Dict[str, Any]:
    """A run's eval summary, with `eval_folder` (where its items are) for the paired comparisons."""
    path = find_summary(Path(run_dir))
    return {**json.loads(path.read_text()), "eval_folder": str(path.parent)}


def load_runs(run_dirs: List[Path]) -> Dict[str, Dict[str, Any]]:
    runs: Dict[str, Dict[str, Any]] = {}
    for d in run_dirs:
        summary = read_summary(Path(d))
        label = summary.get("label") or Path(d).name
        base, k = label, 2
        while label in runs:  # two runs with one label stay apart
            label, k = f"{base} ({k})", k + 1
        runs[label] = summary
    return runs


def _folder(summary: Dict[str, Any]) -> Optional[Path]:
    return Path(summary["eval_folder"]) if summary.get("eval_folder") else None


def paired_against_first(runs: Dict[str, Dict[str, Any]], resamples: int = 1000) -> tuple:
    """(header, rows, {label: {column: paired}}): every run after the first against the first, as
    paired differences over the items both scored (deepwriter.eval.paired_runs)."""
    labels = list(runs)
    ref = runs[labels[0]]
    found = {}
    for label in labels[1:]:
        s = runs[label]
        if _folder(s) is not None and _folder(ref) is not None:
            found[label] = paired_runs.compare(s, _folder(s), ref, _folder(ref), resamples)
    cols = tables.columns_of({label: {c: None for c in p} for label, p in found.items()})
    rows = [[label] + [stats.paired_text(p[c]) if c in p else "–" for c in cols] for label, p in found.items()]
    return [f"run − {labels[0]}"] + cols, rows, found


def released_comparison_md(run_dirs: List[Path]) -> str:
    """Ours vs the authors' released trajectories, per run whose synthesize stage compared them (the
    `released_comparison` of its manifest): means with their standard errors."""
    rows = []
    for d in run_dirs:
        manifest = Path(d) / "synthesize" / "manifest.json"
        if not manifest.is_file():
            continue
        cmp = (json.loads(manifest.read_text()).get("metrics") or {}).get("released_comparison")
        if not cmp:
            continue
        shown = [("score_ours", 4), ("score_released", 4), ("score_difference", 4), ("words_ours", 1)]
        shown += [("words_released", 1), ("accepted_edits_ours", 2), ("ours_lower_share", 3)]
        rows.append([Path(d).name, cmp["pairs"], *(f"{cmp[k]:.{n}f} ± {cmp[k + '_se']:.{n}f}" for k, n in shown)])
    if not rows:
        return ""
    header = ["run", "pairs", "score ours", "score released", "ours − released", "words ours", "words released"]
    header += ["accepted edits", "ours lower (share)"]
    return "Ours vs the authors' released trajectories (same scorer; lower score is better; mean ± s.e.):\n\n" + (
        tables.markdown_table(header, rows)
    )


def write_report(runs: Dict[str, Dict[str, Any]], out: Path, resamples: int = 1000) -> str:
    out.mkdir(parents=True, exist_ok=True)
    runs = {label: paired_runs.with_intervals(s, _folder(s), resamples) for label, s in runs.items()}
    rows = {label: s["headline"] for label, s in runs.items()}
    header, body = tables.comparison_with_intervals(runs)
    md = [tables.markdown_table(header, body), tables.SCALE_NOTE, tables.INTERVAL_NOTE]
    paired = {}
    if len(runs) > 1:
        pheader, prows, paired = paired_against_first(runs, resamples)
        if prows:
            md += ["", tables.markdown_table(pheader, prows), PAIRED_NOTE]
    groups = tables.definitions_note(list(runs.values()))  # HB-A / HB-B are our definition: say it
    md += [groups, ""] if groups else [""]
    judge_rows = [
        [
            label,
            s.get("model_under_test"),
            s.get("judge"),
            s.get("judge_stats", {}).get("calls"),
            s.get("judge_stats", {}).get("failed"),
            s.get("judge_stats", {}).get("cost_usd"),
        ]
        for label, s in runs.items()
    ]
    md.append(
        tables.markdown_table(["run", "model", "judge", "judge calls", "judge failures", "cost (USD)"], judge_rows)
    )
    text = "\n".join(md)
    (out / "compare.md").write_text(text)
    (out / "compare.csv").write_text(tables.csv_text(*tables.comparison_csv(runs)))
    figures = {
        label: {"intervals": s.get("intervals") or {}, "paired_vs_first": paired.get(label)}
        for label, s in runs.items()
    }
    (out / "compare.json").write_text(json.dumps(figures, indent=2))
    tables.bar_plot(rows, out / "compare.png", "eval: runs compared")
    tables.radar_plot(rows, out / "radar.png", "eval: runs compared")
    return text


def html_main(run_dirs: List[Path], out: Optional[Path], pairwise: Optional[Path] = None) -> int:
    missing = [str(d) for d in run_dirs if not Path(d).is_dir()]
    if missing:
        print(f"deepwriter.report: no such run folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    found = None
    if pairwise is not None:
        path = pairwise / "pairwise.json" if pairwise.is_dir() else pairwise
        if not path.is_file():
            print(f"deepwriter.report: --pairwise {pairwise}: no pairwise.json there", file=sys.stderr)
            return 2
        found = json.loads(path.read_text())
    print(build_report(run_dirs, out, found))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deepwriter.report", description="Compare eval results of runs.")
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (or eval stage folders)")
    ap.add_argument("--out", type=Path, default=None, help="where the tables and plots go (default ./eval-report)")
    ap.add_argument("--html", action="store_true", help="write the browsable HTML report of the runs instead")
    ap.add_argument(
        "--pairwise",
        type=Path,
        default=None,
        help="with --html: the runs' pairwise result (python -m deepwriter.eval.pairwise --out DIR) shown too",
    )
    args = ap.parse_args(argv)
    if args.html:
        return html_main(args.runs, args.out, args.pairwise)
    args.out = args.out or Path("eval-report")
    released = released_comparison_md(args.runs)  # from the synthesize stage: shown without an eval too
    if released:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "released.md").write_text(released)
        print(released + "\n")
    try:
        runs = load_runs(args.runs)
    except FileNotFoundError as exc:
        print(f"deepwriter.report: {exc}", file=sys.stderr)
        return 0 if released else 2
    print(write_report(runs, args.out))
    print(f"written: {args.out}/compare.md, compare.csv, compare.png, radar.png")
    return 0

"""Compare eval results of several runs side by side.

    python -m deepwriter.report RUN_DIR [RUN_DIR ...] [--out DIR]
    python -m deepwriter.report --html RUN_DIR [RUN_DIR ...] [--out PATH]

A RUN_DIR is a run folder (runs/<recipe>/<run-id>, whose eval/ holds summary.json) or an eval stage
folder itself. Writes compare.md, compare.csv, compare.png (bars) and radar.png into --out (default
./eval-report) and prints the markdown table.

--html writes the browsable run report instead (deepwriter/viewer): for one run folder its
report.html (default RUN_DIR/report.html), for several a page with them side by side (default
./report.html), linked to each run's own report; prints the page's path.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from deepwriter.eval import tables


def find_summary(run_dir: Path) -> Path:
    for candidate in (run_dir / "summary.json", run_dir / "eval" / "summary.json"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{run_dir}: no summary.json here or in eval/ (has the eval stage finished?)")


def load_runs(run_dirs: List[Path]) -> Dict[str, Dict[str, Any]]:
    runs: Dict[str, Dict[str, Any]] = {}
    for d in run_dirs:
        summary = json.loads(find_summary(Path(d)).read_text())
        label = summary.get("label") or Path(d).name
        base, k = label, 2
        while label in runs:  # two runs with one label stay apart
            label, k = f"{base} ({k})", k + 1
        runs[label] = summary
    return runs


def write_report(runs: Dict[str, Dict[str, Any]], out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    rows = {label: s["headline"] for label, s in runs.items()}
    header, body = tables.comparison(rows)
    md = [tables.markdown_table(header, body), tables.SCALE_NOTE]
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
    (out / "compare.csv").write_text(tables.csv_text(header, body))
    tables.bar_plot(rows, out / "compare.png", "eval: runs compared")
    tables.radar_plot(rows, out / "radar.png", "eval: runs compared")
    return text


def html_main(run_dirs: List[Path], out: Optional[Path]) -> int:
    from deepwriter.viewer import build_report

    missing = [str(d) for d in run_dirs if not Path(d).is_dir()]
    if missing:
        print(f"deepwriter.report: no such run folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    print(build_report(run_dirs, out))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deepwriter.report", description="Compare eval results of runs.")
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (or eval stage folders)")
    ap.add_argument("--out", type=Path, default=None, help="where the tables and plots go (default ./eval-report)")
    ap.add_argument("--html", action="store_true", help="write the browsable HTML report of the runs instead")
    args = ap.parse_args(argv)
    if args.html:
        return html_main(args.runs, args.out)
    args.out = args.out or Path("eval-report")
    try:
        runs = load_runs(args.runs)
    except FileNotFoundError as exc:
        print(f"deepwriter.report: {exc}", file=sys.stderr)
        return 2
    print(write_report(runs, args.out))
    print(f"written: {args.out}/compare.md, compare.csv, compare.png, radar.png")
    return 0

"""Tables (markdown, CSV) and plots (PNG) of eval summaries, for one run or several side by side.

The headline table follows the REER paper's layout: LB, HB-A, HB-B, WB-A … WB-F (other entries, such
as the demo's own prompts, follow), all on 0–100 (WB ×10, as on its leaderboard); the per-benchmark
details keep each benchmark's native scale. Beside a run's table, the figures the paper reports
(eval/benchmarks/paper.py: its main table, and the ablation row the run's recipe reproduces), marked
as the paper's and never mixed into the run's own rows.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

from deepwriter.eval import stats
from deepwriter.eval.benchmarks import KINDS, paper
from deepwriter.eval.benchmarks.base import fmt, markdown_table  # noqa: F401  (the tables' cell format)

PAPER_COLUMNS = list(paper.COLUMNS)
SCALE_NOTE = "All on 0–100: LB = (S_l + S_q)/2; HB = raw weighted checklist score; WB = domain mean (1–10) ×10."
REPORTED_TITLE = "Reported in the REER paper (not this run)"


def definitions_note(summaries: List[Dict[str, Any]]) -> str:
    """The lines that define the columns of these runs' tables that a benchmark made up itself (HB-A and
    HB-B: HelloBench defines no groups), "" when there are none; runs that define a column differently
    each get their own line. Each benchmark says what its columns mean."""

    lines: List[str] = []
    for summary in summaries:
        for entry in summary.get("benchmarks", {}).values():
            module = KINDS.get(entry.get("kind"))
            for column, definition in (module.column_definitions(entry) if module else {}).items():
                line = f"{column} = {definition}."
                if line not in lines:
                    lines.append(line)
    return "\n".join(lines)


def columns_of(rows: Dict[str, Dict[str, Optional[float]]]) -> List[str]:
    seen = list(dict.fromkeys(c for row in rows.values() for c in row))
    return [c for c in PAPER_COLUMNS if c in seen] + [c for c in seen if c not in PAPER_COLUMNS]


def csv_text(header: List[str], rows: List[List[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows([["" if v is None else v for v in row] for row in rows])
    return buf.getvalue()


def comparison(rows: Dict[str, Dict[str, Optional[float]]]) -> tuple:
    """(header, rows) of runs (row label -> headline columns) side by side."""
    cols = columns_of(rows)
    return ["run"] + cols, [[label] + [row.get(c) for c in cols] for label, row in rows.items()]


INTERVAL_NOTE = (
    "In brackets: the 95% bootstrap interval (items resampled within their HelloBench subset or WritingBench "
    "domain, and each item's judgments too where eval.judge_samples > 1; deepwriter.eval.stats)."
)


def comparison_with_intervals(summaries: Dict[str, Dict[str, Any]]) -> tuple:
    """(header, rows) of runs side by side, each cell `figure [low, high]` where the run's summary has
    the figure's interval (an older summary without intervals: the figure alone)."""
    header, rows = comparison({label: s.get("headline") or {} for label, s in summaries.items()})
    out = []
    for row, summary in zip(rows, summaries.values()):
        ivs = summary.get("intervals") or {}
        cells = [
            stats.interval_text(v, (ivs.get(c) or {}).get("low"), (ivs.get(c) or {}).get("high"))
            for c, v in zip(header[1:], row[1:])
        ]
        out.append([row[0]] + cells)
    return header, out


def comparison_csv(summaries: Dict[str, Dict[str, Any]]) -> tuple:
    """(header, rows) for CSV: each column's figure, then its interval's low and high ends."""
    header, rows = comparison({label: s.get("headline") or {} for label, s in summaries.items()})
    cols = header[1:]
    wide = ["run"] + [f"{c}{suffix}" for c in cols for suffix in ("", " ci_low", " ci_high")]
    out = []
    for row, summary in zip(rows, summaries.values()):
        ivs = summary.get("intervals") or {}
        cells = []
        for c, v in zip(cols, row[1:]):
            cells += [v, (ivs.get(c) or {}).get("low"), (ivs.get(c) or {}).get("high")]
        out.append([row[0]] + cells)
    return wide, out


def interval_summary(summary: Dict[str, Any]) -> Dict[str, float]:
    """The intervals as W&B summary keys: eval/<column>_ci_low and eval/<column>_ci_high."""
    out = {}
    for col, iv in (summary.get("intervals") or {}).items():
        if iv.get("low") is not None:
            out[f"eval/{col}_ci_low"], out[f"eval/{col}_ci_high"] = iv["low"], iv["high"]
    return out


def detail_markdown(summary: Dict[str, Any]) -> str:
    """Per-benchmark breakdowns, each benchmark's own section (LB length buckets and dimensions, HB
    subsets and groups, WB domains and subdomains)."""

    parts = []
    for name, entry in summary["benchmarks"].items():
        s, kind = entry["summary"], entry["kind"]
        parts.append(f"## {name} ({kind})\n")
        parts.append(KINDS[kind].detail_markdown(s))
        parts.append(f"\nfailures (recorded, not scored): {s.get('failures', 0)}\n")
    return "\n".join(parts)


def recipe_of(summary: Dict[str, Any]) -> Optional[str]:
    """The recipe a run's eval summary belongs to (its own field, else the first part of its label)."""
    return summary.get("recipe") or (str(summary["label"]).split("/", 1)[0] if summary.get("label") else None)


def reported(summary: Dict[str, Any]) -> tuple:
    """(header, rows, notes) of the paper's figures to show beside this run: the main table and the
    ablation row its recipe reproduces, in the paper's columns; None where the paper's figure is not
    known (printed empty, never guessed)."""
    rows = paper.rows_for(recipe_of(summary))
    cols = list(paper.COLUMNS)  # all of the paper's columns: the ones no source quotes stay empty
    notes = [f"Source: {paper.PAPER}; figures as quoted by: " + "; ".join(paper.SOURCES) + "."]
    notes.append("An empty cell is a figure no source quotes.")
    return [REPORTED_TITLE] + cols, [[label] + [row.get(c) for c in cols] for label, row in rows.items()], notes


def reported_markdown(summary: Dict[str, Any]) -> str:
    header, rows, notes = reported(summary)
    table = markdown_table(header, [[r[0]] + ["" if v is None else v for v in r[1:]] for r in rows])
    return f"{table}\n" + "\n".join(notes) + "\n"


def reported_summary(summary: Dict[str, Any]) -> Dict[str, float]:
    """The paper's figures as W&B summary keys, `paper/<row>/<column>` (known figures only)."""
    header, rows, _ = reported(summary)
    out = {}
    for row in rows:
        name = row[0].split(": ", 1)[1]
        prefix = "paper_ablation" if row[0].startswith("paper ablation") else "paper"
        out.update({f"{prefix}/{name}/{c}": v for c, v in zip(header[1:], row[1:]) if v is not None})
    return out


def write_run_tables(summary: Dict[str, Any], folder: Path) -> Dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    runs = {summary.get("label", "run"): summary}
    header, rows = comparison_with_intervals(runs)
    notes = "\n".join(x for x in (SCALE_NOTE, INTERVAL_NOTE, definitions_note([summary])) if x)
    (folder / "paper.md").write_text(
        markdown_table(header, rows) + f"\n{notes}\n\n### {REPORTED_TITLE}\n\n" + reported_markdown(summary)
    )
    (folder / "paper.csv").write_text(csv_text(*comparison_csv(runs)))
    rheader, rrows, _ = reported(summary)
    (folder / "paper_reported.csv").write_text(csv_text(rheader, rrows))
    (folder / "details.md").write_text(detail_markdown(summary))
    return {
        "table_md": "tables/paper.md",
        "table_csv": "tables/paper.csv",
        "reported_csv": "tables/paper_reported.csv",
        "details_md": "tables/details.md",
    }


# --- plots ------------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_plot(rows: Dict[str, Dict[str, Optional[float]]], path: Path, title: str) -> None:
    plt = _plt()
    cols = columns_of(rows)
    fig, ax = plt.subplots(figsize=(max(5, 1.0 * len(cols) + 2), 3.5))
    width = 0.8 / max(1, len(rows))
    for j, (label, row) in enumerate(rows.items()):
        xs = [i + j * width for i in range(len(cols))]
        ax.bar(xs, [row.get(c) or 0.0 for c in cols], width=width, label=label)
    ax.set_xticks([i + width * (len(rows) - 1) / 2 for i in range(len(cols))])
    ax.set_xticklabels(cols, rotation=30, ha="right")
    ax.set_title(title)
    if len(rows) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def radar_plot(rows: Dict[str, Dict[str, Optional[float]]], path: Path, title: str) -> bool:
    """Headline columns (all 0–100); needs three columns or more to be a radar."""
    cols = columns_of(rows)
    if len(cols) < 3:
        return False
    plt = _plt()
    angles = [2 * math.pi * i / len(cols) for i in range(len(cols))] + [0.0]
    fig = plt.figure(figsize=(4.5, 4.5))
    ax = fig.add_subplot(111, polar=True)
    for label, row in rows.items():
        vals = [row.get(c) or 0.0 for c in cols]
        ax.plot(angles, vals + vals[:1], label=label)
        ax.fill(angles, vals + vals[:1], alpha=0.1)
    ax.set_xticks(angles[:-1])
    ax.set_xticklabels(cols, fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_title(title)
    if len(rows) > 1:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_run_plots(summary: Dict[str, Any], folder: Path) -> Dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    label = summary.get("label", "run")
    artifacts = {}
    bar_plot({label: summary["headline"]}, folder / "headline.png", "eval: headline scores")
    artifacts["plot_headline"] = "plots/headline.png"

    for name, entry in summary["benchmarks"].items():
        for chart in KINDS[entry["kind"]].breakdowns(entry["summary"]):
            if chart.plotted and chart.values:
                bar_plot({label: chart.values}, folder / f"{name}_{chart.key}.png", f"{name}: {chart.title}")
                artifacts[f"plot_{name}_{chart.key}"] = f"plots/{name}_{chart.key}.png"
    if radar_plot({label: summary["headline"]}, folder / "radar.png", "eval"):
        artifacts["plot_radar"] = "plots/radar.png"
    return artifacts

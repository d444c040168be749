"""The figures the REER paper reports (arXiv 2509.06160), kept as reference data and shown beside a run's
own results, always marked as the paper's: its main table (DeepWriter-8B and its baselines on LB,
HB-A, HB-B, WB-A … WB-F) and its ablation table, each row tied to the recipe that reproduces it.

None is a figure not known here: the paper itself could not be read from this project's sources, so
every figure below is taken from published summaries of it that quote its tables (SOURCES); a figure
none of them quotes is left empty rather than guessed. Scales as in the paper: LB 0–100, HB on the raw
weighted checklist scale, WB domain means ×10.
"""

from __future__ import annotations

from typing import Dict, Optional

COLUMNS = ["LB", "HB-A", "HB-B", "WB-A", "WB-B", "WB-C", "WB-D", "WB-E", "WB-F"]
PAPER = "Wang et al., Reverse-Engineered Reasoning for Open-Ended Generation, arXiv 2509.06160"
SOURCES = [
    "Paper note 'Reverse-Engineered Reasoning for Open-Ended Generation' (ICLR 2026): main table (LB, HB-A, HB-B, "
    "WB-A, WB-D, WB-F for six models) and ablation table (HB-B, WB-A, WB-D), quoting the paper",
    "Paper review (2025-09-09) quoting DeepWriter-8B's LongBench-Write 91.28 and HB-B 87.48 (the note above rounds "
    "them to 91.3 and 87.4; its ablation table gives the full model's HB-B as 87.5)",
]
# What no source quoted: WB-B, WB-C, WB-E of every model; LB and HB-A of the ablations; the
# no-literature ablation's row.

_ROW = Dict[str, Optional[float]]


def _row(values: Dict[str, float]) -> _ROW:
    return {c: values.get(c) for c in COLUMNS}


# The main table: model -> column -> figure.
MAIN: Dict[str, _ROW] = {
    "DeepWriter-8B": _row({"LB": 91.28, "HB-A": 82.6, "HB-B": 87.48, "WB-A": 72.2, "WB-D": 70.6, "WB-F": 72.3}),
    "GPT-4o": _row({"LB": 83.1, "HB-A": 83.7, "HB-B": 87.6, "WB-A": 74.4, "WB-D": 77.9, "WB-F": 78.0}),
    "Claude-3.5-Sonnet": _row({"LB": 89.3, "HB-A": 82.9, "HB-B": 88.3, "WB-A": 59.1, "WB-D": 59.3, "WB-F": 67.7}),
    "Claude-3.7-Sonnet": _row({"LB": 97.8, "HB-A": 83.9, "HB-B": 93.2, "WB-A": 78.2, "WB-D": 79.3, "WB-F": 80.8}),
    "Qwen3-8B": _row({"LB": 85.2, "HB-A": 81.4, "HB-B": 85.3, "WB-A": 68.7, "WB-D": 67.2, "WB-F": 71.3}),
    "LongWriter-8B": _row({"LB": 76.5, "HB-A": 80.1, "HB-B": 82.6, "WB-A": 57.9, "WB-D": 52.0, "WB-F": 52.0}),
}

# The ablation table: recipe -> (the paper's row name, column -> figure).
ABLATIONS: Dict[str, tuple] = {
    "full": ("DeepWriter-8B (full)", _row({"HB-B": 87.5, "WB-A": 72.2, "WB-D": 70.6})),
    "ablation-no-synthetic": ("− synthetic data", _row({"HB-B": 73.7, "WB-A": 63.4, "WB-D": 57.7})),
    "ablation-no-search": ("− iterative search", _row({"HB-B": 84.4, "WB-A": 66.7, "WB-D": 65.6})),
    "ablation-no-reflection": ("− reflection tokens", _row({"HB-B": 82.8, "WB-A": 71.6, "WB-D": 62.0})),
    # the paper's "downsample long trajectories" keeps the short ones, and the other way round
    "ablation-short-trajectories": ("− long trajectories", _row({"HB-B": 84.0, "WB-A": 69.6, "WB-D": 67.5})),
    "ablation-long-trajectories": ("− short trajectories", _row({"HB-B": 82.1, "WB-A": 70.8, "WB-D": 66.9})),
    "ablation-no-literature": ("− literature & arts", _row({})),
}


def rows_for(recipe: Optional[str]) -> Dict[str, _ROW]:
    """The paper's rows to show beside a run of `recipe`: its main table, and the ablation row that the
    recipe reproduces (if any), each labelled as the paper's."""
    out = {f"paper: {model}": row for model, row in MAIN.items()}
    if recipe in ABLATIONS:
        name, row = ABLATIONS[recipe]
        out[f"paper ablation: {name}"] = row
    return out

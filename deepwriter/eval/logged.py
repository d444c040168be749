"""Run comparisons as W&B figures: flat summary keys, each figure with its 95% interval beside it.

- paired ablation differences (deepwriter.eval.paired_runs, the ablation table's Δ columns):
  `paired/<run> - <reference>/<column>` the difference, with `_ci_low`, `_ci_high`, `_p` (the paired
  permutation test) and `_n` (items both runs scored);
- pairwise judging (deepwriter.eval.pairwise): `pairwise/<X vs Y>/win_rate` and `lc_win_rate` with
  their intervals, `flip_rate`, `n`; `pairwise/bradley_terry/<run>` with its interval; the overall
  `pairwise/flip_rate`; per panel judge `pairwise/panel/<label>/kappa` and `flip_rate`.

A figure without a value (an interval that could not be had) is left out, never logged as 0.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple


def _put(out: Dict[str, float], key: str, value: Optional[float]) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        out[key] = value


def paired_summary(paired: Dict[str, Dict[str, Dict[str, Any]]], reference: str) -> Dict[str, float]:
    """{run: {column: Paired.as_dict()}} against `reference` as flat W&B summary keys."""
    out: Dict[str, float] = {}
    for run, columns in paired.items():
        for column, p in (columns or {}).items():
            key = f"paired/{run} - {reference}/{column}"
            _put(out, key, p.get("diff"))
            _put(out, key + "_ci_low", p.get("low"))
            _put(out, key + "_ci_high", p.get("high"))
            _put(out, key + "_p", p.get("p_value"))
            _put(out, key + "_n", p.get("n"))
    return out


def pairwise_summary(res: Dict[str, Any]) -> Dict[str, float]:
    """A pairwise.compare_runs result as flat W&B summary keys."""
    out: Dict[str, float] = {}
    _put(out, "pairwise/flip_rate", res.get("flip_rate"))
    _put(out, "pairwise/comparisons", res.get("comparisons"))
    for pair, p in res.get("pairs", {}).items():
        key = f"pairwise/{pair}"
        for figure in ("win_rate", "lc_win_rate"):
            _put(out, f"{key}/{figure}", p.get(figure))
            low, high = p.get(f"{figure}_ci") or (None, None)
            _put(out, f"{key}/{figure}_ci_low", low)
            _put(out, f"{key}/{figure}_ci_high", high)
        _put(out, f"{key}/flip_rate", p.get("flip_rate"))
        _put(out, f"{key}/n", p.get("n"))
    for run, r in res.get("bradley_terry", {}).items():
        _put(out, f"pairwise/bradley_terry/{run}", r.get("rating"))
        _put(out, f"pairwise/bradley_terry/{run}_ci_low", r.get("low"))
        _put(out, f"pairwise/bradley_terry/{run}_ci_high", r.get("high"))
    for label, p in (res.get("panel") or {}).items():
        _put(out, f"pairwise/panel/{label}/kappa", p["vs_judge"].get("kappa"))
        _put(out, f"pairwise/panel/{label}/flip_rate", p.get("flip_rate"))
    return out


def pairwise_table(res: Dict[str, Any]) -> Tuple[List[str], List[list]]:
    """The pairs as one W&B table: win rates with their intervals, ties, flips."""
    columns = ["pair", "n", "win_rate", "win_low", "win_high", "lc_win_rate", "lc_low", "lc_high", "flip_rate"]
    rows = [
        [pair, p["n"], p["win_rate"], *p["win_rate_ci"], p["lc_win_rate"], *p["lc_win_rate_ci"], p["flip_rate"]]
        for pair, p in res.get("pairs", {}).items()
        if p.get("n")
    ]
    return columns, rows

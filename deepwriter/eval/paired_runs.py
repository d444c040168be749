"""Two runs' eval results compared item by item, from their eval folders (summary.json beside items/).

For every headline column both runs have: the paired difference A − B on the items both scored, its
95% bootstrap interval and a paired permutation test (deepwriter.eval.stats), each benchmark's figure
by its own formula. A run whose summary predates intervals gets them here, from its items.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

from deepwriter.config.eval import BenchmarkConfig, HelloBenchConfig
from deepwriter.eval import stats
from deepwriter.eval.benchmarks import KINDS

log = logging.getLogger("deepwriter.eval.paired_runs")


def _entry_config(entry: Dict[str, Any]) -> BenchmarkConfig:
    """Enough of a benchmark's config to recompute its figures: its kind and its groups as the run
    defined them (HelloBench's HB-A / HB-B)."""
    defs = (entry.get("summary") or {}).get("group_definitions") or {}
    if defs:
        return HelloBenchConfig(kind=entry["kind"], groups={g: list(m) for g, m in defs.items()})
    return BenchmarkConfig(kind=entry["kind"])


def _records(folder: Path, name: str) -> Optional[List[Dict[str, Any]]]:
    f = Path(folder) / "items" / f"{name}.jsonl"
    if not f.is_file():
        return None
    with open(f, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _benchmarks(summary: Dict[str, Any]):
    for name, entry in (summary.get("benchmarks") or {}).items():
        if entry.get("kind") in KINDS:
            yield name, entry, KINDS[entry["kind"]]


def with_intervals(summary: Dict[str, Any], folder: Optional[Path], resamples: int = 1000) -> Dict[str, Any]:
    """The summary, with every headline figure's interval: its own, or computed from its items."""
    if summary.get("intervals") or folder is None:
        return summary
    intervals: Dict[str, Any] = {}
    for name, entry, module in _benchmarks(summary):
        records = _records(folder, name)
        if records is None:
            continue
        bcfg = _entry_config(entry)
        try:
            found = stats.bootstrap(
                records, stats.headline_statistic(name, module, bcfg), stats.strata_of(module, records), resamples
            )
        except (KeyError, TypeError, ValueError) as exc:  # items its benchmark cannot score (hand-made, older)
            log.warning("%s/items/%s.jsonl: no intervals, its records do not score (%r)", folder, name, exc)
            continue
        intervals.update({k: v.as_dict() for k, v in found.items()})
    return {**summary, "intervals": intervals}


def compare(
    summary_a: Dict[str, Any], folder_a: Path, summary_b: Dict[str, Any], folder_b: Path, resamples: int = 1000
) -> Dict[str, Dict[str, Any]]:
    """{column: Paired.as_dict()} of run A against run B, for each benchmark both ran (by entry name
    and kind) whose items are on disk."""
    out: Dict[str, Dict[str, Any]] = {}
    other = {name: entry for name, entry, _ in _benchmarks(summary_b)}
    for name, entry, module in _benchmarks(summary_a):
        if name not in other or other[name].get("kind") != entry["kind"]:
            continue
        a, b = _records(folder_a, name), _records(folder_b, name)
        if a is None or b is None:
            continue
        statistic = stats.headline_statistic(name, module, _entry_config(entry))
        try:
            found = stats.paired(a, b, statistic, getattr(module, "STRATUM", None), resamples)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("%s: no paired comparison with %s, its records do not score (%r)", name, folder_b, exc)
            continue
        out.update({k: v.as_dict() for k, v in found.items()})
    return out

"""How sure a figure is: bootstrap intervals of headline figures, and paired comparisons of two runs.

Every figure here is computed by the benchmark's own formula (a `statistic`: item records -> {column:
value}), applied to resampled records, so an interval means the same thing as the figure it is on,
whatever the formula (LongBench-Write's S, HelloBench's mean of subset means, WritingBench's domain
means).

- Items are resampled within their stratum (HelloBench's subset, WritingBench's domain: a benchmark
  module's `STRATUM` field), because a mean of stratum means has fixed stratum sizes by design; the
  percentile interval of the resampled figures is reported. scipy's `bootstrap` has no strata, so the
  draws are made here, with numpy.
- An item judged several times (`eval.judge_samples` > 1) carries each judgment's scores in
  `judge_samples`; a resample then also draws that many judgments of the item, with replacement, and
  scores their mean (a two-level bootstrap: over items and judge samples).
- Two runs are compared on the items both answered: the paired difference (A − B) of the figure, its
  interval from resampling those items (the same draw for both runs), and the two-sided p-value of a
  paired permutation test (scipy.stats.permutation_test: each item's two records swapped at random).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from deepwriter.config.eval import BenchmarkConfig

CONFIDENCE = 0.95
Records = List[Dict[str, Any]]
Statistic = Callable[[Records], Dict[str, Optional[float]]]


@dataclass
class Interval:
    """A figure with its 95% bootstrap interval, over `n` items (and `samples` judgments per item)."""

    estimate: Optional[float]
    low: Optional[float]
    high: Optional[float]
    n: int
    samples: int = 1

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        return interval_text(self.estimate, self.low, self.high)


@dataclass
class Paired:
    """A paired difference A − B over the `n` items both runs scored: interval and permutation p-value."""

    a: Optional[float]
    b: Optional[float]
    diff: Optional[float]
    low: Optional[float]
    high: Optional[float]
    p_value: Optional[float]
    n: int

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (at 95%)."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def interval_text(estimate: Optional[float], low: Optional[float], high: Optional[float]) -> str:
    if estimate is None:
        return "–"
    if low is None or high is None:
        return f"{estimate:.2f}"
    return f"{estimate:.2f} [{low:.2f}, {high:.2f}]"


def paired_text(p: Dict[str, Any]) -> str:
    """`+1.20 [−0.30, 2.70] p=0.12`, with `*` where the interval excludes 0."""
    if p.get("diff") is None:
        return "–"
    mark = "*" if Paired(**p).significant else ""
    pv = "" if p.get("p_value") is None else f" p={p['p_value']:.3g}"
    return f"{p['diff']:+.2f}{mark} [{p['low']:+.2f}, {p['high']:+.2f}]{pv}"


# --- judge samples ----------------------------------------------------------------------------------


def merge_samples(samples: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """One record from several judgments of an item: every number the mean over the judgments (in
    lists and dicts too, element by element); anything else as the first judgment has it."""
    first = samples[0]
    if all(_is_number(s) for s in samples):
        return sum(samples) / len(samples)  # type: ignore[return-value]
    if isinstance(first, dict) and all(isinstance(s, dict) for s in samples):
        shared = {k for k in first if all(k in s for s in samples)}
        return {k: merge_samples([s[k] for s in samples]) if k in shared else v for k, v in first.items()}
    if isinstance(first, list) and all(isinstance(s, list) and len(s) == len(first) for s in samples):
        return [merge_samples([s[i] for s in samples]) for i in range(len(first))]
    return first


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _judgment_draw(record: Dict[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
    """The item as scored from a resample of its judgments (itself when judged once)."""
    samples = record.get("judge_samples")
    if not samples or len(samples) < 2:
        return record
    picks = rng.integers(0, len(samples), len(samples))
    return {**record, **merge_samples([samples[i] for i in picks])}


# --- resampling ---------------------------------------------------------------------------------------


def _strata_indices(strata: Sequence[Any]) -> List[np.ndarray]:
    groups: Dict[Any, List[int]] = {}
    for i, s in enumerate(strata):
        groups.setdefault(s, []).append(i)
    return [np.asarray(g) for g in groups.values()]


def _draw(groups: List[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])


def _percentiles(values: List[Optional[float]]) -> tuple:
    vals = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if len(vals) < max(10, len(values) // 2):  # too few resamples had the figure at all
        return None, None
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(vals, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap(
    records: Records,
    statistic: Statistic,
    strata: Optional[Sequence[Any]] = None,
    resamples: int = 1000,
    seed: int = 0,
) -> Dict[str, Interval]:
    """Each column of `statistic(records)` with its percentile interval over `resamples` stratified
    resamples of the records (and of each record's judge samples)."""
    point = statistic(records)
    n = len(records)
    samples = max([len(r.get("judge_samples") or []) for r in records] + [1])
    if n < 2 or resamples < 1:
        return {k: Interval(v, None, None, n, samples) for k, v in point.items()}
    rng = np.random.default_rng(seed)
    groups = _strata_indices(strata if strata is not None else [0] * n)
    draws: Dict[str, List[Optional[float]]] = {k: [] for k in point}
    for _ in range(resamples):
        stat = statistic([_judgment_draw(records[i], rng) for i in _draw(groups, rng)])
        for k in draws:
            draws[k].append(stat.get(k))
    return {
        k: Interval(point[k], *(_percentiles(draws[k]) if point[k] is not None else (None, None)), n, samples)
        for k in point
    }


def paired(
    records_a: Records,
    records_b: Records,
    statistic: Statistic,
    stratum: Optional[str] = None,
    resamples: int = 1000,
    seed: int = 0,
) -> Dict[str, Paired]:
    """Run A against run B on the items (by `id`) both scored: per column, the paired difference of
    the figure, its bootstrap interval and a two-sided paired permutation test."""
    from scipy.stats import permutation_test

    by_id_b = {r["id"]: r for r in records_b}
    a = [r for r in records_a if r["id"] in by_id_b]
    b = [by_id_b[r["id"]] for r in a]
    n = len(a)
    fa, fb = statistic(a), statistic(b)
    cols = [k for k in fa if k in fb]
    diff = {k: None if fa[k] is None or fb[k] is None else fa[k] - fb[k] for k in cols}
    if n < 2 or resamples < 1:
        return {k: Paired(fa[k], fb[k], diff[k], None, None, None, n) for k in cols}
    rng = np.random.default_rng(seed)
    groups = _strata_indices([r.get(stratum) for r in a] if stratum else [0] * n)
    draws: Dict[str, List[Optional[float]]] = {k: [] for k in cols}
    for _ in range(resamples):
        idx = _draw(groups, rng)
        sa = statistic([_judgment_draw(a[i], rng) for i in idx])
        sb = statistic([_judgment_draw(b[i], rng) for i in idx])
        for k in cols:
            draws[k].append(None if sa.get(k) is None or sb.get(k) is None else sa[k] - sb[k])
    # the permutation test swaps the two runs' records of an item; records are passed as indices into
    # a + b so scipy can swap them (permutation_type="samples": pairs stay pairs)
    both = a + b
    p_values: Dict[str, Optional[float]] = {}
    for k in cols:
        if diff[k] is None:
            p_values[k] = None
            continue

        def delta(x, y, k=k):
            va, vb = statistic([both[i] for i in x]).get(k), statistic([both[i] for i in y]).get(k)
            return 0.0 if va is None or vb is None else va - vb

        res = permutation_test(
            (np.arange(n), np.arange(n) + n),
            delta,
            permutation_type="samples",
            vectorized=False,
            n_resamples=resamples,
            alternative="two-sided",
            random_state=np.random.default_rng(seed + 1),
        )
        p_values[k] = float(res.pvalue)
    out = {}
    for k in cols:
        low, high = _percentiles(draws[k]) if diff[k] is not None else (None, None)
        out[k] = Paired(fa[k], fb[k], diff[k], low, high, p_values[k], n)
    return out


# --- a benchmark's figures ------------------------------------------------------------------------------


def headline_statistic(name: str, module: Any, bcfg: Optional[BenchmarkConfig]) -> Statistic:
    """The benchmark's headline columns from item records, by its own formulas."""
    return lambda records: module.headline(name, module.summarize(records, bcfg))


def strata_of(module: Any, records: Records) -> Optional[List[Any]]:
    field = getattr(module, "STRATUM", None)
    return [r.get(field) for r in records] if field else None

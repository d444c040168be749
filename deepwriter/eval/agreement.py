"""How far judgments of the same answers agree: Krippendorff's α (the `krippendorff` package) on the
item scores of several judgments, and the items on which they disagree most.

Here the judgments are a run's judge samples (`eval.judge_samples` > 1: the same judge asked again
with another seed), so α is the judge's agreement with itself: 1 when every judgment of an item
gives the same score, 0 when the judgments agree no more than chance would have them. Scores are
compared on an interval scale. With a judge panel (eval.panel) the judgments are the panel's
judges, one score each per item (of_panel); on pairwise verdicts, two judges' agreement is Cohen's κ.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import numpy as np

# the judged score of an item record, by benchmark: HelloBench's and WritingBench's `score`,
# LongBench-Write's quality score S_q (its S_l is counted, not judged)
SCORE_FIELDS = ("score", "S_q")
MOST_DISAGREED = 5


def judged_score(record: Dict[str, Any]) -> Optional[float]:
    for key in SCORE_FIELDS:
        v = record.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def alpha(ratings: List[List[Optional[float]]]) -> Optional[float]:
    """Krippendorff's α (interval) of `ratings`, one row per judgment (rater), one column per item;
    None where a score is missing. None when it is undefined (fewer than two judged items, or no
    variation at all)."""
    import krippendorff

    data = np.array([[np.nan if v is None else v for v in row] for row in ratings], dtype=float)
    pairable = np.sum(~np.isnan(data), axis=0) >= 2
    if data.shape[0] < 2 or pairable.sum() < 2 or np.nanstd(data[:, pairable]) == 0:
        return None
    value = float(krippendorff.alpha(reliability_data=data[:, pairable], level_of_measurement="interval"))
    return None if math.isnan(value) else value


def of_judge_samples(records: List[Dict[str, Any]], top: int = MOST_DISAGREED) -> Optional[Dict[str, Any]]:
    """α over the items' judge samples and the `top` items whose judgments spread most; None when the
    items were judged once."""
    judged = [r for r in records if len(r.get("judge_samples") or []) >= 2]
    if not judged:
        return None
    raters = max(len(r["judge_samples"]) for r in judged)
    ratings = [
        [judged_score(r["judge_samples"][k]) if k < len(r["judge_samples"]) else None for r in judged]
        for k in range(raters)
    ]
    spreads = []
    for r in judged:
        scores = [s for s in (judged_score(j) for j in r["judge_samples"]) if s is not None]
        if scores:
            spreads.append({"id": r["id"], "spread": max(scores) - min(scores), "scores": scores})
    spreads.sort(key=lambda d: -d["spread"])
    return {
        "alpha": alpha(ratings),
        "items": len(judged),
        "judgments_per_item": raters,
        "mean_spread": sum(d["spread"] for d in spreads) / len(spreads) if spreads else None,
        "most_disagreed": spreads[:top],
    }


def of_panel(records: List[Dict[str, Any]], top: int = MOST_DISAGREED) -> Optional[Dict[str, Any]]:
    """α across a judge panel's judges (models.judge's score, then each of `panel` in the records) and
    the `top` items on which their scores spread most; None without a panel."""
    labels: List[str] = []
    for r in records:
        labels += [k for k in r.get("panel") or {} if k not in labels]
    if not labels:
        return None
    judges = ["judge", *labels]

    def row(r):
        return [judged_score(r), *((r.get("panel") or {}).get(k) for k in labels)]

    ratings = list(zip(*[row(r) for r in records])) if records else []
    spreads = []
    for r in records:
        by_judge = {j: s for j, s in zip(judges, row(r)) if s is not None}
        if len(by_judge) >= 2:
            spread = max(by_judge.values()) - min(by_judge.values())
            spreads.append({"id": r["id"], "spread": spread, "scores": by_judge})
    spreads.sort(key=lambda d: -d["spread"])
    return {
        "judges": judges,
        "alpha": alpha([list(r) for r in ratings]) if ratings else None,
        "items": len(spreads),
        "mean_spread": sum(d["spread"] for d in spreads) / len(spreads) if spreads else None,
        "most_disagreed": spreads[:top],
    }


def cohen_kappa(a: List[Any], b: List[Any]) -> Optional[float]:
    """Cohen's κ of two judges' categorical verdicts on the same comparisons (a[i] and b[i] judge the
    same one): 1 for full agreement, 0 for what chance alone gives. None when undefined (no verdicts,
    or both judges always giving one and the same verdict). Written out here: a dozen lines, where the
    libraries that have it (scikit-learn, statsmodels) are not among this project's dependencies."""
    n = len(a)
    if n == 0 or n != len(b):
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    chance = sum((a.count(c) / n) * (b.count(c) / n) for c in set(a) | set(b))
    return None if chance >= 1.0 else (observed - chance) / (1.0 - chance)

"""Intervals and paired comparisons (deepwriter.eval.stats) on data whose answer is known, and on the
real judgments HelloBench published for GPT-4o and Claude-3.5-Sonnet."""

from __future__ import annotations

import numpy as np
import pytest

from deepwriter.eval import stats


def _mean_of(records):
    vals = [r["score"] for r in records]
    return {"S": sum(vals) / len(vals)}


def _mean_of_stratum_means(records):
    by = {}
    for r in records:
        by.setdefault(r["stratum"], []).append(r["score"])
    return {"S": sum(sum(v) / len(v) for v in by.values()) / len(by)}


def test_interval_of_a_mean_has_the_textbook_width_and_covers_the_truth():
    rng = np.random.default_rng(1)
    records = [{"id": str(i), "score": float(x)} for i, x in enumerate(rng.normal(70.0, 10.0, 400))]
    iv = stats.bootstrap(records, _mean_of, resamples=1000)["S"]
    assert iv.low < 70.0 < iv.high and iv.low < iv.estimate < iv.high
    # the normal-theory 95% half-width, 1.96·σ/√n ≈ 0.98
    assert (iv.high - iv.low) / 2 == pytest.approx(1.96 * 10.0 / 400**0.5, rel=0.15)
    assert iv.n == 400 and iv.samples == 1


def test_items_are_resampled_within_their_stratum():
    # every resample keeps each stratum's size (HelloBench's subsets, WritingBench's domains are fixed
    # by the benchmark): a figure that depends on the sizes does not move; pooled resampling moves it
    records = [{"id": f"a{i}", "stratum": "a", "score": 20.0 + (i % 3)} for i in range(10)]
    records += [{"id": f"b{i}", "stratum": "b", "score": 80.0 + (i % 3)} for i in range(90)]
    strata = [r["stratum"] for r in records]

    def share_and_means(rs):
        return {"share_a": sum(r["stratum"] == "a" for r in rs) / len(rs), **_mean_of_stratum_means(rs)}

    within = stats.bootstrap(records, share_and_means, strata, resamples=300)
    assert within["share_a"].low == within["share_a"].high == 0.1
    assert within["S"].low < within["S"].estimate < within["S"].high < within["S"].low + 1.0
    pooled = stats.bootstrap(records, share_and_means, None, resamples=300)
    assert pooled["share_a"].high - pooled["share_a"].low > 0.05


def test_judge_samples_widen_the_interval_as_a_second_level_of_resampling():
    rng = np.random.default_rng(2)
    records = []
    for i in range(60):
        judgments = [{"score": float(v)} for v in rng.normal(70.0, 15.0, 3)]  # a noisy judge, 3 samples
        records.append({"id": str(i), **stats.merge_samples(judgments), "judge_samples": judgments})
    both = stats.bootstrap(records, _mean_of, resamples=400)["S"]
    items_only = stats.bootstrap(
        [{k: v for k, v in r.items() if k != "judge_samples"} for r in records], _mean_of, resamples=800
    )["S"]
    assert both.samples == 3 and items_only.samples == 1
    assert both.estimate == pytest.approx(items_only.estimate)
    assert (both.high - both.low) > 1.15 * (items_only.high - items_only.low)


def test_merge_samples_averages_every_number_in_place():
    merged = stats.merge_samples(
        [
            {"score": 1.0, "dims": {"a": 2, "b": 4}, "scores": [0.0, 1.0], "subset": "chat", "ok": True},
            {"score": 3.0, "dims": {"a": 4, "b": 6}, "scores": [1.0, 1.0], "subset": "chat", "ok": False},
        ]
    )
    assert merged == {"score": 2.0, "dims": {"a": 3.0, "b": 5.0}, "scores": [0.5, 1.0], "subset": "chat", "ok": True}


def test_paired_difference_sees_a_small_shift_that_item_spread_would_hide():
    # items differ a lot from each other (σ 15), run A beats run B by 1 point on every item (± 0.5):
    # unpaired, the two intervals overlap almost entirely; paired, the difference is plainly not 0
    rng = np.random.default_rng(3)
    base = rng.normal(70.0, 15.0, 200)
    a = [{"id": str(i), "score": float(x + 1.0 + rng.normal(0, 0.5))} for i, x in enumerate(base)]
    b = [{"id": str(i), "score": float(x)} for i, x in enumerate(base)]
    b_shuffled = list(reversed(b))  # pairing is by id, not by position
    p = stats.paired(a, b_shuffled, _mean_of, resamples=300)["S"]
    assert p.n == 200 and p.diff == pytest.approx(1.0, abs=0.15)
    assert 0.7 < p.low < p.diff < p.high < 1.3 and p.significant
    assert p.p_value < 0.01
    ia, ib = stats.bootstrap(a, _mean_of, resamples=300)["S"], stats.bootstrap(b, _mean_of, resamples=300)["S"]
    assert ia.low < ib.high  # side by side the runs cannot be told apart
    assert stats.paired_text(p.as_dict()).startswith("+1.0") and "*" in stats.paired_text(p.as_dict())


def test_paired_runs_that_are_the_same_do_not_differ_and_only_common_items_count():
    rng = np.random.default_rng(4)
    a = [{"id": str(i), "score": float(x)} for i, x in enumerate(rng.normal(50, 10, 50))]
    b = [dict(r) for r in a[:40]] + [{"id": "extra", "score": 100.0}]
    p = stats.paired(a, b, _mean_of, resamples=300)["S"]
    assert p.n == 40 and p.diff == 0.0 and p.low == 0.0 and p.high == 0.0
    assert p.p_value == pytest.approx(1.0) and not p.significant


def test_krippendorff_alpha_of_judge_samples_and_the_items_they_disagree_on():
    from deepwriter.eval import agreement

    rng = np.random.default_rng(5)
    levels = rng.uniform(20, 90, 50)

    def records(noise):
        out = []
        for i, level in enumerate(levels):
            judgments = [{"score": float(level + rng.normal(0, noise))} for _ in range(3)]
            out.append({"id": str(i), **stats.merge_samples(judgments), "judge_samples": judgments})
        return out

    steady, shaky = agreement.of_judge_samples(records(1.0)), agreement.of_judge_samples(records(40.0))
    assert steady["alpha"] > 0.95 and shaky["alpha"] < 0.5 and steady["items"] == 50
    assert steady["judgments_per_item"] == 3 and len(shaky["most_disagreed"]) == 5
    spreads = [d["spread"] for d in shaky["most_disagreed"]]
    assert spreads == sorted(spreads, reverse=True) and spreads[0] > shaky["mean_spread"]
    # textbook case (Krippendorff 2011, interval data without missing values): identical raters -> 1
    assert agreement.alpha([[1, 2, 3, 4], [1, 2, 3, 4]]) == pytest.approx(1.0)
    assert agreement.of_judge_samples([{"id": "a", "score": 1.0}]) is None  # judged once: no agreement to tell


@pytest.mark.slow  # ~15 s: 647 items × 2 models, bootstrap and permutation over the real judgments
def test_hellobench_published_gpt4o_claude_gap_on_hb_a_does_not_hold_up(shared_dir):
    """The REER paper ranks GPT-4o over Claude-3.5-Sonnet on HB-A by 0.8 points. From HelloBench's
    published judgments of both: each figure with its interval, and their paired difference, whose
    interval holds 0."""
    from deepwriter.eval.published import hellobench_intervals

    hb = shared_dir / "benchmarks" / "hellobench"
    res = hellobench_intervals(hb / "judgements" / "gpt4o_0806", hb / "judgements" / "claude35", hb, resamples=1000)
    a, b, p = res["a"], res["b"], res["paired"]
    assert res["skipped"] == {"a": 0, "b": 0} and p["HB-A"].n == 647
    assert a["HB-A"].estimate == pytest.approx(84.07, abs=0.01) and b["HB-A"].estimate == pytest.approx(82.93, abs=0.01)
    # the paper's own figures lie inside the intervals of the rescored published judgments
    assert a["HB-A"].low < 83.7 < a["HB-A"].high and b["HB-A"].low < 82.9 < b["HB-A"].high
    assert a["HB-B"].low < 87.6 < a["HB-B"].high and b["HB-B"].low < 88.3 < b["HB-B"].high
    # each model's interval is about ±1.3 (HB-A) and ±0.9 (HB-B) points wide
    assert 2.0 < a["HB-A"].high - a["HB-A"].low < 3.5 and 1.2 < a["HB-B"].high - a["HB-B"].low < 2.4
    # the HB-A gap: +1.1 rescored (0.8 in the paper), its interval holds 0; permutation test agrees
    gap = p["HB-A"]
    assert gap.diff == pytest.approx(1.14, abs=0.01) and gap.low < 0 < gap.high and not gap.significant
    assert gap.p_value > 0.05
    # pairing on the same prompts narrows the interval of the difference below the unpaired one's
    unpaired = ((a["HB-A"].high - a["HB-A"].low) ** 2 + (b["HB-A"].high - b["HB-A"].low) ** 2) ** 0.5
    assert gap.high - gap.low < 0.9 * unpaired
    assert p["HB-B"].low < 0 < p["HB-B"].high

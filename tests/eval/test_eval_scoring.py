"""The benchmarks' formulas on hand-computed cases, their loaders on fixtures and on the real data."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepwriter.config.eval import BenchmarkConfig, EvalConfig
from deepwriter.eval.benchmarks import BenchmarkDataError, benchmark_prompts, load_items
from deepwriter.eval.benchmarks import hellobench as hb
from deepwriter.eval.benchmarks import longbench_write as lb
from deepwriter.eval.benchmarks import writingbench as wb
from deepwriter.eval.benchmarks.base import Item, JudgeOutcome
from deepwriter.testing.repo import FIXTURES

FIX = FIXTURES / "bench"


# --- LongBench-Write ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "required, produced, expected",
    [
        (100, 100, 100.0),
        (100, 200, 100 * (1 - 1 / 3)),  # over: (l/r - 1)/3
        (100, 400, 0.0),
        (100, 700, 0.0),  # clipped at 0
        (100, 50, 50.0),  # under: (r/l - 1)/2
        (100, 80, 100 * (1 - 0.25 / 2)),
        (100, 25, 0.0),
        (100, 0, 0.0),  # nothing written
    ],
)
def test_length_score_hand_computed(required, produced, expected):
    assert lb.length_score(required, produced) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hello, world!", 2),
        ("你好世界", 4),
        ("Hello 你好 world 世界 123 abc-def", 8),  # 4 CJK + Hello, world, abc, def; digits do not count
        ("it's", 2),  # the authors' regex splits at the apostrophe
        ("中文English", 2),  # no word boundary between CJK and Latin letters: only the CJK count
        ("", 0),
    ],
)
def test_length_counts_cjk_characters_plus_english_words(text, expected):
    assert lb.count_length(text) == expected


def test_quality_score_rescales_each_dimension_then_averages():
    dims = dict(zip(lb.DIMENSIONS, [5, 4, 3, 2, 1, 5]))
    assert lb.quality_score(dims) == pytest.approx((100 + 75 + 50 + 25 + 0 + 100) / 6)
    with pytest.raises(ValueError, match="breadth_and_depth"):
        lb.quality_score({d: 4 for d in lb.DIMENSIONS if d != "breadth_and_depth"})


def _outcome(key, values, ok=True, error=None):
    return JudgeOutcome("x", key, ok=ok, values=values, error=error)


def test_longbench_aggregate_and_buckets():
    items = [
        Item("lb", "a", "p", {"length": 100}),
        Item("lb", "b", "p", {"length": 100}),
        Item("lb", "c", "p", {"length": 3000}),
        Item("lb", "d", "p", {"length": 5000}),
    ]
    answers = ["word " * 100, "word " * 50, "word " * 3000, "word " * 5000]
    outs = [
        {"quality": _outcome("quality", {d: 5.0 for d in lb.DIMENSIONS})},
        {"quality": _outcome("quality", {d: 3.0 for d in lb.DIMENSIONS})},
        {"quality": _outcome("quality", {}, ok=False, error="bad reply: relevance: missing")},
        {},
    ]
    recs = [lb.score_item(i, a, o) for i, a, o in zip(items, answers, outs)]
    assert [r["S_l"] for r in recs] == pytest.approx([100, 50, 100, 100])
    assert recs[2]["failure"].startswith("bad reply") and "S_q" not in recs[2]
    assert recs[3]["failure"] == "not judged"
    s = lb.aggregate(recs)
    assert s["S_l"] == pytest.approx(87.5)  # every item has a length score
    assert s["S_q"] == pytest.approx(75.0)  # dimension means 4 -> 75; failed items are not defaulted
    assert s["S"] == pytest.approx((87.5 + 75) / 2)
    assert (s["n"], s["judged"], s["failures"]) == (4, 2, 2)
    assert set(s["buckets"]) == {"<500", "2k-4k", ">=4k"}
    assert s["buckets"]["<500"]["S"] == pytest.approx(75.0)
    assert s["buckets"]["2k-4k"]["S_q"] is None and s["buckets"]["2k-4k"]["S"] is None
    assert lb.headline("longbench_write", s) == {"LB": s["S"]}
    assert [lb.bucket_of(n) for n in (1, 499, 500, 1999, 2000, 3999, 4000)] == [
        "<500",
        "<500",
        "500-2k",
        "500-2k",
        "2k-4k",
        "2k-4k",
        ">=4k",
    ]


def test_longbench_loader_reads_string_lengths_and_names_bad_lines(tmp_path):
    items = lb.load("lb", str(FIX / "longbench_write.jsonl"), tmp_path, [])
    assert [i.meta["length"] for i in items] == [100, 300, 2500]
    assert items[1].prompt.startswith("用大约300字")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "length": 10}\n{"prompt": "b", "length": "about 200"}\n')
    with pytest.raises(BenchmarkDataError, match=r"bad.jsonl:2: field 'length'"):
        lb.load("lb", str(bad), tmp_path, [])
    bad.write_text('{"length": 10}\n')
    with pytest.raises(BenchmarkDataError, match=r"bad.jsonl:1: field 'prompt': missing"):
        lb.load("lb", str(bad), tmp_path, [])


def test_demo_prompts_ship_in_the_package(tmp_path):
    items = load_items(
        "demo", BenchmarkConfig(kind="longbench_write", path="pkg://deepwriter/eval/demo/prompts.jsonl"), tmp_path
    )
    assert len(items) == 3 and all(i.meta["length"] <= 100 for i in items)


# --- HelloBench --------------------------------------------------------------------------------


def test_hellobench_real_weights_match_the_real_checklists(shared_dir):
    import json
    from collections import Counter

    folder = shared_dir / "benchmarks" / "hellobench"
    weights = hb.load_weights(folder)
    assert weights["report_write"][0] == pytest.approx(23.715406207770044)
    assert len(weights["continuation"]) == 5 and len(weights["travel"]) == 7
    for cat, ws in weights.items():
        assert sum(ws) == pytest.approx(100.0), cat
    items = hb.load("hellobench", str(folder), Path("/nonexistent"), [])
    # all five subsets load, each with as many items as its data file has records (summarization is
    # rebuilt from the authors' published files: 100 items, 20 per category; see shared/README.md)
    on_disk = {
        s: sum(1 for line in (folder / "main_data" / f"{s}.jsonl").open(encoding="utf-8") if line.strip())
        for s in hb.SUBSETS
    }
    assert set(on_disk) == set(hb.SUBSETS) and all(n > 0 for n in on_disk.values())
    assert Counter(i.meta["subset"] for i in items) == on_disk and len(items) == sum(on_disk.values())
    assert hb.available_subsets(folder) == list(hb.SUBSETS)
    summ = Counter(i.meta["category"] for i in items if i.meta["subset"] == "summarization")
    assert sorted(summ.values()) == [20] * 5
    # every sample carries exactly its category's checklist (checklists/<subset>_checklist.json) and
    # that category's regression weights, one weight per checklist item
    category_checklists = {
        s: json.loads((folder / "checklists" / f"{s}_checklist.json").read_text(encoding="utf-8")) for s in hb.SUBSETS
    }
    for item in items:
        subset, category = item.meta["subset"], item.meta["category"]
        assert item.meta["checklists"] == category_checklists[subset][category], item.id
        assert item.meta["weights"] == weights[category], item.id
        assert len(item.meta["weights"]) == len(category_checklists[subset][category]), item.id
    # a perfect sample scores 100, an all-0.5 sample 50, one item only: its weight
    w = weights["report_write"]
    assert hb.weighted_score(w, [1.0] * 6) == pytest.approx(100.0)
    assert hb.weighted_score(w, [0.5] * 6) == pytest.approx(50.0)
    assert hb.weighted_score(w, [1, 0, 0, 0, 0, 0]) == pytest.approx(23.715406207770044)


def test_hellobench_scoring_subsets_groups_rescaling():
    items = hb.load("hb", str(FIX / "hellobench"), Path("/nonexistent"), [])
    assert [i.id for i in items] == ["chat_t01", "chat_t02", "htg_t01"]
    outs = [
        {"checklist": _outcome("checklist", {"0": 1.0, "1": 1.0, "2": 0.75, "3": 0.5})},
        {"checklist": _outcome("checklist", {"0": 0.5, "1": 0.25, "2": 0.0, "3": 0.0})},
        {"checklist": _outcome("checklist", {}, ok=False, error="judge call failed")},
    ]
    recs = [hb.score_item(i, "answer", o) for i, o in zip(items, outs)]
    assert recs[0]["score"] == pytest.approx(40 + 30 + 15 + 5)
    assert recs[1]["score"] == pytest.approx(20 + 7.5)
    assert "failure" in recs[2]
    s = hb.aggregate(recs, {"A": ["chat"], "B": ["heuristic_text_generation"]})
    assert s["subsets"]["chat"]["score"] == pytest.approx(58.75)
    assert s["subsets"]["heuristic_text_generation"] == {"n": 1, "scored": 0, "score": None, "rescaled": None}
    assert s["overall"] == pytest.approx(58.75) and s["overall_rescaled"] == pytest.approx((58.75 - 75) * 4)
    assert s["groups"] == {"A": pytest.approx(58.75), "B": None}
    assert s["groups_rescaled"] == {"A": pytest.approx((58.75 - 75) * 4), "B": None}
    assert s["group_definitions"] == {"A": ["chat"], "B": ["heuristic_text_generation"]}
    assert s["subset_mean"] == pytest.approx(58.75)  # the unscored subset has no mean to average
    assert s["failures"] == 1
    # pooled over samples vs the mean of subset means differ when subsets differ in size; HelloBench's
    # overall (compute.py) and the groups are means of subset means
    recs = [{"subset": "a", "score": 90.0}, {"subset": "a", "score": 70.0}, {"subset": "b", "score": 40.0}]
    s = hb.aggregate(recs, {"G": ["a", "b"], "H": ["a", "c"]})
    assert s["overall"] == pytest.approx(200 / 3) and s["subset_mean"] == pytest.approx((80 + 40) / 2)
    assert s["subset_mean_rescaled"] == pytest.approx((60 - 75) * 4) and s["groups"]["G"] == pytest.approx(60.0)
    assert s["groups"]["H"] is None  # a member subset without a score: the group is not measured
    assert hb.aggregate(recs)["group_definitions"] == hb.DEFAULT_GROUPS  # no groups configured: ours


FITTED_GROUPS = {"HB-A": ["summarization", "chat"], "HB-B": ["open_ended_qa", "heuristic_text_generation"]}


def test_default_groups_are_the_fitted_grouping():
    # bench/hellobench_groups.py: of every grouping, this one reproduces the paper's GPT-4o and
    # Claude-3.5-Sonnet HB-A / HB-B from HelloBench's published judgments best (docs/FIDELITY.md J31).
    # This guards the fitted membership and the group arithmetic (a group is the mean of its subsets'
    # means) only: how near the paper the fit lands is the bench's measurement (RMSE 0.28), not this test's.
    assert hb.DEFAULT_GROUPS == FITTED_GROUPS
    gpt = {"open_ended_qa": 88.70, "summarization": 82.43, "chat": 85.72, "text_completion": 91.87}
    gpt["heuristic_text_generation"] = 86.97
    recs = [{"subset": k, "score": v} for k, v in gpt.items()]
    groups = hb.aggregate(recs)["groups"]
    assert groups["HB-A"] == pytest.approx((82.43 + 85.72) / 2, abs=1e-9)
    assert groups["HB-B"] == pytest.approx((88.70 + 86.97) / 2, abs=1e-9)


@pytest.mark.parametrize(
    "overrides",
    [
        ("+recipe=full",),
        ("+recipe=demo", "eval=shared"),  # the demo's own eval has no HelloBench; its shared-data eval has
        ("+recipe=full-released-data",),
        ("+recipe=ablation-no-literature",),
    ],
)
def test_composed_runs_report_the_fitted_groups(overrides):
    """What a composed run reports, not only the code's fallback: every HelloBench entry of the
    composed config resolves to the fitted grouping (the configs once set another one)."""
    from deepwriter.testing.repo import compose_typed

    cfg = compose_typed(*overrides)
    entries = [b for b in cfg.eval.benchmarks.values() if b.kind == hb.KIND]
    assert entries, f"{overrides}: no HelloBench entry composed"
    for b in entries:
        assert hb.groups_used(b) == FITTED_GROUPS
        assert hb.headline_keys(hb.KIND, b) == ["HB-A", "HB-B"]


def test_hellobench_reply_parser_accepts_the_official_list_shape():
    values, reasons = hb.parse_checklist_reply(
        [
            {"checklist_id": "1", "reason": "r1", "evaluation_score": "0.75"},
            {"checklist_id": 0, "reason": "r0", "evaluation_score": 1},
        ]
    )
    assert values == {"1": "0.75", "0": 1} and reasons == {"1": "r1", "0": "r0"}


def test_hellobench_weights_file_errors_name_the_file(tmp_path):
    (tmp_path / "weighted_scores.txt").write_text("REGRESSION_DICT = {'a': [50.0, 40.0]}\n")
    with pytest.raises(BenchmarkDataError, match=r"weighted_scores.txt:1: field 'a': weights sum to 90"):
        hb.load_weights(tmp_path)


# --- WritingBench ------------------------------------------------------------------------------


def test_writingbench_domain_and_subdomain_aggregation(tmp_path):
    items = wb.load("wb", str(FIX / "writingbench.jsonl"), tmp_path, [])
    assert [i.id for i in items] == ["1", "2", "3", "4"]
    tasks = wb.judge_tasks(items[0], "an answer")
    assert [t.key for t in tasks] == [f"criterion-{i}" for i in range(5)]
    user = tasks[0].messages[-1]["content"]
    assert user.count('"9-10": "Excellent."') == 2  # the criterion's own rubric, shown twice as in the reference
    assert tasks[0].slots[0].allowed == tuple(range(1, 11))
    scores = [[8, 8, 8, 8, 8], [6, 6, 6, 6, 7], [10, 9, 8, 7, 6], [9, 9, 9, 9, None]]
    recs = []
    for item, s in zip(items, scores):
        outs = {
            f"criterion-{i}": (
                _outcome(f"criterion-{i}", {"score": float(v)})
                if v is not None
                else _outcome(f"criterion-{i}", {}, ok=False, error="bad reply: score: 11 is out of range")
            )
            for i, v in enumerate(s)
        }
        recs.append(wb.score_item(item, "answer", outs))
    assert [r.get("score") for r in recs] == pytest.approx([8.0, 6.2, 8.0, None])
    assert "Format: bad reply" in recs[3]["failure"]
    s = wb.aggregate(recs)
    assert s["overall"] == pytest.approx((8 + 6.2 + 8) / 3)
    assert s["domains"]["A"] == {"name": "Academic & Engineering", "n": 2, "score": pytest.approx(7.1)}
    assert s["domains"]["D"]["score"] == pytest.approx(8.0)
    assert s["domains"]["E"] == {"name": "Education", "n": 0, "score": None}  # present, never scored
    assert "B" not in s["domains"]
    assert s["subdomains"]["Academic & Engineering / Abstract"]["score"] == pytest.approx(6.2)
    assert s["failures"] == 1
    assert wb.headline("writingbench", s) == {"WB-A": pytest.approx(71.0), "WB-D": pytest.approx(80.0), "WB-E": None}


def test_writingbench_overall_pools_every_criterion_score():
    # calculate_scores.py: Overall = Σ scores / Σ criteria over all queries; domains average query means.
    # With unequal criteria counts the two differ: (8 + 8 + 2) / 3 = 6 against (8 + (8 + 2) / 2) / 2 = 6.5
    recs = [
        {"domain1": "Education", "domain2": "x", "score": 8.0, "criteria": [{"name": "a", "score": 8}]},
        {
            "domain1": "Education",
            "domain2": "x",
            "score": 5.0,
            "criteria": [{"name": "a", "score": 8}, {"name": "b", "score": 2}],
        },
    ]
    s = wb.aggregate(recs)
    assert s["overall"] == pytest.approx(6.0) and s["query_mean"] == pytest.approx(6.5)
    assert s["domains"]["E"]["score"] == pytest.approx(6.5)


def test_writingbench_judges_the_output_after_the_first_think_close_and_blank_line():
    # evaluate_benchmark.py process_gen_field: the text after the first "</think>\n\n", else all of it
    assert wb.answer_from_output("<think>\nplan\n</think>\n\nThe answer.\n") == "The answer.\n"
    assert wb.answer_from_output("<think>a</think>\n\nB </think>\n\nC") == "B </think>\n\nC"  # the first one
    assert wb.answer_from_output("<think>a</think>\nB") == "<think>a</think>\nB"  # no blank line: all judged
    assert wb.answer_from_output("<think>never closed") == "<think>never closed"
    assert wb.answer_from_output("No thinking at all.") == "No thinking at all."


def test_writingbench_real_data_has_the_six_domains(shared_dir):
    items = wb.load("wb", str(shared_dir / "benchmarks" / "writingbench" / "length_subset.jsonl"), Path("/x"), [])
    assert len(items) == 222
    assert {i.meta["domain1"] for i in items} == set(wb.DOMAINS.values())
    assert all(len(i.meta["checklist"]) == 5 for i in items)


def test_writingbench_limit_spreads_over_domains(shared_dir):
    """The file is sorted by domain: a limit must not mean "domain A only"."""
    path = str(shared_dir / "benchmarks" / "writingbench" / "length_subset.jsonl")
    every = load_items("wb", BenchmarkConfig(kind="writingbench", path=path), Path("/x"))
    order = {it.id: n for n, it in enumerate(every)}
    for n in (3, 6, 14):
        got = load_items("wb", BenchmarkConfig(kind="writingbench", path=path, limit=n), Path("/x"))
        domains = [it.meta["domain1"] for it in got]
        assert len(got) == n and len(set(domains)) == min(n, 6)
        counts = sorted(domains.count(d) for d in set(domains))
        assert counts[-1] - counts[0] <= 1  # in turns: no domain gets two more than another
        assert [order[it.id] for it in got] == sorted(order[it.id] for it in got)  # file order kept
    # each domain's first items are the ones taken
    got = load_items("wb", BenchmarkConfig(kind="writingbench", path=path, limit=6), Path("/x"))
    firsts = {}
    for it in every:
        firsts.setdefault(it.meta["domain1"], it.id)
    assert {it.id for it in got} == set(firsts.values())


# --- registry ----------------------------------------------------------------------------------


def test_benchmark_prompts_ignore_limit_and_skip_disabled(tmp_path):
    cfg = EvalConfig(
        benchmarks={
            "lb": BenchmarkConfig(kind="longbench_write", path=str(FIX / "longbench_write.jsonl"), limit=1),
            "hb": BenchmarkConfig(kind="hellobench", path=str(FIX / "hellobench"), limit=1),
            "wb": BenchmarkConfig(kind="writingbench", path=str(FIX / "writingbench.jsonl"), enabled=False),
        }
    )
    prompts = benchmark_prompts(cfg, tmp_path)
    assert set(prompts) == {"lb", "hb"}
    assert len(prompts["lb"]) == 3 and len(prompts["hb"]) == 3
    assert prompts["hb"][2] == "Write a story about a cat who learns to sail."
    # limit applies per HelloBench subset in the stage
    assert [i.id for i in load_items("hb", cfg.benchmarks["hb"], tmp_path)] == ["chat_t01", "htg_t01"]


def test_unknown_kind_is_a_config_error(tmp_path):
    from deepwriter.config.root import ConfigError

    with pytest.raises(ConfigError, match="eval.benchmarks.x.kind: unknown benchmark kind 'nope'"):
        load_items("x", BenchmarkConfig(kind="nope", path="a"), tmp_path)


def test_lenient_mode_skips_and_counts_bad_records(tmp_path):
    bad = tmp_path / "lb.jsonl"
    bad.write_text(
        '{"prompt": "a", "length": 10}\n{"prompt": "b", "length": "lots"}\nnot json\n'
        '{"prompt": "c", "length": 30}\n{"id": "0000", "prompt": "d", "length": 5}\n'
    )
    bcfg = BenchmarkConfig(kind="longbench_write", path=str(bad))
    with pytest.raises(BenchmarkDataError, match=r"lb.jsonl:2: field 'length'"):
        load_items("lb", bcfg, tmp_path)
    skipped: list = []
    items = load_items("lb", bcfg, tmp_path, skipped=skipped)
    assert [i.prompt for i in items] == ["a", "c"]
    assert len(skipped) == 3
    assert "lb.jsonl:2: field 'length'" in str(skipped[0]) and skipped[0].field == "length"
    assert "lb.jsonl:3: field '<line>': not valid JSON" in str(skipped[1]) and skipped[1].field == "<line>"
    assert "duplicate id '0000'" in str(skipped[2]) and skipped[2].field == "id"
    lenient = EvalConfig(benchmarks={"lb": bcfg}, strict=False)
    assert benchmark_prompts(lenient, tmp_path) == {"lb": ["a", "c"]}
    with pytest.raises(BenchmarkDataError):
        benchmark_prompts(EvalConfig(benchmarks={"lb": bcfg}), tmp_path)

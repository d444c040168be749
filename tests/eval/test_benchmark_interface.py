"""A benchmark is one module behind one interface: the tables, plots, run report, dashboard and cost
projection ask the module and hold no per-benchmark switch. A made-up fourth benchmark, registered
and nothing else, shows up in each of them."""

from __future__ import annotations

import types
from typing import Any, Dict, List

import pytest

from deepwriter.config.eval import BenchmarkConfig
from deepwriter.eval import benchmarks, tables
from deepwriter.eval.benchmarks.base import INTERFACE, Breakdown, markdown_table
from deepwriter.testing.repo import compose_typed


@pytest.mark.parametrize("kind", sorted(benchmarks.KINDS))
def test_every_benchmark_implements_the_interface(kind):
    module = benchmarks.KINDS[kind]
    missing = [name for name in INTERFACE if not hasattr(module, name)]
    assert missing == []
    assert module.KIND == kind
    count, source = module.PUBLISHED_ITEMS
    assert count > 0 and source
    assert module.breakdowns({}), "every benchmark draws at least one chart"


def _fourth_benchmark() -> types.ModuleType:
    m = types.ModuleType("poetrybench")
    m.KIND = "poetrybench"
    m.REFERENCE_JUDGE = benchmarks.KINDS["longbench_write"].REFERENCE_JUDGE
    m.STYLES = benchmarks.KINDS["longbench_write"].STYLES
    m.PUBLISHED_ITEMS = (42, "made up for this test")
    m.JUDGE_CALLS_PER_ITEM = (3, "made up for this test")
    m.load = m.judge_tasks = m.score_item = lambda *a, **k: None

    def summarize(records: List[Dict[str, Any]], bcfg: Any = None) -> Dict[str, Any]:
        return {"meters": {"sonnet": 70.0, "haiku": 50.0}, "failures": 0}

    m.summarize = summarize
    m.headline = lambda name, s: {"PB": 60.0}
    m.headline_keys = lambda name, bcfg: ["PB"]
    m.breakdowns = lambda s: [Breakdown("meters", "by meter", dict(s.get("meters") or {}))]
    m.detail_markdown = lambda s: markdown_table(["meter", "score"], [[k, v] for k, v in s["meters"].items()])
    m.column_definitions = lambda entry: {"PB": "mean over poems (made up)"}
    return m


@pytest.fixture
def fourth(monkeypatch):
    module = _fourth_benchmark()
    monkeypatch.setitem(benchmarks.KINDS, module.KIND, module)
    return module


def test_a_fourth_benchmark_needs_no_other_file(fourth, tmp_path):
    from deepwriter.commands import dashboard
    from deepwriter.viewer import collect

    summary = {
        "label": "run",
        "headline": {"PB": 60.0},
        "benchmarks": {"poetrybench": {"kind": "poetrybench", "summary": fourth.summarize([]), "headline": {"PB": 60}}},
    }
    details = tables.detail_markdown(summary)
    assert "## poetrybench (poetrybench)" in details and "| sonnet | 70.00 |" in details
    assert tables.definitions_note([summary]) == "PB = mean over poems (made up)."
    artifacts = tables.write_run_plots(summary, tmp_path)
    assert artifacts["plot_poetrybench_meters"] == "plots/poetrybench_meters.png"
    assert (tmp_path / "poetrybench_meters.png").stat().st_size > 0
    assert collect.breakdowns(summary) == [
        {
            "benchmark": "poetrybench",
            "kind": "poetrybench",
            "title": "by meter",
            "values": {"sonnet": 70.0, "haiku": 50.0},
        }
    ]

    cfg = compose_typed("+recipe=demo")
    cfg.eval.benchmarks["poetrybench"] = BenchmarkConfig(kind="poetrybench", path="x.jsonl")
    assert "eval/PB" in dashboard.eval_headline_names(cfg.eval)
    assert "eval/plot_poetrybench_meters" in dashboard.eval_plot_names(cfg.eval)


def test_the_cost_projection_takes_the_benchmarks_own_figures(fourth):
    from deepwriter.commands import plan as cost

    cfg = compose_typed("+recipe=full")
    cfg.eval.benchmarks = {"poetrybench": BenchmarkConfig(kind="poetrybench", path=None)}
    p = cost.Projection()
    sec = cost.eval_section(cfg, p)
    row = dict((r[0], r[1]) for r in sec.rows)
    assert row["poetrybench"].startswith("42 items, 126 judge calls")
    assert ("workload.benchmark_items.poetrybench", "42", "made up for this test") in [
        (a, b, c) for a, b, c in p.assumptions
    ]

"""Re-scoring published HelloBench judgment files, and the side-by-side report, without any judge."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from deepwriter.eval.benchmarks.hellobench_rescore import main as rescore_main
from deepwriter.eval.benchmarks.hellobench_rescore import rescore_hellobench
from deepwriter.testing.repo import FIXTURES, REPO

FIX = FIXTURES / "bench"


def test_rescore_fixture_by_hand():
    summary, skipped = rescore_hellobench(FIX / "hellobench_judgements", FIX / "hellobench")
    # chat_t01: 40·1 + 30·1 + 20·0.75 + 10·0.5 = 90; chat_t02: 40·0.5 + 30·0.25 = 27.5;
    # htg_t01 (ids out of order, a string score): 10·0.25 + 20·0.5 + 30·0.75 + 40·1 = 75
    assert summary["subsets"]["chat"]["score"] == pytest.approx(58.75)
    assert summary["subsets"]["heuristic_text_generation"]["score"] == pytest.approx(75.0)
    assert summary["overall"] == pytest.approx((90 + 27.5 + 75) / 3)
    assert summary["overall_rescaled"] == pytest.approx(((90 + 27.5 + 75) / 3 - 75) * 4)
    # the default groups need subsets the fixture lacks (summarization, open_ended_qa): not measured
    assert summary["groups"] == {"HB-A": None, "HB-B": None}
    chosen, _ = rescore_hellobench(
        FIX / "hellobench_judgements", FIX / "hellobench", {"A": ["chat"], "B": ["heuristic_text_generation"]}
    )
    assert chosen["groups"] == {"A": pytest.approx(58.75), "B": pytest.approx(75.0)}
    assert len(skipped) == 1 and skipped[0].where.endswith("chat_results.jsonl:3")
    assert "chat_t99" in skipped[0].reason and summary["skipped"] == 1


def test_rescore_rejects_out_of_range_and_incomplete_lines(tmp_path):
    judg = tmp_path / "j"
    judg.mkdir()
    ev = lambda scores: [{"checklist_id": i, "reason": "", "evaluation_score": s} for i, s in enumerate(scores)]
    lines = [
        {"id": "chat_t01", "response": "x", "checklist_wise_evaluation": ev([1, 1, 1, 1])},
        {"id": "chat_t02", "response": "x", "checklist_wise_evaluation": ev([1, 1, 0.6, 1])},
        {"id": "chat_t02", "response": "x", "checklist_wise_evaluation": ev([1, 1, 1])},
        {"id": "chat_t02", "response": "x", "checklist_wise_evaluation": []},
    ]
    (judg / "chat_results.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    summary, skipped = rescore_hellobench(judg, FIX / "hellobench")
    assert summary["overall"] == pytest.approx(100.0) and summary["scored"] == 1
    reasons = [s.reason for s in skipped]
    assert "0.6 is out of range" in reasons[0]
    assert "checklist_id 3 missing" in reasons[1]
    assert "missing or empty" in reasons[2]


def test_rescore_command_prints_scores(capsys):
    rc = rescore_main(
        [
            "hellobench",
            "--judgements",
            str(FIX / "hellobench_judgements"),
            "--data",
            str(FIX / "hellobench"),
            "--group",
            "chat_only=chat",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0
    assert "chat_only" in out and "58.75" in out and "64.17" in out and "-43.33" in out
    assert "skipped 1 line(s)" in err and "chat_t99" in err


def test_rescore_module_runs_as_a_command():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "deepwriter.eval.benchmarks.hellobench_rescore",
            "hellobench",
            "--judgements",
            str(FIX / "hellobench_judgements"),
            "--data",
            str(FIX / "hellobench"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "overall" in out.stdout and "64.17" in out.stdout


def _summary(label, headline):
    return {
        "label": label,
        "model_under_test": "m",
        "judge": "j",
        "judge_stats": {"calls": 3, "failed": 0, "cost_usd": 0.0},
        "benchmarks": {},
        "headline": headline,
    }


def test_report_compares_runs_side_by_side(tmp_path):
    from deepwriter.commands.report import main as report_main

    a, b = tmp_path / "runA", tmp_path / "runB" / "eval"
    a.joinpath("eval").mkdir(parents=True)
    b.mkdir(parents=True)
    (a / "eval" / "summary.json").write_text(json.dumps(_summary("demo/a", {"LB": 50.0, "HB-A": 70.0, "WB-A": 6.5})))
    (b / "summary.json").write_text(json.dumps(_summary("demo/b", {"LB": 60.0, "HB-B": 80.0, "WB-A": 7.0})))
    out = tmp_path / "report"
    assert report_main([str(a), str(b), "--out", str(out)]) == 0
    md = (out / "compare.md").read_text()
    assert md.splitlines()[0] == "| run | LB | HB-A | HB-B | WB-A |"  # the paper's column order
    assert "| demo/a | 50.00 | 70.00 | – | 6.50 |" in md and "| demo/b | 60.00 | – | 80.00 | 7.00 |" in md
    csv_lines = (out / "compare.csv").read_text().splitlines()
    # each figure, then its interval's ends (empty: these summaries have no items to bootstrap)
    cols = ["LB", "HB-A", "HB-B", "WB-A"]
    assert csv_lines[0] == "run," + ",".join(f"{c},{c} ci_low,{c} ci_high" for c in cols)
    assert csv_lines[1] == "demo/a,50.0,,,70.0,,,,,,6.5,,"
    assert (out / "compare.png").stat().st_size > 1000 and (out / "radar.png").stat().st_size > 1000
    assert report_main([str(tmp_path / "nothing")]) == 2

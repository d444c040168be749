"""Pairwise judging: both orders, flips as ties, win rates with intervals, the length-controlled win
rate, Bradley–Terry; judged by scripted judges whose biases are known."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from deepwriter.config.eval import JudgeConfig
from deepwriter.eval import pairwise
from deepwriter.eval.judge import Judge
from deepwriter.llm.base import Generation


class PairJudge:
    """Answers pairwise prompts by a rule on (response 1, response 2); counts its calls."""

    model_id = "pair-judge"

    def __init__(self, rule):
        self.rule, self.calls, self.prompts = rule, 0, []

    def generate(self, prompts, sampling, n=1, prefill=None, seeds=None):
        out = []
        for m in prompts:
            text = m[-1]["content"]
            self.calls += 1
            self.prompts.append(text)
            one = re.search(r"\[(?:Response|回答) 1\]\n(.*?)\n\[", text, re.S).group(1)
            two = re.search(r"\[(?:Response|回答) 2\]\n(.*?)\n\[", text, re.S).group(1)
            out.append([Generation(text=json.dumps({"winner": self.rule(one, two)}), prompt_tokens=10)])
        return out


def write_run(root, label, answers):
    ev = root / label / "eval"
    (ev / "items").mkdir(parents=True)
    recs = [{"id": f"q{i}", "prompt": f"Write piece {i}.", "answer": a} for i, a in enumerate(answers)]
    (ev / "items" / "demo.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
    summary = {"label": label, "benchmarks": {"demo": {"kind": "longbench_write"}}}
    (ev / "summary.json").write_text(json.dumps(summary))
    return ev


def judge_of(gen, tmp_path):
    return Judge(lambda: gen, gen.model_id, JudgeConfig(max_reasks=0), tmp_path / "cache", constrained=False)


def test_a_judge_that_always_picks_the_first_response_flips_every_verdict(tmp_path):
    x = write_run(tmp_path, "x", ["good " * 5] * 20)
    y = write_run(tmp_path, "y", ["fine " * 5] * 20)
    gen = PairJudge(lambda one, two: 1)
    res = pairwise.compare_runs(judge_of(gen, tmp_path), {"x": x, "y": y}, resamples=200)
    p = res["pairs"]["x vs y"]
    assert gen.calls == 40  # each item in both orders
    assert p["n"] == 20 and p["flips"] == 20 and p["flip_rate"] == 1.0 and res["flip_rate"] == 1.0
    assert p["win_rate"] == 0.5 and p["ties"] == 20 and p["x_wins"] == p["y_wins"] == 0
    # a re-run asks nothing: every reply is cached
    again = pairwise.compare_runs(judge_of(gen, tmp_path), {"x": x, "y": y}, resamples=50)
    assert gen.calls == 40 and again["pairs"]["x vs y"]["flips"] == 20


@pytest.mark.slow  # 300 logistic fits on resampled items (~2 s idle, ~5 s on a loaded machine)
def test_a_judge_that_likes_length_wins_raw_but_not_length_controlled(tmp_path):
    rng = np.random.default_rng(0)
    lengths_x = rng.integers(20, 120, 120)
    # X is longer on about three items in four; Y's length is X's plus or minus
    lengths_y = [int(lx + (rng.integers(-60, -5) if rng.random() < 0.75 else rng.integers(5, 60))) for lx in lengths_x]
    x = write_run(tmp_path, "x", ["w " * int(n) for n in lengths_x])
    y = write_run(tmp_path, "y", ["w " * max(1, n) for n in lengths_y])
    gen = PairJudge(lambda one, two: 1 if len(one) > len(two) else 2)
    p = pairwise.compare_runs(judge_of(gen, tmp_path), {"x": x, "y": y}, resamples=300)["pairs"]["x vs y"]
    assert p["flips"] == 0 and p["win_rate"] > 0.65 and p["win_rate_ci"][0] > 0.55
    # at equal length this judge has no preference: the length-controlled win rate is about a half
    assert abs(p["lc_win_rate"] - 0.5) < 0.15 and p["lc_win_rate_ci"][0] < 0.5 < p["lc_win_rate_ci"][1]


def test_bradley_terry_orders_three_runs_with_intervals(tmp_path):
    # the judge prefers the answer with more stars: a > b > c, each in both orders, no position bias
    runs = {name: write_run(tmp_path, name, [("*" * stars + " text ") for _ in range(30)]) for name, stars in
            (("a", 3), ("b", 2), ("c", 1))}  # fmt: skip
    gen = PairJudge(lambda one, two: 1 if one.count("*") > two.count("*") else 2)
    res = pairwise.compare_runs(judge_of(gen, tmp_path), runs, resamples=100)
    bt = res["bradley_terry"]
    assert bt["a"]["rating"] > bt["b"]["rating"] > bt["c"]["rating"]
    assert all(v["low"] <= v["rating"] <= v["high"] for v in bt.values())
    assert res["pairs"]["a vs c"]["win_rate"] == 1.0 and res["flip_rate"] == 0.0
    assert "Bradley–Terry" in pairwise.markdown(res) and "flip rate 0.000" in pairwise.markdown(res)


def test_chinese_prompts_are_judged_with_the_chinese_prompt():
    en = pairwise.tasks_for("longbench_write", "q", "Write a poem.", "A", "B")
    zh = pairwise.tasks_for("longbench_write", "q", "写一首关于春天的诗。", "甲", "乙")
    assert [t.key for t in en] == ["xy", "yx"] and "[Response 1]\nA\n" in en[0].messages[0]["content"]
    assert "[Response 1]\nB\n" in en[1].messages[0]["content"]  # the other order
    assert "指令" in zh[0].messages[0]["content"] and "[回答 1]\n甲\n" in zh[0].messages[0]["content"]
    assert "relevance, accuracy, coherence" in en[0].messages[0]["content"]  # LongBench-Write's dimensions


@pytest.mark.parametrize(
    "xy, yx, score, flipped",
    [(1.0, 2.0, 1.0, False), (2.0, 1.0, 0.0, False), (1.0, 1.0, 0.5, True), (2.0, 2.0, 0.5, True),
     (1.0, 0.0, 1.0, False), (0.0, 1.0, 0.0, False), (0.0, 0.0, 0.5, False)],
)  # fmt: skip
def test_both_orders_combine_into_one_outcome(xy, yx, score, flipped):
    o = pairwise.combine("q", xy, yx, 0)
    assert (o.x_score, o.flipped) == (score, flipped)


@pytest.mark.slow  # composes the whole config (~3 s)
def test_cli_refuses_one_run_and_a_folder_without_results_in_one_line(tmp_path, capsys):
    x = write_run(tmp_path, "x", ["a"])
    assert pairwise.main([str(x)]) == 2
    assert pairwise.main([str(x), str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "pairwise: give two runs or more"
    assert err[1].startswith("pairwise: ") and "no summary.json" in err[1] and len(err) == 2


def test_a_judge_panel_on_pairwise_verdicts_reports_cohens_kappa_and_each_flip_rate(tmp_path):
    # X's answers 0-9 are the good ones, Y's 10-19; the first judge picks the good answer every time,
    # the second does too except on items 0-3, where it picks the other: it agrees on 16 of 20 outcomes
    x = write_run(tmp_path, "x", [f"good {i}" for i in range(10)] + [f"fine {i}" for i in range(10, 20)])
    y = write_run(tmp_path, "y", [f"fine {i}" for i in range(10)] + [f"good {i}" for i in range(10, 20)])

    def good(one, two):
        return 1 if one.startswith("good") else 2

    def contrary(one, two):
        picked = good(one, two)
        chosen = one if picked == 1 else two
        return 3 - picked if int(chosen.split()[1]) < 4 else picked

    first, second = PairJudge(good), PairJudge(contrary)
    second.model_id = "contrary-judge"

    def run():
        other = Judge(lambda: second, second.model_id, JudgeConfig(max_reasks=0), tmp_path / "panel", False)
        return pairwise.compare_runs(
            judge_of(first, tmp_path), {"x": x, "y": y}, resamples=10, panel=[("contrary", other, lambda t: t)]
        )

    res = run()
    p = res["panel"]["contrary"]
    assert first.calls == second.calls == 40 and p["comparisons"] == 20 and p["unjudged"] == 0
    assert p["flip_rate"] == 0.0 and res["flip_rate"] == 0.0  # both judges are consistent across orders
    # observed agreement 0.8; by chance 0.5·0.3 + 0.5·0.7 = 0.5; κ = (0.8 − 0.5) / (1 − 0.5)
    assert p["vs_judge"] == {"n": 20, "kappa": pytest.approx(0.6), "same_outcome": 0.8}
    assert res["pairs"]["x vs y"]["win_rate"] == 0.5  # the figures are the first judge's
    assert "contrary" in pairwise.markdown(res) and "0.600" in pairwise.markdown(res)
    run()
    assert first.calls == second.calls == 40  # a re-run asks neither judge anything


@pytest.mark.parametrize(
    "a, b, kappa",
    [
        ([1, 1, 0, 0], [1, 1, 0, 0], 1.0),  # full agreement
        ([1, 0, 1, 0], [1, 1, 0, 0], 0.0),  # what chance gives
        ([1, 1, 0, 0], [0, 0, 1, 1], -1.0),  # always opposite
        ([1, 1, 1], [1, 1, 1], None),  # one verdict only: undefined
    ],
)
def test_cohen_kappa(a, b, kappa):
    from deepwriter.eval.agreement import cohen_kappa

    assert cohen_kappa(a, b) == (None if kappa is None else pytest.approx(kappa))


@pytest.mark.slow  # two offline W&B runs written and read back (~3 s each on a loaded machine)
def test_pairwise_and_paired_figures_reach_wandb_with_their_intervals(tmp_path, monkeypatch):
    from deepwriter.commands import ablations
    from deepwriter.testing.repo import compose_typed
    from deepwriter.testing.wandb_offline import read_wandb_offline

    monkeypatch.setenv("WANDB_MODE", "offline")
    x = write_run(tmp_path, "x", ["long answer here " * 3] * 12)
    y = write_run(tmp_path, "y", ["short"] * 12)
    res = pairwise.compare_runs(
        judge_of(PairJudge(lambda one, two: 1 if len(one) > len(two) else 2), tmp_path), {"x": x, "y": y}, resamples=20
    )
    pairwise.log_to_wandb(compose_typed("+recipe=demo"), tmp_path / "pw", res)
    (path,) = (tmp_path / "pw" / "wandb").glob("offline-run-*/run-*.wandb")
    run = read_wandb_offline(path)
    got, p = run["summary"], res["pairs"]["x vs y"]
    assert run["job_type"] == "pairwise"
    assert got["pairwise/x vs y/win_rate"] == p["win_rate"] == 1.0
    assert [got["pairwise/x vs y/win_rate_ci_low"], got["pairwise/x vs y/win_rate_ci_high"]] == p["win_rate_ci"]
    assert got["pairwise/x vs y/flip_rate"] == 0.0 and got["pairwise/flip_rate"] == 0.0
    bt = res["bradley_terry"]["x"]
    assert [got["pairwise/bradley_terry/x" + s] for s in ("", "_ci_low", "_ci_high")] == [
        bt["rating"],
        bt["low"],
        bt["high"],
    ]

    # the ablation table's paired differences (compare.json, as deepwriter.report writes it)
    out = tmp_path / "abl"
    out.mkdir()
    diff = {"a": 50.0, "b": 52.5, "diff": -2.5, "low": -4.0, "high": -1.0, "p_value": 0.03, "n": 12}
    figures = {"full/t": {"paired_vs_first": None}, "ablation-no-search/t": {"paired_vs_first": {"demo": diff}}}
    (out / "compare.json").write_text(json.dumps(figures))
    ablations.log_to_wandb("demo", "t", [], out)
    (path,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    run = read_wandb_offline(path)
    key = "paired/ablation-no-search/t - full/t/demo"
    assert run["job_type"] == "ablations"
    assert {k: v for k, v in run["summary"].items() if k.startswith("paired/")} == {
        key: -2.5,
        key + "_ci_low": -4.0,
        key + "_ci_high": -1.0,
        key + "_p": 0.03,
        key + "_n": 12,
    }

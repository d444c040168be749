"""Runs compared item by item: `python -m deepwriter.report` and report.html give every figure its
interval and every run after the first its paired difference against the first."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from deepwriter.eval.benchmarks import longbench_write as lb
from deepwriter.testing import browser
from deepwriter.testing.repo import REPO


def write_eval_run(root: Path, recipe: str, shift: float, n: int = 40, seed: int = 0) -> Path:
    """A run folder whose eval/ has real LongBench-Write-format item records: each item's quality
    dimensions drawn around an item-specific level (shared by every run: the same prompts), plus
    `shift` for this run."""
    levels = np.random.default_rng(seed).uniform(1.5, 4.0, n)
    # crc32, not hash(): str hashes change with every process (PYTHONHASHSEED), and so did this noise
    noise = np.random.default_rng(zlib.crc32(recipe.encode()))
    records = []
    for i, level in enumerate(levels):
        dims = {d: float(np.clip(level + shift + noise.normal(0, 0.1), 1, 5)) for d in lb.DIMENSIONS}
        records.append(
            {"id": f"q{i}", "prompt": f"prompt {i}", "answer": "…", "S_l": 80.0, "bucket": "<500", "dimensions": dims}
            | {"S_q": lb.quality_score(dims)}
        )
    run = root / "runs" / recipe / "batch"
    ev = run / "eval"
    (ev / "items").mkdir(parents=True)
    (ev / "items" / "demo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = lb.summarize(records)
    head = lb.headline("demo", summary)
    entry = {"kind": "longbench_write", "summary": summary, "headline": head}
    (ev / "summary.json").write_text(
        json.dumps({"label": f"{recipe}/batch", "recipe": recipe, "benchmarks": {"demo": entry}, "headline": head})
    )
    stages = {"eval": {"status": "ran", "seconds": 1.0}}
    (run / "manifest.json").write_text(json.dumps({"recipe": recipe, "run_id": "batch", "stages": stages}))
    return run


@pytest.mark.slow  # two subprocess reports with bootstrap and permutation tests (~3 s idle, ~10 s loaded)
def test_report_cli_prints_intervals_and_paired_differences_against_the_first_run(tmp_path):
    full = write_eval_run(tmp_path, "full", 0.0)
    worse = write_eval_run(tmp_path, "ablation-no-search", -0.2)  # 0.2 of a 1–5 point: −5 on S_q, −2.5 on S
    same = write_eval_run(tmp_path, "ablation-no-reflection", 0.0)
    out = tmp_path / "report"
    rc = subprocess.run(
        [sys.executable, "-m", "deepwriter.report", str(full), str(worse), str(same), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rc.returncode == 0, rc.stderr
    md = (out / "compare.md").read_text()
    assert "| run − full/batch | demo |" in md and "paired permutation test" in md
    headline, paired = md.split("| run − full/batch |")
    paired = paired.split("Paired difference on")[0]

    def rows(text):
        return {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}

    # every figure has its interval: `70.12 [68.90, 71.40]`
    assert all(" [" in rows(headline)[f"{r}/batch"] for r in ("full", "ablation-no-search", "ablation-no-reflection"))
    # the ablation that lost is marked (its interval excludes 0); the one that did not is not
    assert "*" in rows(paired)["ablation-no-search/batch"] and "*" not in rows(paired)["ablation-no-reflection/batch"]
    figures = json.loads((out / "compare.json").read_text())
    worse_p = figures["ablation-no-search/batch"]["paired_vs_first"]["demo"]
    same_p = figures["ablation-no-reflection/batch"]["paired_vs_first"]["demo"]
    assert worse_p["n"] == 40 and worse_p["diff"] == pytest.approx(-2.5, abs=0.15)
    assert worse_p["high"] < 0 and worse_p["p_value"] < 0.01  # told apart, though items range over 40 points
    assert same_p["low"] < 0 < same_p["high"] and same_p["p_value"] > 0.05
    full_iv = figures["full/batch"]["intervals"]["demo"]
    # side by side the runs' intervals overlap: only the pairing tells the ablation apart
    worse_iv = figures["ablation-no-search/batch"]["intervals"]["demo"]
    assert worse_iv["high"] > full_iv["low"]
    assert figures["full/batch"]["paired_vs_first"] is None


@pytest.mark.slow
@pytest.mark.usefixtures("chromium")
def test_report_html_ablation_table_shows_paired_differences(tmp_path):
    full = write_eval_run(tmp_path, "full", 0.0)
    worse = write_eval_run(tmp_path, "ablation-no-search", -0.2)
    out = tmp_path / "compare" / "report.html"
    # the two runs judged head to head by a judge that always picks the answer shown first: every verdict flips
    from deepwriter.config.eval import JudgeConfig
    from deepwriter.eval import pairwise
    from deepwriter.eval.judge import Judge
    from deepwriter.llm.base import Generation

    class FirstPicker:
        def generate(self, prompts, sampling, n=1, prefill=None, seeds=None):
            return [[Generation(text='{"winner": 1}', prompt_tokens=10)] for _ in prompts]

    judge = Judge(FirstPicker, "first-picker", JudgeConfig(max_reasks=0), tmp_path / "pw", constrained=False)
    res = pairwise.compare_runs(judge, {"full": full / "eval", "no-search": worse / "eval"}, resamples=20, limit=8)
    (tmp_path / "pw" / "pairwise.json").write_text(json.dumps(res))
    rc = subprocess.run(
        [sys.executable, "-m", "deepwriter.report", "--html", str(full), str(worse), "--out", str(out)]
        + ["--pairwise", str(tmp_path / "pw")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rc.returncode == 0, rc.stderr
    script = r"""
    var rows = Array.prototype.map.call(document.querySelectorAll('#ablations table tr'), function (tr) {
      return Array.prototype.map.call(tr.children, function (td) { return td.textContent; }); });
    var own = Array.prototype.map.call(document.querySelectorAll('#eval-0 table')[0].querySelectorAll('tr'),
      function (tr) { return Array.prototype.map.call(tr.children, function (td) { return td.textContent; }); });
    var pw = Array.prototype.map.call(document.querySelectorAll('#pairwise table'), function (t) {
      return Array.prototype.map.call(t.querySelectorAll('tr'), function (tr) {
        return Array.prototype.map.call(tr.children, function (td) { return td.textContent; }); }); });
    var pre = document.createElement('pre'); pre.id = 'probe';
    pre.textContent = JSON.stringify({rows: rows, own: own, pw: pw, errors: window.__errors});
    document.body.appendChild(pre);
    """
    dom, console = browser.open_page(out, script)
    seen = json.loads(html.unescape(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1)))
    assert console == [] and seen["errors"] == []
    header, first, second = seen["rows"][:3]
    delta = second[header.index("Δ demo")]
    # `-2.46* [-2.69, -2.25] p=0.002`: the paired difference, its interval, the test
    assert delta.startswith("-2.") and "*" in delta and "[" in delta and "p=" in delta, delta
    assert first[header.index("Δ demo")] == "–"
    assert " [" in seen["own"][1][1]  # the run's own headline cell carries its interval
    # the head-to-head figures: 8 items, every verdict a flip (so a tie), the intervals beside each rate
    pairs, ratings = seen["pw"]
    assert pairs[1][0] == "full vs no-search" and pairs[1][1] == "8" and pairs[1][4:] == ["0 / 8 / 0", "1.000"]
    assert pairs[1][2] == "0.500 [0.500, 0.500]"
    assert [r[0] for r in ratings[1:]] == ["full", "no-search"] and " [" in ratings[1][1]
    browser.screenshot(out, tmp_path / "paired.png")


@pytest.mark.slow
@pytest.mark.usefixtures("chromium")
def test_report_html_shows_judge_agreement_and_the_most_disagreed_items(tmp_path):
    from deepwriter.eval import agreement
    from deepwriter.viewer import build_run_report

    run = write_eval_run(tmp_path, "full", 0.0, n=6)
    ev = run / "eval"
    records = [json.loads(line) for line in (ev / "items" / "demo.jsonl").read_text().splitlines()]
    for i, r in enumerate(records):  # three judgments per item; item q5 the judge cannot make up its mind on
        r["judge_samples"] = [{"S_q": r["S_q"] + d * (10.0 if i == 5 else 1.0)} for d in (-1, 0, 1)]
        r["panel"] = {"second": r["S_q"] + (30.0 if i == 2 else 0.0)}  # a panel judge that differs on q2
    summary = json.loads((ev / "summary.json").read_text())
    found = agreement.of_judge_samples(records)
    summary["benchmarks"]["demo"]["judge_agreement"] = found
    panel = agreement.of_panel(records)
    summary["benchmarks"]["demo"]["panel_agreement"] = panel
    (ev / "summary.json").write_text(json.dumps(summary))
    assert found["most_disagreed"][0]["id"] == "q5"
    script = r"""
    var sec = document.getElementById('eval-0');
    var heads = Array.prototype.map.call(sec.querySelectorAll('h3'), function (h) { return h.textContent; });
    var tables = Array.prototype.map.call(sec.querySelectorAll('table'), function (t) {
      return Array.prototype.map.call(t.querySelectorAll('tr'), function (tr) {
        return Array.prototype.map.call(tr.children, function (td) { return td.textContent; }); }); });
    var pre = document.createElement('pre'); pre.id = 'probe';
    pre.textContent = JSON.stringify({heads: heads, tables: tables, errors: window.__errors});
    document.body.appendChild(pre);
    """
    dom, console = browser.open_page(build_run_report(run), script)
    seen = json.loads(html.unescape(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1)))
    assert console == [] and seen["errors"] == []
    assert (
        "Judge agreement (judge samples)" in seen["heads"] and "Items the judgments disagree on most" in seen["heads"]
    )
    alpha_table = next(t for t in seen["tables"] if t[0][:2] == ["benchmark", "Krippendorff's α"])
    assert alpha_table[1] == ["demo", f"{found['alpha']:.2f}", "6", "3", f"{found['mean_spread']:.2f}"]
    worst = next(t for t in seen["tables"] if t[0] == ["benchmark", "id", "spread", "scores"])
    assert worst[1][:3] == ["demo", "q5", "20.00"]
    # the judge panel: α across its judges, and the item they disagree on most with each judge's score
    assert "Judge panel agreement" in seen["heads"] and "Items the judges disagree on most" in seen["heads"]
    panel_table = next(t for t in seen["tables"] if t[0][:3] == ["benchmark", "judges", "Krippendorff's α"])
    assert panel_table[1] == ["demo", "judge, second", f"{panel['alpha']:.2f}", "6", "5.00"]
    disagreed = [t for t in seen["tables"] if t[0] == ["benchmark", "id", "spread", "scores"]][1]
    q2 = records[2]["S_q"]
    assert disagreed[1] == ["demo", "q2", "30.00", f"judge: {q2:.1f}, second: {q2 + 30:.1f}"]

"""The benchmarks still run: each in a tiny configuration, so that a change to the code they drive
cannot leave `make bench` broken unnoticed. Their speed figures are not held to the targets here (a
tiny configuration on a shared machine says nothing about them), but every figure must be printed,
finite and positive, agree with the others it is derived from, and the counts must add up."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest

from deepwriter.testing.repo import REPO


def _run(*args: str, timeout: int = 300) -> str:
    out = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_synthesis_scoring_bench_runs_on_the_tiny_model(shared_dir, tmp_path):
    out = _run(
        "bench.synthesis_scoring",
        "--model",
        "tiny-qwen3",
        f"--cache-dir={tmp_path}",
        "--k",
        "2",
        "--sweep-k",
        "2",
        "--z-words",
        "60",
        "--answer-quantile",
        "0",
        "--peak-seconds",
        "0.1",
        "--threads",
        "1",
    )
    rows = re.findall(r"^\s+2\s+wall\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x", out, re.M)
    assert len(rows) == 1 and all(float(v) > 0 for v in rows[0])
    assert re.search(r"^\s+search\s+[\d.]+\s+[\d.]+\s+[\d.]+x", out, re.M)
    # the prefix scorer matched the plain one on the bench's own requests
    diff = float(re.search(r"max \|log-prob difference\| prefix vs naive: ([\d.e+-]+)", out).group(1))
    assert diff < 1e-3


@pytest.mark.slow
def test_mix_build_bench_runs_small(shared_dir):
    out = _run(
        "bench.mix_build", "--records", "600", "--tokenize-sample", "40", "--tokenizer", "tiny-qwen3", "--num-proc", "1"
    )
    caught = {k: (int(a), int(b)) for k, a, b in re.findall(r"planted (\w+)\s+(\d+)\s+caught\s+(\d+)", out)}
    assert set(caught) == {"exact", "near", "contaminated"}
    assert all(a > 0 and b == a for a, b in caught.values()), caught  # every planted item of each kind is caught
    # token counting is stubbed in this configuration: the length filter's figure is not a measured 0
    assert re.search(r"removed as too long\s+not measured", out), out
    final = int(re.search(r"final mix\s+(\d+) records", out).group(1))
    removed = sum(int(n) for n in re.findall(r"caught\s+\d+\s+other records removed by this filter\s+(\d+)", out))
    caught_total = sum(b for _, b in caught.values())
    assert final == 600 - caught_total - removed  # every record is either in the mix or removed by one filter


def _close(a: float, b: float, rel: float = 0.05, abs_: float = 0.02) -> bool:
    """Equal up to the rounding of printed figures."""
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def _finite_positive(*values: float) -> bool:
    return all(math.isfinite(v) and v > 0 for v in values)


@pytest.mark.slow  # starts a run or a server: `make test` only, not test-fast
def test_http_throughput_bench_runs_small():
    requests, conc = 4, 2
    out = _run(
        "bench.http_throughput",
        f"--requests={requests}",
        f"--concurrency={conc}",
        "--latency-s=0.05",
        "--max-new-tokens=2",
        timeout=240,
    )
    assert re.search(rf"requests={requests} added latency=50 ms/request", out), out
    rows = re.findall(r"^(generate|score)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x$", out, re.M)
    # one row per task and concurrency, in that order
    assert [(t, int(c)) for t, c, *_ in rows] == [("generate", 1), ("generate", conc), ("score", 1), ("score", conc)]
    for task in ("generate", "score"):
        (_, _, s1, r1, x1), (_, _, sn, rn, xn) = [r for r in rows if r[0] == task]
        s1, r1, x1, sn, rn, xn = map(float, (s1, r1, x1, sn, rn, xn))
        assert _finite_positive(s1, r1, sn, rn, xn), rows
        assert x1 == 1.0  # the baseline is the concurrency-1 run
        # req/s and speed-up are derived from the seconds: they must agree with them
        assert _close(r1, requests / s1) and _close(rn, requests / sn), rows
        assert _close(xn, s1 / sn, rel=0.1), rows
    served = re.search(r"^server: (\d+) requests, max in flight (\d+)$", out, re.M)
    assert served, out
    # every request of the four runs reached the server once (no retries, none lost) ...
    assert int(served.group(1)) == 2 * 2 * requests
    # ... and the client never had more in flight than its concurrency allows
    assert 1 <= int(served.group(2)) <= conc


def test_judge_throughput_bench_runs_small():
    tasks = 4
    out = _run("bench.judge_throughput", f"--tasks={tasks}", "--latency=0.05", timeout=240)
    head = re.search(
        rf"^judge tasks: {tasks}, server latency 50 ms/request, max in flight seen by the server (\d+)$", out, re.M
    )
    assert head, out
    # tasks are judged at most 16 at a time, and there are only `tasks` of them
    assert 1 <= int(head.group(1)) <= tasks
    runs = {
        int(c): (float(s), float(rate), int(calls))
        for c, s, rate, calls in re.findall(
            r"^concurrency\s+(\d+):\s+([\d.]+) s\s+([\d.]+) tasks/s\s+\((\d+) calls\)$", out, re.M
        )
    }
    assert set(runs) == {1, 16}, out
    for secs, rate, calls in runs.values():
        assert calls == tasks  # one judge call per task, no re-asks: the judge always answers valid JSON
        assert _finite_positive(secs, rate) and _close(rate, tasks / secs, rel=0.1), runs
    speed_up = float(re.search(r"^speed-up 16 vs 1: ([\d.]+)x", out, re.M).group(1))
    assert _finite_positive(speed_up) and _close(speed_up, runs[1][0] / runs[16][0], rel=0.15, abs_=0.1), out
    cached = re.search(
        r"^cached re-run: ([\d.]+) s, judge calls (\d+), cache hits (\d+), server requests (\d+)", out, re.M
    )
    assert cached, out
    # the re-run over the same cache is answered from it: every task a hit, no call, no request
    assert (int(cached.group(2)), int(cached.group(3)), int(cached.group(4))) == (0, tasks, 0)


@pytest.mark.slow
def test_sft_packing_bench_runs_small():
    samples, batch, max_length = 12, 2, 128
    out = _run(
        "bench.sft_packing", f"--samples={samples}", f"--batch={batch}", f"--max-length={max_length}", timeout=400
    )
    runs = {}
    for m in re.finditer(
        r"^(padded|packed)\s+steps\s+(\d+)\s+real tokens\s+([\d,]+)\s+train\s+([\d.]+)s wall\s+([\d.]+)s cpu\s+"
        r"(\d+) tok/s wall\s+(\d+) tok/cpu-s\s+held-out loss ([\d.]+)\s+\(TRL counted ([\d,]+);",
        out,
        re.M,
    ):
        name, steps, tokens, wall, cpu, tps, tpc, loss, trl = m.groups()
        runs[name] = dict(
            steps=int(steps),
            tokens=int(tokens.replace(",", "")),
            wall=float(wall),
            cpu=float(cpu),
            tps=float(tps),
            tpc=float(tpc),
            loss=float(loss),
            trl=int(trl.replace(",", "")),
        )
    assert set(runs) == {"padded", "packed"}, out
    padded, packed = runs["padded"], runs["packed"]
    # one epoch each over the same (truncated) samples: the same real tokens, and TRL counted them all
    assert padded["tokens"] == packed["tokens"] > 0
    assert padded["trl"] == padded["tokens"] and packed["trl"] == packed["tokens"], runs
    # padded: one step per batch of samples; packed: one row of max_length per step, so at least
    # tokens / max_length steps and no more than one per sample
    assert padded["steps"] == math.ceil(samples / batch)
    assert math.ceil(packed["tokens"] / max_length) <= packed["steps"] <= samples
    for r in runs.values():
        assert _finite_positive(r["wall"], r["cpu"], r["tps"], r["tpc"], r["loss"]), runs
    speed = re.search(
        r"^packing speed-up: ([\d.]+)x real tokens per CPU second .*; ([\d.]+)x per wall second$", out, re.M
    )
    assert speed, out
    per_cpu, per_wall = float(speed.group(1)), float(speed.group(2))
    assert _finite_positive(per_cpu, per_wall)
    assert _close(per_cpu, packed["tpc"] / padded["tpc"]) and _close(per_wall, packed["tps"] / padded["tps"])
    loss = re.search(r"^held-out loss: packed ([\d.]+) vs padded ([\d.]+) \(([+-][\d.]+)%", out, re.M)
    assert loss and (float(loss.group(1)), float(loss.group(2))) == (packed["loss"], padded["loss"]), out
    assert _close(float(loss.group(3)), 100 * (packed["loss"] - padded["loss"]) / padded["loss"], abs_=0.02)


@pytest.mark.slow
@pytest.mark.timeout(960)  # the bench's own run is bounded at 900 s inside
def test_synthesis_effect_bench_runs_one_real_pair(shared_dir, tmp_path):
    out_file = tmp_path / "effect.jsonl"
    out = _run(
        "bench.synthesis_effect",
        "--pairs=1",
        "--max-words=300",
        "--max-steps=1",
        "--initial-tokens=64",
        "--refine-tokens=24",
        "--min-segment-chars=20",
        "--batch=1",
        f"--seed-pairs={shared_dir / 'seed_pairs' / 'hellobench_gpt4o_0806.jsonl'}",
        f"--out={out_file}",
        timeout=900,
    )
    # the real model and the search settings are printed with the figures, not assumed
    assert re.search(r"generator smollm2-135m, scorer smollm2-135m; K=2, max_steps=1, stop_threshold=0.25", out)
    assert "system_prompt='You are a helpful assistant.'" in out and "refine_analysis=False" in out
    records = [line for line in out_file.read_text().splitlines() if line.strip()]
    assert len(records) == 1
    # the same z0 scored under the old and the new scorer context, each a clipped mean NLL in [0, 2]
    scales = re.findall(r"z0 score, (old|new) scorer context: min ([\d.]+), .* max ([\d.]+); (\d)/1 below", out)
    assert [s[0] for s in scales] == ["old", "new"]
    assert all(0 <= float(lo) <= float(hi) <= 2 for _, lo, hi, _ in scales)
    kept = re.search(r"filter outcomes: kept (\d)/1", out)
    assert kept and int(kept.group(1)) in (0, 1)


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "bench").glob("*.py") if not p.stem.startswith("_")))
def test_every_bench_parses_its_arguments(name):
    assert "usage:" in _run(f"bench.{name}", "--help", timeout=120)


@pytest.mark.slow  # starts a run or a server: `make test` only, not test-fast
def test_synthesis_fleet_bench_runs_small(tmp_path):
    pairs = 8
    out_file = tmp_path / "fleet.json"
    out = _run(
        "bench.synthesis_fleet",
        "--quick",
        f"--pairs={pairs}",
        "--time-scale=0.2",
        f"--cache-dir={tmp_path}",
        f"--out={out_file}",
        timeout=240,
    )
    rows = {
        m[0]: m
        for m in re.findall(
            r"^(lockstep|continuous)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)%\s+(\d+)%\s+(\d+)%\s+(\d+)% / (\d+)%"
            r"\s+(\d+)% / (\d+)%\s+(\d+)\s+([\d.]+)\s+(\d+)\s+([\d.]+)$",
            out,
            re.M,
        )
    }
    assert set(rows) == {"lockstep", "continuous"}, out
    for _, _, done, wall, rate, of_bound, *shares_and_work in rows.values():
        shares = shares_and_work[:-4]
        assert int(done) == pairs, out  # every pair finished, none left unfinished
        assert _finite_positive(float(wall), float(rate)) and _close(float(rate), 60 * pairs / float(wall)), out
        assert all(0 <= int(v) <= 100 for v in (of_bound, *shares)), out
    # the same pairs demanded the same work of the fleets under both schedules
    assert rows["lockstep"][-4:] == rows["continuous"][-4:], out
    assert re.search(rf"^same search outcome under both schedules .*: {pairs}/{pairs} pairs$", out, re.M), out
    bound = re.search(r"^bound\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+100%", out, re.M)
    assert bound and int(bound.group(1)) == pairs and _finite_positive(float(bound.group(3))), out
    # no schedule beats the fleets' capacity
    assert all(float(r[4]) <= float(bound.group(3)) * 1.05 for r in rows.values()), out
    last = out.rstrip().splitlines()[-1]
    summary = re.fullmatch(r"continuous/lockstep: (\d+\.\d\d)×, generator busy (\d+)%, scorer busy (\d+)%", last)
    assert summary, last
    assert _close(float(summary.group(1)), float(rows["continuous"][4]) / float(rows["lockstep"][4]), rel=0.05)
    assert (summary.group(2), summary.group(3)) == rows["continuous"][6:8]
    import json

    saved = json.loads(out_file.read_text())
    assert set(saved["schedules"]) == {"lockstep", "continuous"} and saved["bound"]["pairs_per_min"] > 0


@pytest.mark.usefixtures("chromium")  # a missing Chromium fails it (`make browser`), as in test_report_html
def test_report_scale_bench_runs_small():
    out = _run("bench.report_scale", "--pairs=250", "--baseline=10", "--repeats=1", timeout=240)
    rows = {
        int(p): (float(html), float(beside), int(files), float(ms))
        for p, html, beside, files, ms in re.findall(
            r"^pairs\s+(\d+)\s+shard\s+[\d.]+ MB\s+report.html\s+([\d.]+) MB\s+beside\s+([\d.]+) MB in\s+(\d+) files"
            r"\s+build [\d.]+s\s+first render (\d+) ms",
            out,
            re.M,
        )
    }
    assert set(rows) == {10, 250}, out
    # the small run carries its details in the page; the large one in 200-pair chunk files beside it
    assert rows[10][1:3] == (0.0, 0) and rows[250][2] == 2 and rows[250][1] > 0
    assert _finite_positive(rows[10][0], rows[250][0], rows[10][3], rows[250][3])
    ratio = re.search(r"^ratio 250 vs 10 pairs: report.html ([\d.]+)x, first render ([\d.]+)x", out, re.M)
    assert ratio and _close(float(ratio.group(2)), rows[250][3] / rows[10][3], rel=0.1, abs_=0.05), out


def _hellobench_clone(root, means: dict) -> None:
    """A HelloBench-shaped folder: one category of one checklist item (weight 100), and per model and
    subset judgments whose sample scores average to `means[model][subset]`; one malformed line each."""
    (root / "data" / "main_data").mkdir(parents=True)
    (root / "weighted_scores.txt").write_text("REGRESSION_DICT = {'c': [100.0]}\n")
    subsets = ("open_ended_qa", "summarization", "chat", "text_completion", "heuristic_text_generation")
    for s in subsets:
        rows = [{"id": f"{s}_{i}", "category": "c"} for i in range(2)]
        (root / "data" / "main_data" / f"{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for model, by_subset in means.items():
        folder = root / "results" / "judgements" / "main_exp" / model
        folder.mkdir(parents=True)
        for s in subsets:
            m = by_subset[s] / 100
            lines = [
                {"id": f"{s}_0", "checklist_wise_evaluation": [{"checklist_id": 0, "evaluation_score": m - 0.01}]},
                {"id": f"{s}_1", "checklist_wise_evaluation": [{"checklist_id": 0, "evaluation_score": m + 0.01}]},
                {"id": f"{s}_0", "checklist_wise_evaluation": []},  # a repeated id: dropped, as compute.py does
            ]
            (folder / f"{s}_results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_hellobench_groups_bench_finds_the_grouping_that_reproduces_the_papers_figures(tmp_path):
    import subprocess as sp

    # chat alone and text_completion alone carry the paper's HB-A / HB-B of both models; the rest is far off
    far = {"open_ended_qa": 40.0, "summarization": 50.0, "heuristic_text_generation": 60.0}
    means = {
        "gpt4o_0806": {**far, "chat": 83.7, "text_completion": 87.6},
        "claude35": {**far, "chat": 82.9, "text_completion": 88.3},
    }
    clone = tmp_path / "HelloBench"
    _hellobench_clone(clone, means)
    out = _run("bench.hellobench_groups", "--repo", str(clone), "--data", str(tmp_path / "none"), "--top", "3")
    assert "360 candidates (180 groupings × 2 aggregations)" in out
    assert re.search(r"^\s+chat\s+83\.70 \(2/1\)\s+82\.90 \(2/1\)$", out, re.M)  # kept / dropped
    best = re.search(r"^best: HB-A = (.+); HB-B = (.+) \((.+)\), rmse ([\d.]+)", out, re.M)
    assert best.groups() == ("chat", "text_completion", "mean of subset means", "0.000")
    # the same files read from a bare git directory, at HEAD
    sp.run(["git", "init", "-q", str(clone)], check=True)
    sp.run(["git", "-C", str(clone), "add", "."], check=True)
    ident = ["-c", "user.name=t", "-c", "user.email=t@t"]
    sp.run(["git", "-C", str(clone), *ident, "commit", "-qm", "x"], check=True)
    bare = _run("bench.hellobench_groups", "--repo", str(clone / ".git"), "--top", "3")
    assert bare.split("\n\n", 1)[1] == out.split("\n\n", 1)[1]
    # without a clone the bench says so and runs nothing
    assert "not run: no HelloBench clone given" in _run("bench.hellobench_groups")


@pytest.mark.slow  # starts a run or a server: `make test` only, not test-fast
def test_scoring_tokens_bench_runs_on_the_tiny_model(shared_dir, tmp_path):
    out = _run(
        "bench.scoring_tokens",
        "--model",
        "tiny-qwen3",
        f"--cache-dir={tmp_path}",
        "--demo",
        "2",
        "--real",
        "2",
        "--max-words",
        "400",
        "--threads",
        "1",
    )
    for name in ("demo pairs (2):", "real pairs (2):"):
        block = out.split(name, 1)[1]
        figures = re.search(r"reference rule .*?mean \|Δ\| ([\d.]+)\s+max \|Δ\| ([\d.]+)\s+mean Δ ([+-][\d.]+)", block)
        mean_abs, max_abs, mean = (float(v) for v in figures.groups())
        assert 0 <= mean_abs <= max_abs and abs(mean) <= mean_abs + 1e-5
        differ = re.search(
            r"scored tokens differ for (\d+)/2 pairs \(a straddling first token: (\d+), last token: (\d+)\)", block
        )
        n, start, end = (int(v) for v in differ.groups())
        assert max(start, end) <= n <= 2

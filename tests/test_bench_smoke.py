"""The benchmarks still run: each in a tiny configuration, so that a change to the code they drive
cannot leave `make bench` broken unnoticed. Their figures are not checked here, only that they are
produced and sane."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import REPO


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
    assert re.search(r"final mix\s+\d+ records", out)


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "bench").glob("*.py") if not p.stem.startswith("_")))
def test_every_bench_parses_its_arguments(name):
    assert "usage:" in _run(f"bench.{name}", "--help", timeout=120)

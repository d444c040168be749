"""`python -m bench.gpu_check --tiny`: the GPU acceptance check's own code, on the CPU with a tiny Qwen3, so
that it is known to work before a GPU is lent for it. The same parts run as on the GPU: the SFT stage
with DeepSpeed ZeRO-3 (gloo here), the prefix and naive scorers, batched generation, the planner's
choice, the JSON and the summary line. Speed figures are not held to the GPU goals here; they must be
there, finite and positive, and agree with each other."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench import _gpu_wheels as gw  # noqa: E402
from bench import gpu_check  # noqa: E402

SUMMARY = re.compile(
    r"^sft MFU (?:n/a \(CPU\)|\d+\.\d%|n/a), peak (\d+\.\d) GiB \(planner (\d+\.\d) GiB\), "
    r"scorer prefix/naive (\d+\.\d\d)×$"
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check") / "tiny.json"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--tiny", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    return proc, json.loads(out.read_text()) if out.exists() else None


def _positive(*values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values)


@pytest.mark.timeout(300)
@pytest.mark.slow  # starts a run or a server: `make test` only, not test-fast
def test_tiny_check_runs_every_part_and_reports(tiny_run):
    proc, report = tiny_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report["ok"] and report["device"]["kind"] == "cpu"

    # the planner chose, and the stage trained the chosen plan
    assert report["plan"]["shape"] == "tiny-qwen3" and report["plan"]["deepspeed"] == "zero3"
    assert [c["fits"] for c in report["candidates"]] == [True]
    sft = report["sft"]
    assert sft["steps"] == 3 and sft["measured_steps"] == 2  # the first step is the warm-up
    assert len(sft["losses"]) == 3 and all(math.isfinite(v) and 5 < v < 12 for v in sft["losses"])
    assert _positive(sft["step_s"], sft["tokens_per_s"], sft["peak_gib"], report["plan"]["planner_gib"])
    # the tokens of a step over its time are the reported rate (packed rows of up to 256 tokens)
    assert 0 < sft["tokens_per_step"] <= 256
    assert sft["tokens_per_s"] * sft["step_s"] == pytest.approx(sft["tokens_per_step"], rel=0.35)
    assert sft["mfu"] is None and "RSS" in sft["peak_kind"]  # no GPU peak on a CPU

    sc = report["scorer"]
    assert sc["k"] == 2 and sc["rewritten_segment"] == sc["z_segments"] // 2
    assert _positive(sc["naive_s"], sc["prefix_s"], sc["speedup"], sc["naive_scored_tokens_per_s"])
    assert sc["speedup"] == pytest.approx(sc["naive_s"] / sc["prefix_s"], rel=0.01)
    assert sc["prefix_scored_tokens_per_s"] == pytest.approx(
        sum(sc["scored_tokens_per_candidate"]) / sc["prefix_s"], rel=0.01
    )
    # the prefix scorer ran the candidates' suffixes only: the rewritten segment on, not the prompt
    assert 0 < sc["tokens_run_share"] < 0.8 and sc["token_bound"] > 1.25
    # both scorers give the search the same scores (float rounding apart)
    tol = 1e-4 if report["infer"]["dtype"] == "float32" else 0.05
    assert sc["max_abs_delta_clipped_mean"] <= tol, sc
    assert all(0 < v <= 2 for v in sc["scores_naive"] + sc["scores_prefix"])  # clipped mean NLL in [0, 2]

    gen = report["generation"]
    assert [r["batch"] for r in gen["rows"]] == [1, 32]
    for r in gen["rows"]:
        assert r["batch"] <= r["new_tokens"] <= r["batch"] * gen["max_new_tokens"]
        # seconds are rounded to the millisecond, the rate to a tenth: compare within those roundings
        assert r["new_tokens"] / r["tokens_per_s"] == pytest.approx(r["seconds"], rel=0.002, abs=0.0006)

    lines = proc.stdout.strip().splitlines()
    m = SUMMARY.match(lines[-1])
    assert m, lines[-1]
    assert lines[-1] == report["summary"] and lines[-1].startswith("sft MFU n/a (CPU)")
    assert float(m.group(1)) == pytest.approx(sft["peak_gib"], abs=0.051)
    assert float(m.group(2)) == pytest.approx(report["plan"]["planner_gib"], abs=0.051)
    assert float(m.group(3)) == pytest.approx(sc["speedup"], abs=0.006)


def test_peak_table_names_each_gpu():
    assert gpu_check.peak_bf16("NVIDIA H100 80GB HBM3")[0] == 989.0  # how torch names the SXM card
    assert gpu_check.peak_bf16("NVIDIA H100 PCIe")[0] == 756.0
    assert gpu_check.peak_bf16("NVIDIA H200")[0] == 989.0
    peak, why = gpu_check.peak_bf16("NVIDIA A10G")
    assert peak is None and "--peak-tflops" in why


def test_summary_line_on_a_gpu_report():
    report = {
        "device": {"kind": "cuda"},
        "sft": {"mfu": 0.4123, "peak_gib": 27.34},
        "plan": {"planner_gib": 26.7},
        "scorer": {"speedup": 1.414},
    }
    line = gpu_check.summary_line(report)
    assert line == "sft MFU 41.2%, peak 27.3 GiB (planner 26.7 GiB), scorer prefix/naive 1.41×"
    assert SUMMARY.match(line)
    goals = gpu_check.goals(report)
    assert goals[0].startswith("MFU >= 40%: met") and "within 15%" in goals[1] and "met" in goals[2]
    assert "NOT met" in gpu_check.goals({**report, "scorer": {"speedup": 1.1}})[2]


def test_the_carried_set_is_what_this_environment_runs():
    # every carried package is installed here, and their requirements hold among themselves
    assert all(gw.installed_version(n) for n in gw.CARRIED)
    assert gw.unmet_requirements(gw.CARRIED) == []
    manifest = {"packages": {n: {"version": gw.installed_version(n)} for n in gw.CARRIED}}
    assert gw.outdated(manifest) == []
    manifest["packages"]["trl"] = {"version": "0.0.1"}
    assert gw.outdated(manifest) == [f"trl {gw.installed_version('trl')} (carried: 0.0.1)"]


def test_wheels_install_offline_into_a_target(tmp_path):
    """The install step the GPU machine runs: no index, no resolving, into a folder put first on PYTHONPATH."""
    dest, site = tmp_path / "whl", tmp_path / "site"
    dest.mkdir()
    info = "gpucheckprobe-1.2.3.dist-info"
    files = {
        "gpucheckprobe/__init__.py": "VALUE = 42\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: gpucheckprobe\nVersion: 1.2.3\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(dest / "gpucheckprobe-1.2.3-py3-none-any.whl", "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr(f"{info}/RECORD", "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n")
    gw.install(dest, site)
    got = subprocess.run(
        [
            sys.executable,
            "-c",
            "import gpucheckprobe, importlib.metadata as m; print(gpucheckprobe.VALUE, m.version('gpucheckprobe'))",
        ],
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert got.stdout.split() == ["42", "1.2.3"]


def test_wheels_are_installed_only_when_missing_and_only_for_this_python(tmp_path, monkeypatch):
    monkeypatch.delenv(gpu_check.SITE_ENV, raising=False)
    site = tmp_path / "site"
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    packages = {n: {"version": gw.installed_version(n), "file": "x.whl", "bytes": 1} for n in gw.CARRIED}
    (tmp_path / gw.MANIFEST).write_text(json.dumps({"python_version": "3.0", "packages": packages}))
    # everything carried is here already: nothing to install, whichever Python the wheels were for
    info = gpu_check.ensure_wheels(tmp_path, site, [])
    assert info["installed"] is False and info["packages"] == len(gw.CARRIED) and not site.exists()
    packages["trl"]["version"] = "0.0.1"
    (tmp_path / gw.MANIFEST).write_text(json.dumps({"python_version": "3.0", "packages": packages}))
    with pytest.raises(gpu_check.SetupError, match=f"wheels for Python 3.0, this is Python {here}"):
        gpu_check.ensure_wheels(tmp_path, site, [])
    assert not site.exists()

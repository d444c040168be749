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
    r"^sft MFU (\d+\.\d%|n/a), peak (\d+\.\d) GiB \(planner (\d+\.\d) GiB\), scorer prefix/naive (\d+\.\d\d)×$"
)
FIXTURES = Path(__file__).parent / "fixtures" / "gpu_probe"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("gpu-check")
    out, work = base / "tiny.json", base / "work"  # the work folder is kept: the test reads the tokenised data
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "OUT")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--tiny", "--out", str(out), "--work", str(work)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=450,
    )
    return proc, json.loads(out.read_text()) if out.exists() else None, work


def _positive(*values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values)


def _flops_per_token(shape_fields: dict, tokenized: Path) -> float:
    """A trained token's FLOPs counted from a model of the shape (its nn.Linear weights: the matmuls) and
    the tokenised samples (causal pairs per token), not from the product's formula."""
    import numpy as np
    import torch
    from datasets import load_from_disk
    from transformers import AutoConfig, AutoModelForCausalLM

    f = shape_fields
    config = AutoConfig.for_model(
        "qwen3",
        vocab_size=f["vocab"],
        hidden_size=f["hidden"],
        intermediate_size=f["intermediate"],
        num_hidden_layers=f["num_layers"],
        num_attention_heads=f["heads"],
        num_key_value_heads=f["kv_heads"],
        head_dim=f["head_dim"],
        tie_word_embeddings=f["tied_embeddings"],
    )
    model = AutoModelForCausalLM.from_config(config)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    lengths = np.array([len(ids) for ids in load_from_disk(str(tokenized))["input_ids"]], dtype=np.float64)
    pairs_per_token = (lengths * (lengths + 1) / 2).sum() / lengths.sum()
    return 6 * linear + 12 * f["num_layers"] * f["heads"] * f["head_dim"] * pairs_per_token


@pytest.mark.timeout(480)
@pytest.mark.slow  # starts a run or a server: `make test` only, not test-fast
def test_tiny_check_runs_every_path_of_the_gpu_run(tiny_run):
    proc, report, work = tiny_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report["ok"] and report["device"]["kind"] == "cpu"

    # the planner's choice among several candidates: Qwen3-8B refused (GPU memory without offload, this
    # machine's RAM with it), the tiny shape fits both ways
    verdicts = [(c["shape"], c["deepspeed"], c["fits"]) for c in report["candidates"]]
    assert verdicts == [
        ("qwen3-8b", "zero3", False),
        ("qwen3-8b", "zero3-offload", False),
        ("tiny-qwen3", "zero3", True),
        ("tiny-qwen3", "zero3-offload", True),
    ]
    assert "sft: the plan needs" in report["candidates"][0]["why_not"]
    assert "GiB of RAM" in report["candidates"][1]["why_not"]
    tiny_fields = report["candidates"][2]["shape_fields"]

    # the SFT part trained the offloaded plan (DeepSpeed's CPU Adam), the GPU's choice on an H100
    (sft,) = report["sft_attempts"]
    assert (sft["shape"], sft["deepspeed"]) == ("tiny-qwen3", "zero3-offload") and "error" not in sft
    assert report["plan"]["deepspeed"] == "zero3-offload" and report["plan"]["offload"]
    assert sft["cpu_adam_instances"] == 1  # the optimizer that stepped was DeepSpeed's compiled CPU Adam
    # the width part: the layer shape cut to what the planner fits without offload (here the whole tiny
    # model: this machine's RAM holds every cut), trained without offload, the GPU's fallback path
    width, wplan = report["width"], report["width_plan"]
    assert "error" not in width and wplan["deepspeed"] == "zero3" and not wplan["offload"]
    assert width["cpu_adam_instances"] == 0
    assert wplan["shape_fields"] == tiny_fields and _positive(wplan["planner_gib"], report["plan"]["planner_gib"])

    for a, folder in ((sft, "sft-tiny-qwen3-zero3-offload"), (width, "sft-tiny-qwen3-width-zero3")):
        # gradient accumulation over two packed rows of at most 256 tokens per optimizer step
        assert a["steps"] == 3 and a["grad_accum"] == 2 and a["measured_steps"] == 2
        assert 256 < a["tokens_per_step"] <= 512
        assert len(a["losses"]) == 3 and all(math.isfinite(v) and 5 < v < 12 for v in a["losses"])
        assert _positive(a["step_s"], a["tokens_per_s"], a["peak_gib"])
        # MFU: the stage's figure per step is this test's FLOPs count x tokens/s over the peak of the
        # dtype that ran (bf16 under DeepSpeed), and lies in (0, 1]
        assert a["compute_dtype"] == "bfloat16" and "measured bfloat16 matmul peak" in a["mfu_peak"]
        assert a["attention"] == "sdpa"
        sft_dir = work / folder / "sft"
        (tokenized,) = (sft_dir / "tokenized").glob("*/data")
        flops = _flops_per_token(tiny_fields, tokenized)
        rows = [json.loads(line) for line in (sft_dir / "train_log.jsonl").read_text().splitlines()]
        assert len(rows) == 3
        for r in rows[1:]:
            assert 0 < r["mfu"] <= 1
            assert r["mfu"] == pytest.approx(flops * r["tokens_per_s"] / (a["mfu_peak_tflops"] * 1e12), rel=1e-9)
        assert a["mfu"] is not None and 0 < a["mfu"] <= 1

    sc = report["scorer"]
    assert sc["k"] == 2 and sc["rewritten_segment"] == sc["z_segments"] // 2
    assert _positive(sc["naive_s"], sc["prefix_s"], sc["speedup"], sc["naive_scored_tokens_per_s"])
    # the prefix scorer ran the candidates' suffixes only: the rewritten segment on, not the prompt
    assert 0 < sc["tokens_run_share"] < 0.8 and sc["token_bound"] > 1.25
    # both scorers give the search the same scores (float rounding apart)
    tol = 1e-4 if report["infer"]["dtype"] == "float32" else 0.05
    assert sc["max_abs_delta_clipped_mean"] <= tol, sc
    assert all(0 < v <= 2 for v in sc["scores_naive"] + sc["scores_prefix"])  # clipped mean NLL in [0, 2]

    # attention over a packed row: the kernel that skips masked pairs gives the full mask's output
    att = report["attention"]
    assert att["length"] == 2048 and att["samples"] == 7 and att["needed_pair_share"] < 0.1
    assert att["per_sample_max_abs_diff"] < 1e-5 and _positive(att["full_mask_s"], att["per_sample_s"])

    gen = report["generation"]
    assert [r["batch"] for r in gen["rows"]] == [1, 32]
    for r in gen["rows"]:
        assert r["batch"] <= r["new_tokens"] <= r["batch"] * gen["max_new_tokens"] and _positive(r["tokens_per_s"])

    # the goals are judged on this measured report: each verdict is its figure against the bar
    off = (report["plan"]["planner_gib"] - sft["peak_gib"]) / sft["peak_gib"]
    expected = [
        (width["mfu"] >= 0.40, f"({100 * width['mfu']:.1f}%)"),  # MFU's goal is set at the 8B width
        (abs(off) <= 0.15, f"({100 * off:+.1f}%)"),
        (sc["speedup"] >= 1.3, f"({sc['speedup']:.2f}x)"),
    ]
    assert len(report["goals"]) == 3
    for line, (met, figure) in zip(report["goals"], expected):
        assert (": met" in line) == met and (": NOT met" in line) == (not met) and line.endswith(figure), line
    assert "== goals (judged on a CPU rehearsal" in proc.stdout

    lines = proc.stdout.strip().splitlines()
    m = SUMMARY.match(lines[-1])
    assert m, lines[-1]
    assert lines[-1] == report["summary"]
    assert float(m.group(1)[:-1]) == pytest.approx(100 * sft["mfu"], abs=0.051)
    assert float(m.group(2)) == pytest.approx(sft["peak_gib"], abs=0.051)
    assert float(m.group(3)) == pytest.approx(report["plan"]["planner_gib"], abs=0.051)
    assert float(m.group(4)) == pytest.approx(sc["speedup"], abs=0.006)


def test_peak_table_names_each_gpu():
    assert gpu_check.peak_bf16("NVIDIA H100 80GB HBM3")[0] == 989.0  # how torch names the SXM card
    assert gpu_check.peak_bf16("NVIDIA H100 PCIe")[0] == 756.0
    assert gpu_check.peak_bf16("NVIDIA H200")[0] == 989.0
    peak, why = gpu_check.peak_bf16("NVIDIA A10G")
    assert peak is None and "--peak-tflops" in why


def test_the_probe_reads_what_torch_and_nvidia_smi_print():
    read = lambda name: (FIXTURES / name).read_text()
    h100 = gpu_check.device_from_probe(read("h100-sxm.torch.out"), read("h100-sxm.nvidia-smi.csv"))
    assert h100["kind"] == "cuda" and h100["name"] == "NVIDIA H100 80GB HBM3" and h100["driver"] == "580.82.07"
    assert h100["memory_bytes"] == h100["smi_total_bytes"] == 81559 * 2**20 and h100["bf16"]
    assert gpu_check.peak_bf16(h100["name"])[0] == 989.0
    # a warning line before the JSON; another process holds 1 GiB: the planner gets the rest
    h200 = gpu_check.device_from_probe(read("h200.torch.out"), read("h200.nvidia-smi.csv"))
    assert h200["memory_total_bytes"] == 143771 * 2**20 and h200["used_by_others_bytes"] == 2**30
    assert h200["memory_bytes"] == (143771 - 1024) * 2**20
    assert h200["probe_out"]["nvidia_smi"] == read("h200.nvidia-smi.csv")  # kept in the JSON, for new fixtures
    # without nvidia-smi: torch's figure alone
    assert gpu_check.device_from_probe(read("h200.torch.out"), None)["memory_bytes"] == 143771 * 2**20
    with pytest.raises(gpu_check.SetupError, match="no CUDA device"):
        gpu_check.device_from_probe(read("no-cuda.torch.out"), None)
    with pytest.raises(gpu_check.SetupError, match="CUDA_VISIBLE_DEVICES"):
        gpu_check.device_from_probe(read("h100-sxm.torch.out"), read("h200.nvidia-smi.csv"))


@pytest.mark.slow  # six Hydra compositions: ~8 s on a busy 2-core machine
def test_the_planner_picks_each_lent_cards_shape(monkeypatch, tmp_path):
    """What the GPU run would train: on an H100 (78 GiB, 128 GiB of RAM) Qwen3-4B with ZeRO-Offload (8B's
    offloaded states exceed the RAM); on an H200 (139 GiB) Qwen3-4B without offload; without a C++
    toolchain no offloaded plan is taken."""
    work = tmp_path

    def plan(memory_gib):
        overrides = lambda ds, name: gpu_check.sft_overrides(
            ds, name, work / name, work, gpu_check.GPU_SIZES, False, memory_gib, 989.0
        )
        shapes, options = gpu_check.family(), ["zero3", "zero3-offload"]
        return gpu_check.plan_candidates(shapes, options, overrides, memory_gib, host_bytes=128 * gpu_check.GiB)

    h100 = plan(78.0)
    assert [(c["shape"], c["deepspeed"]) for c in h100 if c["fits"]][0] == ("qwen3-4b", "zero3-offload")
    (eight_offload,) = [c for c in h100 if (c["shape"], c["deepspeed"]) == ("qwen3-8b", "zero3-offload")]
    assert not eight_offload["fits"] and "GiB of RAM" in eight_offload["why_not"]
    h200 = plan(139.0)
    assert [(c["shape"], c["deepspeed"]) for c in h200 if c["fits"]][0] == ("qwen3-4b", "zero3")

    # the 8B width: Qwen3-8B's layers, as many as fit without offload (the next one would not)
    overrides = lambda ds, name: gpu_check.sft_overrides(ds, name, work, work, gpu_check.GPU_SIZES, False, 78.0, 989.0)
    width, cuts = gpu_check.width_candidate(gpu_check.family()["qwen3-8b"], overrides, 78.0)
    layers = width["shape_fields"]["num_layers"]
    assert 1 <= layers < 36 and width["shape_fields"]["hidden"] == 4096 and width["shape_fields"]["vocab"] == 151936
    assert [c["fits"] for c in cuts] == [True] * layers + [False] * (36 - layers)
    assert width["planner_gib"] <= 78.0 < cuts[layers]["planner_gib"]

    monkeypatch.setattr(gpu_check.shutil, "which", lambda name: None)
    problem = gpu_check.jit_toolchain_problem()
    assert "a C++ compiler" in problem and "ninja" in problem
    no_toolchain = plan(78.0)
    assert all(c["why_not"] == problem for c in no_toolchain if c["offload"] and "RAM" not in (c["why_not"] or ""))
    assert [(c["shape"], c["deepspeed"]) for c in no_toolchain if c["fits"]][0] == ("qwen3-1.7b", "zero3")


@pytest.mark.slow  # four Hydra compositions
def test_the_device_command_names_the_carried_wheels_and_returns_its_figures(capsys, tmp_path):
    wheels = tmp_path / ".whl"
    wheels.mkdir()
    (wheels / "x-1-py3-none-any.whl").write_bytes(b"0" * 2**20)
    (wheels / gw.MANIFEST).write_text(json.dumps({"python_version": "3.12", "packages": {"x": {"version": "1"}}}))
    assert gpu_check.print_device_command(wheels) == 0
    out = capsys.readouterr().out
    carry = os.path.relpath(wheels, REPO)
    assert f'python3 -m bench.gpu_check --wheels {carry} --out "$OUT/gpu_check.json"' in out
    assert f'carry:     ["{carry}"]' in out and "wheels 1.0 MiB (1 packages)" in out
    assert "nvidia-h200" in out and "qwen3-4b zero3 (" in out and "qwen3-4b zero3-offload (" in out


def test_summary_line_on_a_gpu_report():
    report = {
        "device": {"kind": "cuda"},
        "sft": {"mfu": 0.3512, "peak_gib": 27.34},
        "width": {"mfu": 0.4123},
        "plan": {"planner_gib": 26.7},
        "scorer": {"speedup": 1.414},
    }
    line = gpu_check.summary_line(report)
    assert line == "sft MFU 35.1%, peak 27.3 GiB (planner 26.7 GiB), scorer prefix/naive 1.41×"
    assert SUMMARY.match(line)
    goals = gpu_check.goals(report)
    assert goals[0] == "MFU >= 40% at the 8B width: met (41.2%)" and "within 15%" in goals[1] and "met" in goals[2]
    assert "NOT met" in gpu_check.goals({**report, "scorer": {"speedup": 1.1}})[2]
    # a CPU report is judged too (the rehearsal runs the judging), on its own figures
    cpu = {**report, "device": {"kind": "cpu"}, "width": {"mfu": 0.123}, "sft": {"peak_gib": 0.8}}
    cpu["plan"] = {"planner_gib": 4.0}
    assert gpu_check.goals(cpu) == [
        "MFU >= 40% at the 8B width: NOT met (12.3%)",
        "planner within 15% of the measured peak: NOT met (+400.0%)",
        "prefix scorer >= 1.3x naive: met (1.41x)",
    ]


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

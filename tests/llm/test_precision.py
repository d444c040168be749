"""`dtype: auto`: bfloat16 only where this machine computes it faster, chosen before stage keys."""

from __future__ import annotations

import math

import pytest

from deepwriter.config.root import ConfigError
from deepwriter.llm import precision
from deepwriter.testing.repo import compose_typed


def _rates(speedup: float):
    return lambda: {"float32": 50e9, "bfloat16": 50e9 * speedup}


def test_cpu_picks_bf16_only_when_the_probe_shows_it_is_faster():
    assert precision.pick_dtype("cpu", cpu_rates=_rates(3.4))[0] == "bfloat16"
    dtype, why = precision.pick_dtype("cpu", cpu_rates=_rates(0.4))  # emulated bf16: slower
    assert dtype == "float32" and "0.40x" in why
    # just under the bar is not enough: bf16 rounding must buy a real speed-up
    assert precision.pick_dtype("cpu", cpu_rates=_rates(precision.MIN_CPU_SPEEDUP - 0.01))[0] == "float32"


def test_gpu_choice_follows_bf16_support(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision.pick_dtype("cuda:0")[0] == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    dtype, why = precision.pick_dtype("cuda")
    assert dtype == "float32" and "float16 is not picked" in why


def test_the_real_probe_measures_a_ratio_and_the_choice_follows_it():
    """Two real, uncached measurements (not the memoised one compared with itself)."""
    measured = [precision.cpu_matmul_rates.__wrapped__() for _ in range(2)]
    assert all(math.isfinite(v) and v > 0 for m in measured for v in m.values()), measured
    fresh = [precision.cpu_bf16_speedup(m) for m in measured]
    for m, r in zip(measured, fresh):
        want = "bfloat16" if r >= precision.MIN_CPU_SPEEDUP else "float32"
        assert precision.pick_dtype("cpu", cpu_rates=lambda m=m: m)[0] == want
    # a hardware fact: two measurements well away from the threshold agree on the choice
    if all(abs(math.log(r / precision.MIN_CPU_SPEEDUP)) > 0.25 for r in fresh):
        assert (fresh[0] >= precision.MIN_CPU_SPEEDUP) == (fresh[1] >= precision.MIN_CPU_SPEEDUP)


def test_resolution_touches_only_auto_in_process_models_and_changes_their_stage_keys(tmp_path):
    from deepwriter.pipeline.runner import plan

    cfg = compose_typed(
        "+recipe=demo",
        "models.scorer.dtype=auto",
        "models.generator.dtype=float32",
        "model@models.judge=gpt-4o-judge",
        f"paths.runs_dir={tmp_path}",
    )
    assert cfg.models.judge.dtype == "auto"  # an HTTP model: the server decides
    bf16 = precision.resolve_model_dtypes(cfg, device="cpu", picker=lambda d: ("bfloat16", "test"))
    fp32 = precision.resolve_model_dtypes(cfg, device="cpu", picker=lambda d: ("float32", "test"))
    assert (bf16.models.scorer.dtype, fp32.models.scorer.dtype) == ("bfloat16", "float32")
    assert bf16.models.generator.dtype == fp32.models.generator.dtype == "float32"
    assert bf16.models.judge.dtype == "auto"
    assert cfg.models.scorer.dtype == "auto"  # the input config is not modified
    # The synthesis output depends on the scorer's numerics, so its key must too.
    assert plan(bf16)["synthesize"].key != plan(fp32)["synthesize"].key
    assert (
        plan(bf16)["synthesize"].key
        == plan(precision.resolve_model_dtypes(cfg, device="cpu", picker=lambda d: ("bfloat16", "again")))[
            "synthesize"
        ].key
    )


def test_an_unknown_dtype_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"models\.scorer\.dtype: got 'bf16'; expected one of"):
        compose_typed("models.scorer.dtype=bf16")  # to_typed validates


def test_loading_with_auto_gives_the_picked_dtype(tiny_model_cfg, model_cache):
    import dataclasses

    import torch

    from deepwriter.llm import models

    model = models.load_model(dataclasses.replace(tiny_model_cfg, dtype="auto"), model_cache, device="cpu")
    want = precision.pick_dtype("cpu")[0]
    assert next(model.parameters()).dtype == getattr(torch, want)


@pytest.mark.slow  # starts a run or a server: `make test` only, not test-fast
def test_the_demo_starts_by_printing_the_cpu_rates_and_the_chosen_dtypes(tmp_path):
    """Before any stage: the CPU (name, threads, bf16 units), its measured matmul rates, and the dtype
    each in-process model will run in, consistent with those rates. (recipe.stages=[eval] alone stops
    right after, before any work: its input is not there.)"""
    import os
    import re
    import subprocess
    import sys

    from deepwriter.testing.repo import REPO

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "deepwriter.train",
            "+recipe=demo",
            f"paths.runs_dir={tmp_path}",
            "recipe.stages=[eval]",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    out = done.stdout + done.stderr
    assert done.returncode == 2 and "needs the output of 'sft'" in done.stderr, out[-2000:]
    cpu = re.search(
        r"CPU: (.+) \((\d+) threads; bf16 units: ([^)]+)\); measured matmul peak float32 ([\d.]+) GFLOP/s "
        r"\(1024x1024, best of 1 s\); bfloat16 ([\d.]+)x float32 in the dtype probe",
        out,
    )
    assert cpu, out[-2000:]
    fp32, ratio = float(cpu.group(4)), float(cpu.group(5))
    assert fp32 > 0 and ratio > 0 and int(cpu.group(2)) >= 1
    flags = open("/proc/cpuinfo").read()
    assert ("amx_bf16" in flags) == ("amx_bf16" in cpu.group(3))
    chosen = dict(re.findall(r"models\.(\w+)\.dtype: auto -> (\w+)", out))
    assert set(chosen) == {"generator", "scorer", "student", "judge"}, out[-2000:]
    want = "bfloat16" if ratio >= precision.MIN_CPU_SPEEDUP else "float32"
    assert set(chosen.values()) == {want} or abs(ratio - precision.MIN_CPU_SPEEDUP) < 0.01  # printed rounded
    assert out.index("CPU: ") < out.index("models.generator.dtype: auto")

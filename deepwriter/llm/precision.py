"""`dtype: auto` for models that run in this process: bfloat16 where this machine computes it faster
than float32, float32 elsewhere.

On a GPU with bf16 support the answer is known (tensor cores); float16 is never picked, because
several model families overflow in it. On a CPU it depends on the instruction set: with AMX or
AVX512-BF16 a bf16 matmul runs several times faster than fp32, without them it is emulated and
slower. So the CPU answer comes from a short matmul probe (~0.2 s, once per process) that compares
the two dtypes. Before any stage runs the CPU's name, its float32 matmul peak (a longer, larger
measurement: a short one reads several times too low on a busy machine) and the dtype each model
will run in are logged; that peak, in the dtype SFT computes in, is what a CPU run's MFU is measured
against.

The choice is made before stage keys are computed (`resolve_model_dtypes`), so a stage's key and
its recorded config carry the dtype that actually ran: outputs made in bf16 on one machine are not
reused by a float32 run on another.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
from functools import lru_cache
from typing import Callable, Dict, Optional, Tuple

from deepwriter.config.llm import Backend

log = logging.getLogger("deepwriter")

# A bf16 probe must beat fp32 by this factor on a CPU: below it the rounding is not worth it.
MIN_CPU_SPEEDUP = 1.3


def _matmul_rate(dtype: str, n: int, seconds: float) -> float:
    """FLOP/s of an n x n matmul on this CPU with torch's threads: the fastest of repeated runs."""
    import torch

    a, b = torch.randn(n, n, dtype=getattr(torch, dtype)), torch.randn(n, n, dtype=getattr(torch, dtype))
    torch.mm(a, b)  # first call pays for kernel selection
    fastest, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        torch.mm(a, b)
        fastest = min(fastest, time.perf_counter() - t)
    return 2.0 * n**3 / fastest


@lru_cache(maxsize=None)
def cpu_matmul_rates(n: int = 512, seconds: float = 0.08) -> Dict[str, float]:
    """The dtype probe: FLOP/s per dtype (float32, bfloat16) of a short run of small matmuls, enough
    to compare the two (a memoised hardware fact, not state: it does not change while the process
    runs), not to give either's peak."""
    return {name: _matmul_rate(name, n, seconds) for name in ("float32", "bfloat16")}


@lru_cache(maxsize=None)
def cpu_peak_rate(dtype: str = "float32", n: int = 1024, seconds: float = 1.0) -> float:
    """This CPU's attainable matmul rate in `dtype` (FLOP/s): the fastest 1024 x 1024 matmul of a
    second of them, the peak a CPU run's MFU is measured against. (The dtype probe's tenth of a
    second of 512 x 512 matmuls reads several times lower on a machine other work keeps busy.)"""
    return _matmul_rate(dtype, n, seconds)


def cpu_bf16_speedup(rates: Optional[Dict[str, float]] = None) -> float:
    """How much faster this CPU multiplies in bf16 than in fp32 (below 1: slower)."""
    rates = rates or cpu_matmul_rates()
    return rates["bfloat16"] / rates["float32"]


def cpu_description() -> str:
    """This CPU in one line: its name, torch's threads, and whether it has bf16 matrix units."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:  # not Linux: the name platform gives, units unknown
        return f"{name} ({_threads()} threads)"
    units = [u for u in ("amx_bf16", "avx512_bf16") if u in flags]
    return f"{name} ({_threads()} threads; bf16 units: {', '.join(units) or 'none'})"


def _threads() -> int:
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:
        return os.cpu_count() or 1


def pick_dtype(device: str, cpu_rates: Callable[[], Dict[str, float]] = cpu_matmul_rates) -> Tuple[str, str]:
    """The dtype `auto` means on `device`, and why."""
    import torch

    if device.startswith("cuda"):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bfloat16", "GPU with bf16 support"
        return "float32", "GPU without bf16 support (float16 is not picked: some models overflow in it)"
    if device.startswith("cpu"):
        ratio = cpu_bf16_speedup(cpu_rates())
        if ratio >= MIN_CPU_SPEEDUP:
            return "bfloat16", f"CPU bf16 matmul {ratio:.1f}x faster than float32"
        return "float32", f"CPU bf16 matmul only {ratio:.2f}x float32 (needs >= {MIN_CPU_SPEEDUP}x)"
    return "float32", f"device {device!r}: bf16 speed unknown"


def log_cpu_rates() -> None:
    """Measure (once) and log this CPU: its name and bf16 units, its float32 matmul peak and how bf16
    compares in the dtype probe."""
    log.info(
        "CPU: %s; measured matmul peak float32 %.1f GFLOP/s (1024x1024, best of 1 s); bfloat16 %.2fx "
        "float32 in the dtype probe (dtype auto picks bfloat16 at >= %.1fx)",
        cpu_description(),
        cpu_peak_rate("float32") / 1e9,
        cpu_bf16_speedup(),
        MIN_CPU_SPEEDUP,
    )


def resolve_model_dtypes(cfg, device: Optional[str] = None, picker: Callable[[str], Tuple[str, str]] = pick_dtype):
    """A copy of the root config with every in-process model's `dtype: auto` replaced by the dtype
    chosen for `device` (default: this process's device). HTTP backends are left alone: the server
    decides."""

    changed = {}
    for role in (f.name for f in dataclasses.fields(cfg.models)):
        mcfg = getattr(cfg.models, role)
        if mcfg.dtype != "auto" or mcfg.backend != Backend.transformers:
            continue
        if device is None:  # torch is imported only when some model needs the answer
            from deepwriter.llm.hf import default_device  # torch: see the line above

            device = default_device()
        if not changed and device.startswith("cpu") and picker is pick_dtype:
            log_cpu_rates()  # the measurement the choice rests on, once, before the choices
        dtype, why = picker(device)
        log.info("models.%s.dtype: auto -> %s (%s)", role, dtype, why)
        changed[role] = dataclasses.replace(mcfg, dtype=dtype)
    if not changed:
        return cfg
    return dataclasses.replace(cfg, models=dataclasses.replace(cfg.models, **changed))

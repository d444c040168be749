"""`dtype: auto` for models that run in this process: bfloat16 where this machine computes it faster
than float32, float32 elsewhere.

On a GPU with bf16 support the answer is known (tensor cores); float16 is never picked, because
several model families overflow in it. On a CPU it depends on the instruction set: with AMX or
AVX512-BF16 a bf16 matmul runs several times faster than fp32, without them it is emulated and
slower. So the CPU answer comes from a short matmul probe (~0.2 s, once per process and device).

The choice is made before stage keys are computed (`resolve_model_dtypes`), so a stage's key and
its recorded config carry the dtype that actually ran: outputs made in bf16 on one machine are not
reused by a float32 run on another.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from functools import lru_cache
from typing import Callable, Optional, Tuple

log = logging.getLogger("deepwriter")

# A bf16 probe must beat fp32 by this factor on a CPU: below it the rounding is not worth it.
MIN_CPU_SPEEDUP = 1.3


@lru_cache(maxsize=None)
def cpu_bf16_speedup(n: int = 512, seconds: float = 0.08) -> float:
    """fp32 time / bf16 time of an n x n matmul on this CPU, best of repeated runs (a memoised
    hardware fact, not state: it does not change while the process runs)."""
    import torch

    def best(dtype) -> float:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        torch.mm(a, b)  # first call pays for kernel selection
        fastest, start = float("inf"), time.perf_counter()
        while time.perf_counter() - start < seconds:
            t = time.perf_counter()
            torch.mm(a, b)
            fastest = min(fastest, time.perf_counter() - t)
        return fastest

    return best(torch.float32) / best(torch.bfloat16)


def pick_dtype(device: str, cpu_speedup: Callable[[], float] = cpu_bf16_speedup) -> Tuple[str, str]:
    """The dtype `auto` means on `device`, and why."""
    import torch

    if device.startswith("cuda"):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bfloat16", "GPU with bf16 support"
        return "float32", "GPU without bf16 support (float16 is not picked: some models overflow in it)"
    if device.startswith("cpu"):
        ratio = cpu_speedup()
        if ratio >= MIN_CPU_SPEEDUP:
            return "bfloat16", f"CPU bf16 matmul {ratio:.1f}x faster than float32"
        return "float32", f"CPU bf16 matmul only {ratio:.2f}x float32 (needs >= {MIN_CPU_SPEEDUP}x)"
    return "float32", f"device {device!r}: bf16 speed unknown"


def resolve_model_dtypes(cfg, device: Optional[str] = None, picker: Callable[[str], Tuple[str, str]] = pick_dtype):
    """A copy of the root config with every in-process model's `dtype: auto` replaced by the dtype
    chosen for `device` (default: this process's device). HTTP backends are left alone: the server
    decides."""
    from deepwriter.config.llm import Backend

    changed = {}
    for role in (f.name for f in dataclasses.fields(cfg.models)):
        mcfg = getattr(cfg.models, role)
        if mcfg.dtype != "auto" or mcfg.backend != Backend.transformers:
            continue
        if device is None:  # torch is imported only when some model needs the answer
            from deepwriter.llm.hf import default_device

            device = default_device()
        dtype, why = picker(device)
        log.info("models.%s.dtype: auto -> %s (%s)", role, dtype, why)
        changed[role] = dataclasses.replace(mcfg, dtype=dtype)
    if not changed:
        return cfg
    return dataclasses.replace(cfg, models=dataclasses.replace(cfg.models, **changed))

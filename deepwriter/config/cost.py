"""Typed config of `python -m deepwriter.plan` (root key `plan`, the hardware in conf/hardware/*.yaml).

Every figure carries the source it comes from: a datasheet, a paper, or "assumption: ...". No stage
reads this config, so it is in no stage key (RootConfig marks `plan` operational as well).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

from deepwriter.core.schema import bounded


@dataclass
class Figure:
    value: float = 0.0
    source: str = "assumption"


def _fig(value: float, source: str):
    return field(default_factory=lambda: Figure(value, source))


@dataclass
class Throughput:
    """What one GPU of the hardware does for a model of one size (all GPUs of a role run the same way)."""

    params_b: Figure = _fig(8.0, "assumption")
    decode_tokens_per_s: Figure = _fig(1000.0, "assumption")  # generated tokens per second per GPU
    prefill_tokens_per_s: Figure = _fig(10000.0, "assumption")  # prompt (or scored) tokens per second per GPU


@dataclass
class HardwareConfig:
    gpu: str = "H100-SXM-80GB"
    count: int = bounded(8, ge=1, le=1_000_000)
    memory_gb: Figure = _fig(80.0, "NVIDIA H100 SXM datasheet: 80 GB HBM3")
    peak_bf16_tflops: Figure = _fig(989.0, "NVIDIA H100 SXM datasheet: 989 TFLOP/s dense bf16")
    sft_mfu: Figure = _fig(0.35, "assumption: 35% model-FLOPs utilisation for ZeRO-3 full fine-tuning")
    # by role: generator (synthesis), scorer (synthesis), student (eval generations)
    throughput: Dict[str, Throughput] = field(default_factory=dict)


@dataclass
class WorkloadConfig:
    """What the config does not bound: the sizes of the data. Calibrate from a run to replace them."""

    pairs: Optional[int] = bounded(None, ge=1)  # null: synthesis.limit, data.pairs.limit, else data.mix.synthetic
    chars_per_token: Figure = _fig(4.0, "assumption: ~4 characters per token for English text (BPE tokenizers)")
    request_tokens: Figure = _fig(300.0, "assumption: a writing request x of ~300 tokens")
    answer_tokens: Figure = _fig(2500.0, "assumption: a long-form answer y of ~2,500 tokens")
    # null: every SFT sample at sft.max_length (the bound); else the mean tokens of a sample
    sft_sample_tokens: Optional[Figure] = None
    judge_prompt_tokens: Figure = _fig(1500.0, "assumption: ~1,500 tokens of judge instructions, besides the answer")
    # Per benchmark kind, overrides of the benchmark's own figures (its module's PUBLISHED_ITEMS and
    # JUDGE_CALLS_PER_ITEM); empty: the benchmark's.
    benchmark_items: Dict[str, Figure] = field(default_factory=dict)
    judge_calls_per_item: Dict[str, Figure] = field(default_factory=dict)


@dataclass
class PlanConfig:
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)

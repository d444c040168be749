"""Typed config of the REER synthesis stage (defaults in conf/synthesis/*.yaml)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class SamplingConfig:
    temperature: float = 0.8
    top_p: float = 0.85
    max_new_tokens: int = 8000


@dataclass
class SynthesisConfig:
    search: bool = True  # false: keep the initial trajectory z0 (no-search ablation)
    reflection: bool = True  # false: prompts without reflection phrases, phrases stripped
    max_steps: int = 10
    num_candidates: int = 2
    stop_threshold: float = 0.25
    clip_min: Optional[float] = -2.0  # null on both bounds: plain NLL
    clip_max: Optional[float] = 0.0
    min_segment_chars: int = 100
    initial: SamplingConfig = field(default_factory=SamplingConfig)
    refine: SamplingConfig = field(default_factory=SamplingConfig)
    limit: Optional[int] = None  # take at most this many pairs
    shard: str = "0/1"  # i/n: this worker's share of the pairs
    seed: int = 0

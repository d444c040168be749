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
class FilterConfig:
    """Discard rules applied to the final trajectory (deepwriter/synthesis/filters.py)."""

    min_think_tokens: int = 100  # whitespace-separated words, not model tokens (backend-independent)
    late_reflection_fraction: float = 0.1  # no thinking phrase may start in this last share of the text
    max_top3_trigram_share: float = 0.30  # degenerate repetition: 3 most frequent word 3-grams' share


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
    # y's first paragraph joins the scorer's context and only the rest of y is scored
    score_answer_from_second_segment: bool = True
    # false: the rewrite turn is prefilled with the opening tag and the generator skips its analysis
    # of the segment (small models rarely produce the tagged block on their own)
    refine_analysis: bool = True
    initial: SamplingConfig = field(default_factory=SamplingConfig)
    refine: SamplingConfig = field(default_factory=SamplingConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    prefix_cache_entries: int = 4  # KV-cached prefixes kept by the transformers prefix scorer
    limit: Optional[int] = None  # take at most this many pairs
    shard: str = "0/1"  # i/n: this worker's share of the pairs
    # Pairs searched in lockstep: their model calls are merged into one batched call per round
    # (a batch decode in-process, that many requests in flight over HTTP). Samples reproduce for the
    # same batch size.
    batch_size: int = 8
    seed: int = 0
    # Pairs whose model calls failed (server down, timeouts after every retry) are unfinished, never
    # discarded; the stage fails unless at most this share of its pairs is unfinished (0..1).
    max_unfinished_share: float = 0.0

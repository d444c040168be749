"""Typed config of the REER synthesis stage (defaults in conf/synthesis/*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from deepwriter.core.errors import ConfigError
from deepwriter.core.schema import SEED_MAX, bounded, one_of, operational


@dataclass
class SamplingConfig:
    temperature: float = bounded(0.8, ge=0.0, le=5.0)
    top_p: float = bounded(0.85, gt=0.0, le=1.0)
    max_new_tokens: int = bounded(8000, ge=1, le=1_000_000)


@dataclass
class FilterConfig:
    """Discard rules applied to the final trajectory (deepwriter/synthesis/filters.py)."""

    # z0's generated tokens, as the generator counts them (words for a backend that does not count)
    min_think_tokens: int = bounded(100, ge=0, le=1_000_000)
    # no thinking phrase may start in this last share of the text
    late_reflection_fraction: float = bounded(0.1, ge=0.0, le=1.0)
    # degenerate repetition: 3 most frequent word 3-grams' share
    max_top3_trigram_share: float = bounded(0.30, gt=0.0, le=1.0)


@dataclass
class SynthesisConfig:
    search: bool = True  # false: keep the initial trajectory z0 (no-search ablation)
    # The prompts' language: auto picks Chinese for a request with any CJK ideograph (the reference's rule)
    language: str = one_of("auto", "auto", "en", "zh")
    # The system message of every generator and scorer prompt (null: none; a chat template may then
    # insert its own default, as Qwen2.5's does)
    system_prompt: Optional[str] = "You are a helpful assistant."
    reflection: bool = True  # false: prompts without reflection phrases, phrases stripped
    # The search's counts (the paper: 10 steps, K = 2): bounded by what a real run could use; every step
    # costs each pair a generate call of num_candidates samples and a score call.
    max_steps: int = bounded(10, ge=0, le=1000)
    num_candidates: int = bounded(2, ge=1, le=64)
    stop_threshold: float = bounded(0.25, ge=0.0, le=100.0)  # a clipped mean NLL (nats per token)
    clip_min: Optional[float] = bounded(-2.0)  # null on both bounds: plain NLL; else clip_min < clip_max
    clip_max: Optional[float] = bounded(0.0)
    min_segment_chars: int = bounded(100, ge=1, le=1_000_000)
    # y's first segment (segmented like z) joins the scorer's context and only the rest of y is scored
    score_answer_from_second_segment: bool = True
    # false: the rewrite turn is prefilled with <refine> and the generator skips its three-step analysis
    # (small models rarely produce the tagged block on their own); generation then stops at </refine>
    refine_analysis: bool = True
    initial: SamplingConfig = field(default_factory=SamplingConfig)
    refine: SamplingConfig = field(default_factory=SamplingConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    # KV-cached prefixes kept by the transformers prefix scorer
    prefix_cache_entries: int = bounded(4, ge=1, le=1024, operational=True)
    limit: Optional[int] = bounded(None, ge=1)  # take at most this many pairs
    # How many shards the stage's records are split into (by a hash of each pair's id): under
    # launcher=slurm the synthesize job is a job array of this many tasks, task i doing shard i (its own
    # managed replicas); locally one process does every shard. A stage folder keeps the split it began with.
    shards: int = bounded(1, ge=1, le=100_000, operational=True)
    # i/n: the one shard this worker does (an array task's, or a machine's of your own); n=1: all of them
    shard: str = operational("0/1")
    # How pairs share the fleets (deepwriter/synthesis/schedule.py). continuous: up to max_in_flight
    # pairs advance independently and a finished pair's place is refilled at once; lockstep: batch_size
    # pairs at a time, each round waiting for its slowest call. Each prompt is sampled with its pair's
    # own seed, so neither changes what a pair's search produces: all three are operational.
    schedule: str = one_of("continuous", "continuous", "lockstep", operational=True)
    max_in_flight: int = bounded(8, ge=1, le=100_000, operational=True)
    batch_size: int = bounded(8, ge=1, le=4096, operational=True)
    seed: int = bounded(0, ge=0, le=SEED_MAX)
    # Pairs whose model calls failed (server down, timeouts after every retry) are unfinished, never
    # discarded; the stage fails unless at most this share of its pairs is unfinished (0..1).
    max_unfinished_share: float = bounded(0.0, ge=0.0, le=1.0, operational=True)


def parse_shard_spec(spec: str) -> Tuple[int, int]:
    """`synthesis.shard` 'i/n' -> (i, n) with 0 <= i < n."""
    try:
        i_s, n_s = spec.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise ConfigError(f"synthesis.shard: got {spec!r}; expected 'i/n', e.g. '0/4'") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"synthesis.shard: got {spec!r}; need n >= 1 and 0 <= i < n")
    return i, n


def shard_split(s: SynthesisConfig) -> Tuple[int, List[int]]:
    """(how many shards the stage is split into, the ones this worker does): `synthesis.shard=i/n` with
    n > 1 is shard i of n; otherwise every shard of `synthesis.shards`."""
    i, n = parse_shard_spec(s.shard)
    if n > 1 and s.shards > 1 and n != s.shards:
        raise ConfigError(
            f"synthesis.shard: {s.shard} is a share of {n} shards, but synthesis.shards is {s.shards}; "
            f"give shard i/{s.shards} (or leave synthesis.shards at 1)"
        )
    if n > 1:
        return n, [i]
    return s.shards, list(range(s.shards))

"""Typed config of the evaluation stage (defaults in conf/eval/*.yaml)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional


@dataclass
class BenchmarkConfig:
    # The data format and scoring: longbench_write | hellobench | writingbench. Empty: the entry's own
    # name, so `longbench_write: {...}` needs no kind while `demo: {kind: longbench_write}` borrows it.
    kind: str = ""
    enabled: bool = True
    path: Optional[str] = None  # local data file or folder (pkg:// allowed); null: download from the public source
    # N items: the first N (HelloBench: the first N of each subset; WritingBench: N spread over its
    # domains, in turns); null: all
    limit: Optional[int] = None
    max_new_tokens: int = 16384
    temperature: float = 0.8
    top_p: float = 0.95
    # HelloBench only: which main_data subsets (empty: every subset with data) and named groups of
    # subsets reported as one column each (the paper's HB-A / HB-B).
    subsets: List[str] = field(default_factory=list)
    groups: Dict[str, List[str]] = field(default_factory=dict)


@dataclass
class JudgePrice:
    """US dollars per million tokens, for the cost column of judge calls."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0


@dataclass
class JudgeConfig:
    max_new_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    # A transformers judge picks each score among the allowed values by constrained decoding (a small
    # model cannot be trusted to write JSON); false makes it write free JSON like an HTTP judge.
    constrained_local: bool = True
    max_concurrency: int = 8  # parallel HTTP judge calls
    rate_limit_rps: float = 0.0  # judge calls started per second at most; 0: no limit
    max_reasks: int = 2  # an unparseable or out-of-range reply is asked again this many times
    prices: Dict[str, JudgePrice] = field(default_factory=dict)  # judge model id -> price


@dataclass
class EvalConfig:
    # What is evaluated: "sft" (the model from the sft stage) or "student" (models.student as is).
    model_under_test: str = "sft"
    benchmarks: Dict[str, BenchmarkConfig] = field(default_factory=dict)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    seed: int = 0
    batch_size: int = 4
    # A bad benchmark record stops the run naming file, line and field; false: it is skipped, counted
    # and listed in summary.json (scores then cover fewer items than the published benchmark).
    strict: bool = True
    # Items whose answer or judgment could not be had (failed model calls after the endpoint's
    # retries) are unfinished, never scored; the stage fails unless at most this share is (0..1).
    max_unfinished_share: float = 0.0

"""Typed config of the evaluation stage (defaults in conf/eval/*.yaml)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional


@dataclass
class BenchmarkConfig:
    enabled: bool = True
    path: Optional[str] = None  # local data file or folder; null: download from the public source
    limit: Optional[int] = None  # first N items (after a seeded shuffle when `shuffle`)
    max_new_tokens: int = 16384
    temperature: float = 0.8
    top_p: float = 0.95


@dataclass
class EvalConfig:
    # What is evaluated: "sft" (the model from the sft stage) or "student" (models.student as is).
    model_under_test: str = "sft"
    benchmarks: Dict[str, BenchmarkConfig] = field(default_factory=dict)
    judge_max_new_tokens: int = 1024
    judge_temperature: float = 0.0
    seed: int = 0
    batch_size: int = 4

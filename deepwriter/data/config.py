"""Typed config of the data sources and the training mix (defaults in conf/data/*.yaml)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional


@dataclass
class SourceConfig:
    """One dataset: a local file (JSONL/Parquet/CSV) or a hub dataset id, with a field mapping."""

    name: str = ""
    path: Optional[str] = None  # local file; wins over hub_id when both are given
    hub_id: Optional[str] = None
    split: str = "train"
    fields: Dict[str, str] = field(default_factory=dict)  # our field -> the file's field
    limit: Optional[int] = None


@dataclass
class MixConfig:
    # Counts; null takes everything available, 0 takes none (synthetic: 0 is the no-synthetic ablation).
    total: Optional[int] = None
    synthetic: Optional[int] = None
    public: Optional[int] = None
    trajectory_field: str = "z_final"  # z_final | z0 (no-search ablation reuses the search output)
    seed: int = 0


@dataclass
class DataConfig:
    pairs: SourceConfig = field(default_factory=SourceConfig)
    public: SourceConfig = field(default_factory=SourceConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    strict: bool = True  # false: bad records are skipped and counted instead of failing

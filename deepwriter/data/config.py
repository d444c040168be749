"""Typed config of the data sources and the training mix (defaults in conf/data/*.yaml)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional


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
class DedupConfig:
    exact: bool = True  # same (request, thinking, answer) up to surrounding whitespace
    near: bool = True  # MinHash LSH over word shingles of request + answer
    threshold: float = 0.8  # estimated Jaccard similarity at or above which a record is a near-duplicate
    num_perm: int = 128
    shingle_words: int = 5
    max_words: int = 4096  # shingles come from the first N words (bounds the cost of very long texts)


@dataclass
class DecontamConfig:
    enabled: bool = True
    ngram: int = 5  # word n-grams compared between requests and benchmark prompts
    # Fraction of the shorter side's distinctive n-grams shared with one benchmark prompt at which a
    # request counts as contaminated.
    threshold: float = 0.5
    # n-grams found in more than this many benchmark prompts are template boilerplate ("You should
    # write a detailed response...") and are ignored on both sides.
    max_prompt_df: int = 5


@dataclass
class MixConfig:
    # Counts; null takes everything available, 0 takes none (synthetic: 0 is the no-synthetic ablation).
    total: Optional[int] = None
    synthetic: Optional[int] = None
    public: Optional[int] = None
    trajectory_field: str = "z_final"  # z_final | z0 (no-search ablation reuses the search output)
    seed: int = 0
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    # Ablations.
    drop_groups: List[str] = field(default_factory=list)  # taxonomy groups whose categories are left out
    strip_reflection: bool = False  # remove "Hmm,", "Wait," ... from synthetic thinking
    # Synthetic trajectories whose thinking is longer (shorter) than this token-length quantile are
    # left out; null keeps all.
    drop_above_quantile: Optional[float] = None
    drop_below_quantile: Optional[float] = None
    num_proc: int = 1  # processes for tokenisation (datasets.map)
    histogram_bins: int = 40


@dataclass
class DataConfig:
    pairs: SourceConfig = field(default_factory=SourceConfig)
    public: SourceConfig = field(default_factory=SourceConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    # Top-level group -> its categories (25 in conf/data/taxonomy/writing25.yaml).
    taxonomy: Dict[str, List[str]] = field(default_factory=dict)
    strict: bool = True  # false: bad records are skipped and counted instead of failing

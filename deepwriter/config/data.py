"""Typed config of the data sources and the training mix (defaults in conf/data/*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from deepwriter.core.schema import SEED_MAX, bounded, one_of

# The kinds of data.pairs, one class each in deepwriter.pairs.sources.SOURCES.
PAIR_SOURCE_KINDS = ("pairs", "scored_responses", "long_text", "released")
# The kinds of data.mix.trajectories_from, one class each in deepwriter.mix.trajectories.SOURCES.
TRAJECTORY_KINDS = ("synthesize", "reference_output", "released")


@dataclass
class ScoredResponsesConfig:
    """kind=scored_responses: prompts with scored human responses (WritingPrompts-style)."""

    top_k: int = bounded(1, ge=1, le=1000)  # best responses kept per prompt
    min_score: Optional[float] = bounded(None)  # responses scored below this are left out; null keeps all


@dataclass
class LongTextConfig:
    """kind=long_text: long texts without a request (Gutenberg-style), cut into answer-sized pieces."""

    target_words: int = bounded(600, ge=1, le=1_000_000)  # pieces of about this many words, cut at paragraph boundaries
    min_words: int = bounded(150, ge=0, le=1_000_000)  # shorter pieces (a book's last scraps) are left out
    strip_boilerplate: bool = True  # Project Gutenberg header/licence, credits, marked tables of contents


@dataclass
class SourceConfig:
    """One dataset: a local file (JSONL/Parquet/CSV; long_text also .txt or a folder of .txt) or a
    hub dataset id, with a field mapping."""

    name: str = ""
    # pairs: one (request, answer) per record | scored_responses | long_text (answers without requests) |
    # released: the authors' released trajectories (DeepWriting-20K): x and the answer after the thinking,
    # the thinking kept to compare ours with (deepwriter.pairs.released)
    kind: str = one_of("pairs", *PAIR_SOURCE_KINDS)
    path: Optional[str] = None  # local file; wins over hub_id when both are given
    hub_id: Optional[str] = None
    split: str = "train"
    fields: Dict[str, str] = field(default_factory=dict)  # our field -> the file's field
    limit: Optional[int] = bounded(None, ge=1)
    scored: ScoredResponsesConfig = field(default_factory=ScoredResponsesConfig)
    long_text: LongTextConfig = field(default_factory=LongTextConfig)


@dataclass
class DedupConfig:
    exact: bool = True  # same (request, thinking, answer) up to surrounding whitespace
    near: bool = True  # MinHash LSH over word shingles of request + answer
    # estimated Jaccard similarity at or above which a record is a near-duplicate
    threshold: float = bounded(0.8, gt=0.0, le=1.0)
    num_perm: int = bounded(128, ge=1, le=4096)
    shingle_words: int = bounded(5, ge=1, le=100)
    max_words: int = bounded(
        4096, ge=1, le=10_000_000
    )  # shingles come from the first N words (bounds the cost of very long texts)


@dataclass
class DecontamConfig:
    enabled: bool = True
    ngram: int = bounded(5, ge=1, le=100)  # word n-grams compared between requests and benchmark prompts
    # Fraction of the shorter side's distinctive n-grams shared with one benchmark prompt at which a
    # request counts as contaminated.
    threshold: float = bounded(0.5, gt=0.0, le=1.0)
    # n-grams found in more than this many benchmark prompts are template boilerplate ("You should
    # write a detailed response...") and are ignored on both sides.
    max_prompt_df: int = bounded(5, ge=1, le=1_000_000)


@dataclass
class TrajectoriesConfig:
    """Where the mix's synthetic part comes from. `synthesize`: this project's search (the synthesize
    stage's shards). `reference_output`: a folder of the authors' synthesis output files
    (`<prefix>_<uid>_rk<rank>_meta.jsonl`, one indented JSON object each), for a user who ran their
    code. `released`: a released dataset of trajectories (DeepWriting-20K), from the hub or a local
    file or folder. The last two need no synthesize stage; all three go through the same filters."""

    kind: str = one_of("synthesize", *TRAJECTORY_KINDS)
    name: str = ""  # released: the source label of its rows in the mix (default: the hub id's last part)
    path: Optional[str] = None  # reference_output: the folder; released: a local file (wins over hub_id)
    hub_id: Optional[str] = None  # released: a hub id, or a local folder laid out as a hub dataset
    split: str = "train"
    # released: our field -> its column. x (the request: a string, or chat turns whose first user turn
    # is taken), y (the answer; with `<think>...</think>` before it when think is not mapped), optional
    # think, id and category (dotted names read inside a column: extra_info.index).
    fields: Dict[str, str] = field(default_factory=dict)
    limit: Optional[int] = bounded(None, ge=1)  # released: the first N valid rows
    # reference_output and released: the paper's quality filters (late reflection, 3-gram repetition;
    # thresholds synthesis.filters), as our search applies them, on the imported thinking; false: taken
    # as they are. Data the authors already filtered loses nothing, and the mix's counts say so.
    quality_filters: bool = True


@dataclass
class MixConfig:
    # Counts; null takes everything available, 0 takes none (synthetic: 0 is the no-synthetic ablation).
    total: Optional[int] = bounded(None, ge=0)
    synthetic: Optional[int] = bounded(None, ge=0)
    public: Optional[int] = bounded(None, ge=0)
    # z_final | z0 (no-search ablation reuses the search output); for reference outputs: the
    # corrected thinking | the initial thinking. A released dataset has only its one thinking.
    trajectory_field: str = one_of("z_final", "z_final", "z0")
    trajectories_from: TrajectoriesConfig = field(default_factory=TrajectoriesConfig)
    seed: int = bounded(0, ge=0, le=SEED_MAX)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    # Ablations.
    drop_groups: List[str] = field(default_factory=list)  # taxonomy groups whose categories are left out
    strip_reflection: bool = False  # remove "Hmm,", "Wait," ... from synthetic thinking
    # Synthetic trajectories whose thinking is longer (shorter) than this token-length quantile are
    # left out; null keeps all.
    drop_above_quantile: Optional[float] = bounded(None, ge=0.0, le=1.0)
    drop_below_quantile: Optional[float] = bounded(None, ge=0.0, le=1.0)
    # A sample over sft.max_length tokens: drop it, or keep it with its thinking cut from the end until
    # it fits (the request and answer never cut; a sample whose request and answer alone are over still
    # goes). Counted either way, by category and answer length (docs/FIDELITY.md M-rows).
    over_max_length: str = one_of("drop", "drop", "truncate_thinking")
    num_proc: int = bounded(1, ge=1, le=1024, operational=True)  # processes for tokenisation (datasets.map)
    histogram_bins: int = bounded(40, ge=1, le=10_000)


@dataclass
class QueryConfig:
    """Reverse query synthesis: a Generator writes the request a user would send for an answer."""

    queries_per_answer: int = bounded(1, ge=1, le=100)  # distinct requests per answer that has none (long texts)
    # More requests for answers that already have one: each chosen answer gets `paired_extra` new
    # requests, distinct from its own. The paper grew 16K pairs to 20K this way (extra 1, share 0.25).
    paired_extra: int = bounded(0, ge=0, le=100)
    paired_extra_share: float = bounded(1.0, ge=0.0, le=1.0)  # share of those answers chosen (seeded)
    max_attempts: int = bounded(3, ge=1, le=100)  # generation rounds per answer; rejected requests are drawn again
    temperature: float = bounded(0.7, ge=0.0, le=5.0)
    top_p: float = bounded(0.9, gt=0.0, le=1.0)
    max_new_tokens: int = bounded(160, ge=1, le=1_000_000)
    max_answer_words: int = bounded(1500, ge=1, le=1_000_000)  # the answer shown to the model is cut here
    min_words: int = bounded(5, ge=0, le=100_000)  # shorter requests are rejected
    copy_ngram: int = bounded(8, ge=1, le=1000)  # a request sharing a run of this many words with the answer copies it
    batch_size: int = bounded(8, ge=1, le=4096)  # answers per generate call
    seed: int = bounded(0, ge=0, le=SEED_MAX)


@dataclass
class LabelConfig:
    """Category labelling into `taxonomy` (a Scorer ranks the labels; a Generator names one)."""

    max_text_words: int = bounded(400, ge=1, le=1_000_000)  # request + answer shown to the classifier are cut here
    # texts per scorer/generator call; labels are greedy, so batches do not change them
    batch_size: int = bounded(8, ge=1, le=4096, operational=True)
    max_new_tokens: int = bounded(16, ge=1, le=1_000_000)  # generator labelling: length of the reply
    # generator labelling: share of a label's words the reply must contain
    min_overlap: float = bounded(0.5, ge=0.0, le=1.0)


@dataclass
class QuotaConfig:
    """Balancing by category; the unit is an answer (before reverse queries multiply it)."""

    max_per_category: Optional[int] = bounded(None, ge=1)
    # category -> weight; when set, categories without a weight are left out. Shares are met
    # exactly up to rounding; a category short of answers gives its shortfall to the others.
    shares: Dict[str, float] = field(default_factory=dict)
    total: Optional[int] = bounded(None, ge=0)  # with shares: answers wanted in all; null = the most the shares allow
    seed: int = bounded(0, ge=0, le=SEED_MAX)


@dataclass
class DataConfig:
    pairs: SourceConfig = field(default_factory=SourceConfig)
    public: SourceConfig = field(default_factory=SourceConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    # Top-level group -> its categories (the full scale's 25 in 9 groups: conf/data/full.yaml; their origin
    # is docs/FIDELITY.md D6).
    taxonomy: Dict[str, List[str]] = field(default_factory=dict)
    strict: bool = True  # false: bad records are skipped and counted instead of failing
    # Preparing pairs (deepwriter.pairs.prepare): labels for pairs without a category, requests for
    # answers without one, quotas.
    label_categories: bool = False
    labels: LabelConfig = field(default_factory=LabelConfig)
    queries: QueryConfig = field(default_factory=QueryConfig)
    quotas: QuotaConfig = field(default_factory=QuotaConfig)

"""Typed config of the evaluation stage (defaults in conf/eval/*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from deepwriter.config.llm import ModelConfig
from deepwriter.core.schema import SEED_MAX, bounded, one_of

BENCHMARK_KINDS = ("longbench_write", "hellobench", "writingbench")
JUDGE_STYLES = ("reference", "critic")


@dataclass
class BenchmarkJudgeConfig:
    """How the judge is asked about this benchmark. Every field left null takes the benchmark's
    reference value (its module's REFERENCE_JUDGE, which cites the authors' code), and where the
    reference fixes none (e.g. LongWriter sends no seed), eval.judge's value."""

    # The prompt: "reference" (the benchmark's own judge prompt, in our words); "critic" (WritingBench
    # only: the prompt its fine-tuned critic model was released with, for models.judge = that critic).
    style: Optional[str] = one_of(None, None, *JUDGE_STYLES)
    temperature: Optional[float] = bounded(None, ge=0.0, le=5.0)
    top_p: Optional[float] = bounded(None, gt=0.0, le=1.0)
    seed: Optional[int] = bounded(None, ge=0, le=SEED_MAX)
    max_new_tokens: Optional[int] = bounded(None, ge=1, le=1_000_000)  # the judge's reply budget
    # The system message: null: the reference's (in our words), or none where it has none; "": none.
    system: Optional[str] = None
    # Answer cut before judging (HelloBench: answers over 15,000 word tokens are cut to their first
    # 16,000). Tokens are word tokens (deepwriter.eval.words). 0: never cut.
    max_answer_tokens: Optional[int] = bounded(None, ge=0)
    truncate_above_tokens: Optional[int] = bounded(None, ge=0)
    # The judge sees the answer as its word tokens joined by single spaces (HelloBench does this to
    # every answer, cut or not: line breaks and original spacing are lost); false: the original text.
    rejoin_tokens: Optional[bool] = None


@dataclass
class BenchmarkConfig:
    # The data format and scoring: longbench_write | hellobench | writingbench. Empty: the entry's own
    # name, so `longbench_write: {...}` needs no kind while `demo: {kind: longbench_write}` borrows it.
    kind: str = one_of("", "", *BENCHMARK_KINDS)
    enabled: bool = True
    path: Optional[str] = None  # local data file or folder (pkg:// allowed); null: download from the public source
    # N items: the first N (HelloBench: the first N of each subset; WritingBench: N spread over its
    # domains, in turns); null: all
    limit: Optional[int] = bounded(None, ge=1)
    max_new_tokens: int = bounded(16384, ge=1, le=1_000_000)
    temperature: float = bounded(0.8, ge=0.0, le=5.0)
    top_p: float = bounded(0.95, gt=0.0, le=1.0)
    judge: BenchmarkJudgeConfig = field(default_factory=BenchmarkJudgeConfig)

    def subsets_to_load(self) -> List[str]:
        """The parts of the benchmark's data to read (empty: all); only HelloBench lets one choose."""
        return []


@dataclass
class HelloBenchConfig(BenchmarkConfig):
    """An entry of kind hellobench: the shared options and HelloBench's own."""

    # Which main_data subsets are read (empty: every subset with data).
    subsets: List[str] = field(default_factory=list)
    # Named groups of subsets, each reported as the mean over its samples (the paper's HB-A / HB-B).
    # HelloBench itself defines no groups: HB-A / HB-B are this project's choice, printed beside every
    # table that shows them; empty: the fitted deepwriter.eval.benchmarks.hellobench.DEFAULT_GROUPS.
    groups: Dict[str, List[str]] = field(default_factory=dict)

    def subsets_to_load(self) -> List[str]:
        return list(self.subsets)


# The kinds with options of their own; an entry of any other kind has only BenchmarkConfig's.
BENCHMARK_OPTIONS: Dict[str, type] = {"hellobench": HelloBenchConfig}


def benchmark_schema(kind: object) -> type:
    """The typed schema of an eval.benchmarks entry of this kind (its `kind`, else its name)."""
    return BENCHMARK_OPTIONS.get(kind, BenchmarkConfig) if isinstance(kind, str) else BenchmarkConfig


@dataclass
class JudgePrice:
    """US dollars per million tokens, for the cost column of judge calls."""

    input_per_mtok: float = bounded(0.0, ge=0.0, le=10_000.0)
    output_per_mtok: float = bounded(0.0, ge=0.0, le=10_000.0)


@dataclass
class JudgeConfig:
    # Sampling used where neither a benchmark's judge settings nor its reference fix a value (e.g.
    # the seed of LongWriter's and WritingBench's judges, which send none), and for judge tasks made
    # without settings (tools and tests that call a benchmark's judge_tasks directly).
    max_new_tokens: int = bounded(1024, ge=1, le=1_000_000)
    temperature: float = bounded(0.0, ge=0.0, le=5.0)
    top_p: float = bounded(1.0, gt=0.0, le=1.0)
    seed: int = bounded(0, ge=0, le=SEED_MAX)
    # A transformers judge picks each score among the allowed values by constrained decoding (a small
    # model cannot be trusted to write JSON); false makes it write free JSON like an HTTP judge.
    constrained_local: bool = True
    # An HTTP judge is sent each task's JSON schema (OpenAI `response_format: json_schema`; vLLM, SGLang
    # and OpenAI decode under it), so every reply parses and is in range: scores only, no reasons.
    # False: free JSON, as the benchmarks' reference judges write it, re-asked when unusable.
    constrained_http: bool = False
    max_concurrency: int = bounded(8, ge=1, le=4096, operational=True)  # parallel HTTP judge calls
    # judge calls started per second at most; 0: no limit
    rate_limit_rps: float = bounded(0.0, ge=0.0, le=100_000.0, operational=True)
    max_reasks: int = bounded(2, ge=0, le=100)  # an unparseable or out-of-range reply is asked again this many times
    prices: Dict[str, JudgePrice] = field(default_factory=dict)  # judge model id -> price


@dataclass
class PanelJudgeConfig:
    """One more judge beside models.judge: it judges every task models.judge judges, and its scores are
    kept apart (per item, `panel`) for the panel's agreement; the headline stays models.judge's."""

    label: str = ""  # names the judge in tables and its reply cache (judge_cache/panel/<label>); unique
    # null: models.judge itself (served by the run where models.judge is), asked with the settings below;
    # another model is used as configured: an endpoint of yours, or a local model loaded in-process
    model: Optional[ModelConfig] = None
    # Replaces every task's judge temperature (null: the benchmark's); with seed_offset, what makes a
    # second configuration of the same model a judge of its own.
    temperature: Optional[float] = bounded(None, ge=0.0, le=5.0)
    seed_offset: int = bounded(0, ge=0, le=SEED_MAX)  # added to every task's judge seed


@dataclass
class EvalConfig:
    # What is evaluated: "sft" (the model from the sft stage) or "student" (models.student as is).
    model_under_test: str = one_of("sft", "sft", "student")
    # name -> a BenchmarkConfig, or the schema of its kind (HelloBenchConfig): Hydra composes the entries
    # untyped (Any), so that a kind's own keys are allowed; config.root.to_typed types each with
    # benchmark_schema(its kind), refusing a key its kind does not have. `entries`: the schemas there are.
    benchmarks: Dict[str, Any] = field(
        default_factory=dict, metadata={"entries": (BenchmarkConfig, *BENCHMARK_OPTIONS.values())}
    )
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    # More judges beside models.judge (a judge panel): each judges what models.judge does; Krippendorff's
    # α across the judges and the items they disagree on most are in summary.json and the report.
    panel: List[PanelJudgeConfig] = field(default_factory=list)
    seed: int = bounded(0, ge=0, le=SEED_MAX)
    # One seed per batched call: the batch's composition changes the answers, so it is in the key.
    batch_size: int = bounded(4, ge=1, le=4096)
    # A bad benchmark record stops the run naming file, line and field; false: it is skipped, counted
    # and listed in summary.json (scores then cover fewer items than the published benchmark).
    strict: bool = True
    # Items whose answer or judgment could not be had (failed model calls after the endpoint's
    # retries) are unfinished, never scored; the stage fails unless at most this share is (0..1).
    max_unfinished_share: float = bounded(0.0, ge=0.0, le=1.0, operational=True)
    # Each judge task is asked this many times (sample k with seed + k); an item scores the mean of its
    # judgments, and its intervals resample judgments as well as items (deepwriter.eval.stats).
    judge_samples: int = bounded(1, ge=1, le=100)
    # Resamples of the 95% bootstrap intervals and of the paired permutation tests; 0: no intervals.
    bootstrap_resamples: int = bounded(1000, ge=0, le=100_000)

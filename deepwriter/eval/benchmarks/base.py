"""What every benchmark module shares: items, judge tasks with their allowed scores, data errors."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from deepwriter.core.badinput import DataError, Skipped, skip_or_raise  # noqa: F401  (re-exported for the benchmarks)
from deepwriter.core.files import resolve_data_path
from deepwriter.eval.words import truncate_answer
from deepwriter.llm.base import Sampling

log = logging.getLogger("deepwriter.eval")

# A benchmark is one module of this package, registered in benchmarks.KINDS, that owns everything the
# rest of the project asks of it:
#   KIND, REFERENCE_JUDGE, STYLES                          its name and its judge's reference settings
#   PUBLISHED_ITEMS, JUDGE_CALLS_PER_ITEM                  (count, source) for the cost projection
#   load(name, path, data_dir, subsets, skipped) -> [Item]
#   judge_tasks(item, answer, ...) / score_item(...)       judging one answer
#   summarize(records, bcfg) -> summary                    the benchmark's own aggregation
#   headline(name, summary) / headline_keys(name, bcfg)    its columns of the paper's table
#   breakdowns(summary) -> [Breakdown]                     its charts (plots, run report, W&B images)
#   detail_markdown(summary) -> str                        its section of tables/details.md
#   column_definitions(entry) -> {column: definition}      what a column of its own making means
INTERFACE = (
    "KIND",
    "REFERENCE_JUDGE",
    "STYLES",
    "PUBLISHED_ITEMS",
    "JUDGE_CALLS_PER_ITEM",
    "load",
    "judge_tasks",
    "score_item",
    "summarize",
    "headline",
    "headline_keys",
    "breakdowns",
    "detail_markdown",
    "column_definitions",
)


@dataclass(frozen=True)
class Breakdown:
    """One chart of a benchmark's summary: drawn as plots/<bench>_<key>.png and logged as the W&B image
    eval/plot_<bench>_<key> when `plotted`; the run report draws every breakdown."""

    key: str
    title: str
    values: Dict[str, Optional[float]]
    plotted: bool = True


def fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def markdown_table(header: List[str], rows: List[List[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


class BenchmarkDataError(DataError):
    """Bad benchmark data; the message starts with `file:line: field 'name': ...`."""


@dataclass
class Item:
    bench: str  # the config entry's name
    id: str
    prompt: str
    meta: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Slot:
    """One score the judge must give, and the only values it may take."""

    name: str
    allowed: Tuple[float, ...]

    @property
    def labels(self) -> List[str]:
        return [format_score(v) for v in self.allowed]

    def coerce(self, value: Any) -> float:
        """The judge's value as one of the allowed numbers, or ValueError saying why not."""
        if isinstance(value, bool):
            raise ValueError(f"{self.name}: {value!r} is not a number")
        try:
            num = float(str(value).strip().rstrip("%"))
        except ValueError:
            raise ValueError(f"{self.name}: {value!r} is not a number") from None
        for allowed in self.allowed:
            if abs(num - allowed) < 1e-9:
                return allowed
        raise ValueError(f"{self.name}: {num:g} is out of range (allowed {', '.join(self.labels)})")


# Reads a parsed JSON reply; returns ({slot: raw value}, {slot: reason}). Raises ValueError when the
# shape is wrong. None: the canonical shape {slot.name: value, ..., "reason": ...}.
ReplyParser = Callable[[Any], Tuple[Dict[str, Any], Dict[str, str]]]


@dataclass
class JudgeTask:
    item_id: str
    key: str  # unique within the item: "quality", "checklist", "criterion-2"
    messages: List[Dict[str, str]]
    slots: List[Slot]
    parser: Optional[ReplyParser] = None
    format_hint: str = ""  # shown when a reply has to be asked for again
    # The benchmark's judge sampling (JudgeSettings.sampling); None: the Judge's own (eval.judge).
    sampling: Optional[Sampling] = None
    # Which of eval.judge_samples judgments of this task it is (0: the first, whose cache key is the
    # one a run without judge samples has).
    judge_sample: int = 0


@dataclass(frozen=True)
class JudgeSettings:
    """How one benchmark's judge is asked, every value resolved: the config's, else the reference's,
    else eval.judge's (deepwriter.eval.benchmarks.judge_settings)."""

    style: str = "reference"
    temperature: float = 0.0
    top_p: float = 1.0
    seed: Optional[int] = None
    max_new_tokens: int = 1024
    system: str = ""  # empty: no system message
    max_answer_tokens: Optional[int] = None  # see deepwriter.eval.words.truncate_answer
    truncate_above_tokens: Optional[int] = None
    rejoin_tokens: bool = False

    @property
    def sampling(self) -> Sampling:
        return Sampling(
            temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens, seed=self.seed
        )


def judge_messages(settings: JudgeSettings, user: str) -> List[Dict[str, str]]:
    """The system message (where there is one) and the user turn."""
    head = [{"role": "system", "content": settings.system}] if settings.system else []
    return head + [{"role": "user", "content": user}]


def answer_for_judge(answer: str, settings: JudgeSettings) -> str:
    """The answer as the judge is shown it: cut and re-joined per the settings (HelloBench), or as is."""
    if not settings.rejoin_tokens and not (settings.max_answer_tokens and settings.truncate_above_tokens):
        return answer

    text, _, _ = truncate_answer(
        answer, settings.max_answer_tokens, settings.truncate_above_tokens, settings.rejoin_tokens
    )
    return text


def format_score(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def canonical_parser(slots: List[Slot]) -> ReplyParser:
    def parse(obj: Any) -> Tuple[Dict[str, Any], Dict[str, str]]:
        if not isinstance(obj, dict):
            raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
        lowered = {str(k).strip().lower().replace(" ", "_"): v for k, v in obj.items()}
        values, reasons = {}, {}
        for s in slots:
            key = s.name.lower()
            if key not in lowered:
                continue  # reported as missing by the judge
            v = lowered[key]
            if isinstance(v, dict):  # {"score": 4, "reason": "..."}
                reasons[s.name] = str(v.get("reason", ""))
                v = v.get("score")
            values[s.name] = v
        for why in ("reason", "analysis"):  # LongBench-Write's judge writes its "Analysis" first
            if why in lowered and not reasons:
                reasons = {s.name: str(lowered[why]) for s in slots}
        return values, reasons

    return parse


def read_jsonl(path: Path, skipped: Optional[List[Skipped]] = None) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """(line number, record) of each non-empty line. A broken line is an error naming it, or, when a
    `skipped` list is given (lenient mode), recorded there and passed over."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            with skip_or_raise(skipped):
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BenchmarkDataError(f"{path}:{lineno}: field '<line>': not valid JSON ({exc.msg})") from None
                if not isinstance(rec, dict):
                    raise BenchmarkDataError(f"{path}:{lineno}: field '<line>': expected a JSON object")
                yield lineno, rec


def require(rec: Dict[str, Any], name: str, where: str, kind: type = str) -> Any:
    if name not in rec or rec[name] is None:
        raise BenchmarkDataError(f"{where}: field '{name}': missing")
    value = rec[name]
    if kind is str and not isinstance(value, str):
        raise BenchmarkDataError(f"{where}: field '{name}': expected text, got {type(value).__name__}")
    if kind is str and not value.strip():
        raise BenchmarkDataError(f"{where}: field '{name}': empty")
    if kind is list and not isinstance(value, list):
        raise BenchmarkDataError(f"{where}: field '{name}': expected a list, got {type(value).__name__}")
    return value


def data_file(
    path: Optional[str], data_dir: Path, kind: str, urls: Dict[str, str], local_name: str, downloaded_name: str
) -> Path:
    """The benchmark's data file: `path` (a file, or a folder holding `local_name`; `pkg://` works), or
    else the public file fetched once into `data_dir/kind`."""
    if path:
        p = resolve_data_path(path)
        return p / local_name if p.is_dir() else p
    return download(urls, data_dir / kind) / downloaded_name


def download(urls: Dict[str, str], dest: Path) -> Path:
    """Fetch the benchmark's public files (relative name -> URL) into `dest` once."""
    import httpx

    dest.mkdir(parents=True, exist_ok=True)
    for rel, url in urls.items():
        target = dest / rel
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s -> %s", url, target)
        resp = httpx.get(url, follow_redirects=True, timeout=120)
        resp.raise_for_status()
        tmp = target.with_suffix(target.suffix + ".part")
        tmp.write_bytes(resp.content)
        tmp.replace(target)
    return dest


def mean(values: List[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


@dataclass
class JudgeOutcome:
    """The judge's answer to one task: every slot's value, or the reason there is none. `unfinished`:
    the judge could not be asked (a failed call after the endpoint's retries): no verdict at all, the
    item is done by a re-run."""

    item_id: str
    key: str
    ok: bool
    values: Dict[str, float] = field(default_factory=dict)
    reasons: Dict[str, str] = field(default_factory=dict)
    error: Optional[str] = None
    unfinished: bool = False
    calls: int = 0  # judge calls made now (cache misses)
    cached: int = 0  # replies read from the cache
    reasks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    raw: str = ""

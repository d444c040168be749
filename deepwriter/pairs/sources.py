"""Source shapes turned into (request, answer) pairs: one class per `SourceConfig.kind`, each registered
once in SOURCES. Callers ask the configured source what they need (are its records pairs as they stand?
does it carry the authors' thinking?) and never switch on the kind themselves.

- `pairs`: one (x, y) per record (`deepwriter.pairs.read.load_pairs`).
- `scored_responses`: prompts with scored human responses (WritingPrompts-style), either one row per
  response (`fields: {x: prompt, y: response, score: score}`) or one row per prompt with a list of
  responses (`fields: {x: prompt, responses: replies, y: text, score: votes}`: `y` and `score` then
  name the keys inside each list item; an item may also be a `[text, score]` pair). The `top_k`
  best responses per prompt scored at least `min_score` become pairs.
- `long_text`: long texts without a request (Gutenberg-style): a `.txt` file, a folder of `.txt`
  files, or records with the text in `fields.y`. Boilerplate is stripped and the text is cut at
  paragraph boundaries into pieces of about `target_words`; these pairs have an answer but `x == ""`
  (`deepwriter.pairs.queries` writes the request).
- `released`: the authors' released trajectories (DeepWriting-20K), read by deepwriter.pairs.released.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Iterator, List, Optional, Protocol, Tuple

from deepwriter.config.data import PAIR_SOURCE_KINDS, SourceConfig
from deepwriter.core.files import resolve_data_path
from deepwriter.pairs.read import (
    BadRecord,
    DataError,
    Pair,
    Skipped,
    check_text,
    has_bad_bytes,
    iter_rows,
    load_pairs,
    reject,
    source_label,
)
from deepwriter.pairs.released import load_released_pairs


@dataclass
class LoadedSource:
    pairs: List[Pair]
    skipped: List[Skipped]
    counts: Dict[str, int] = field(default_factory=dict)  # what the shape's selection left out, by reason


class PairSource(Protocol):
    kind: str
    # Its records are (request, answer) pairs as they stand: synthesis may read them straight, without
    # the preparation step (deepwriter.pairs.prepare).
    ready: bool
    thinking: bool  # each pair carries the authors' thinking (RELEASED_THINKING), kept to compare ours with
    not_ready: str  # why it cannot be read as pairs straight, and the remedy (sources that are not ready)

    def load(self, src: SourceConfig, strict: bool, key: Optional[str]) -> LoadedSource: ...


class Pairs:
    kind, ready, thinking, not_ready = "pairs", True, False, ""

    def load(self, src: SourceConfig, strict: bool, key: Optional[str]) -> LoadedSource:
        return LoadedSource(*load_pairs(src, strict, key))


class ScoredResponses:
    kind, ready, thinking = "scored_responses", False, False
    not_ready = "'scored_responses' sources are read by deepwriter.pairs.sources.load_source"

    def load(self, src: SourceConfig, strict: bool, key: Optional[str]) -> LoadedSource:
        return load_scored_responses(src, strict)


class LongText:
    kind, ready, thinking = "long_text", False, False
    not_ready = (
        "long_text sources have answers but no requests; run deepwriter.pairs.prepare.prepare_pairs and point "
        "data.pairs at its pairs.jsonl"
    )

    def load(self, src: SourceConfig, strict: bool, key: Optional[str]) -> LoadedSource:
        return load_long_text(src, strict)


class Released:
    kind, ready, thinking = "released", False, True
    not_ready = "'released' sources are read by deepwriter.pairs.sources.load_source"

    def load(self, src: SourceConfig, strict: bool, key: Optional[str]) -> LoadedSource:
        return LoadedSource(*load_released_pairs(src, strict))


SOURCES: Dict[str, PairSource] = {s.kind: s for s in (Pairs(), ScoredResponses(), LongText(), Released())}
# The kinds are named once, in the config's choices (config.data.PAIR_SOURCE_KINDS); one class each here.
assert tuple(SOURCES) == PAIR_SOURCE_KINDS, "one pair source per kind of data.pairs.kind"


def source_of(src: SourceConfig) -> PairSource:
    if src.kind not in SOURCES:
        raise DataError(f"source {source_label(src)}", "kind", f"got {src.kind!r}; expected one of {list(SOURCES)}")
    return SOURCES[src.kind]


def load_source(src: SourceConfig, strict: bool, key: Optional[str] = None) -> LoadedSource:
    """Pairs of any source kind; bad records raise `DataError` (strict) or are counted as `Skipped`.
    `key`: the source's config key (data.pairs), named in the remedy of a mapping error."""
    return source_of(src).load(src, strict, key)


def read_ready_pairs(src: SourceConfig, strict: bool, key: Optional[str] = None) -> Tuple[List[Pair], List[Skipped]]:
    """The pairs of a source whose records are pairs as they stand; any other source stops with its
    remedy (prepare it, or read it through `load_source`)."""
    source = source_of(src)
    if not source.ready:
        raise DataError(f"source {source_label(src)}", "kind", source.not_ready)
    return load_pairs(src, strict, key)


# --- scored responses --------------------------------------------------------------------------


def _score(value: Any) -> float:
    if isinstance(value, bool):
        raise BadRecord("score", "expected a number, got bool")
    if isinstance(value, (int, float)):
        v = float(value)
    elif isinstance(value, str):  # CSV cells are text
        try:
            v = float(value.strip())
        except ValueError:
            raise BadRecord("score", f"expected a number, got {value!r}") from None
    elif value is None:
        raise BadRecord("score", "missing (null)")
    else:
        raise BadRecord("score", f"expected a number, got {type(value).__name__}")
    if math.isnan(v):
        raise BadRecord("score", "is NaN")
    return v


def _get(row: Dict[str, Any], ours: str, theirs: str) -> Any:
    if theirs not in row:
        raise BadRecord(ours, f"mapped to {theirs!r}, which the record lacks")
    return row[theirs]


def _responses_of(row: Dict[str, Any], f: Dict[str, str]) -> List[Tuple[str, float]]:
    items = _get(row, "responses", f["responses"])
    if not isinstance(items, list):
        raise BadRecord("responses", f"expected a list of responses, got {type(items).__name__}")
    out = []
    for i, item in enumerate(items):
        try:
            if isinstance(item, dict):
                text, score = _get(item, "y", f["y"]), _get(item, "score", f["score"])
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                text, score = item
            else:
                raise BadRecord("y", "expected an object or a [text, score] pair")
            out.append((check_text("y", text, required=True), _score(score)))
        except BadRecord as bad:
            raise BadRecord(f"responses[{i}].{bad.field}", bad.reason) from None
    return out


def load_scored_responses(src: SourceConfig, strict: bool) -> LoadedSource:
    f = dict(src.fields)
    listed = "responses" in f
    for name in ("x", "y", "score"):
        if name not in f:
            raise DataError(f"source {source_label(src)}", name, "not mapped: add it to the source's `fields`")
    top_k, min_score = src.scored.top_k, src.scored.min_score
    if top_k < 1:
        raise DataError(f"source {source_label(src)}", "scored.top_k", f"must be >= 1, got {top_k}")
    # y and score name keys inside the list items in the list form, not columns of the file.
    top_level = {k: v for k, v in f.items() if not (listed and k in ("y", "score"))}
    extra = [k for k in top_level if k not in ("x", "y", "score", "responses", "id")]
    label = source_label(src)
    skipped: List[Skipped] = []

    # prompt text -> (where of its first row, prompt-level id or None, meta, [(text, score, response id, where)])
    groups: Dict[str, Tuple[str, Optional[str], Dict[str, Any], List[Tuple[str, float, Optional[str], str]]]] = {}
    seen_ids: Dict[str, str] = {}
    rows = iter_rows(replace(src, fields=top_level))
    for where, row in rows:
        try:
            if isinstance(row, BadRecord):
                raise row
            x = check_text("x", _get(row, "x", f["x"]), required=True)
            rid = check_text("id", _get(row, "id", f["id"]), required=True) if "id" in f else None
            if rid is not None:
                if rid in seen_ids:
                    raise BadRecord("id", f"duplicate id {rid!r} (first at {seen_ids[rid]})")
            meta = {k: _get(row, k, f[k]) for k in extra}
            if listed:
                responses = [(t, s, None, where) for t, s in _responses_of(row, f)]
            else:
                text = check_text("y", _get(row, "y", f["y"]), required=True)
                responses = [(text, _score(_get(row, "score", f["score"])), rid, where)]
        except BadRecord as bad:
            reject(where, bad.field, bad.reason, strict, skipped)
            continue
        if rid is not None:
            seen_ids[rid] = where
        key = x.strip()
        if key not in groups:
            groups[key] = (where, rid if listed else None, meta, [])
        groups[key][3].extend(responses)

    pairs: List[Pair] = []
    counts = {"prompts": len(groups), "responses": 0, "below_min_score": 0, "beyond_top_k": 0}
    for n, (x, (_first_where, prompt_id, meta, responses)) in enumerate(groups.items(), start=1):
        counts["responses"] += len(responses)
        ok = [r for r in responses if min_score is None or r[1] >= min_score]
        counts["below_min_score"] += len(responses) - len(ok)
        # sorted() is stable: equal scores keep file order, so the choice does not depend on chance.
        best = sorted(ok, key=lambda r: -r[1])[:top_k]
        counts["beyond_top_k"] += len(ok) - len(best)
        base = prompt_id or f"{label}-{n:06d}"
        for rank, (text, score, rid, where) in enumerate(best, start=1):
            pid = rid or f"{base}-r{rank}"
            pairs.append(Pair(pid, x, text, {**meta, "source": label, "where": where, "score": score, "rank": rank}))
            if src.limit is not None and len(pairs) >= src.limit:
                return LoadedSource(pairs, skipped, counts)
    return LoadedSource(pairs, skipped, counts)


# --- long texts --------------------------------------------------------------------------------

_PG_START = re.compile(r"^\W*(\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG|\*END\*THE SMALL PRINT)", re.I)
_PG_END = re.compile(r"^\W*(\*{3}\s*)?(END OF (THE |THIS )?PROJECT GUTENBERG|End of (the )?Project Gutenberg)", re.I)
_CREDITS = re.compile(
    r"^\W*(produced by|prepared by|transcribed by|e-?text prepared|this e-?book was produced"
    r"|transcriber'?s note|\[illustration)",
    re.I,
)
_CONTENTS = re.compile(r"^\W*(table of )?contents\W*$", re.I)
_ITALIC = re.compile(r"(?<!\w)_(?=\S)([^_\n]+?)(?<=\S)_(?!\w)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"'\u201d\u2019)\]])\s+")
_TERMINAL = tuple(".!?:;,\"'\u201d\u2019)]")


@dataclass
class Paragraph:
    line: int  # 1-based line of its first line in the original text
    lines: List[str]

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    @property
    def words(self) -> int:
        return sum(len(l.split()) for l in self.lines)


def _norm_line(line: str) -> str:
    line = line.replace("\u00a0", " ").replace("\t", " ").replace("\ufeff", "")
    return " ".join(_ITALIC.sub(r"\1", line).split())


def paragraphs(text: str, strip_boilerplate: bool = True) -> List[Paragraph]:
    """Paragraphs (blank-line separated, hard wraps joined, whitespace normalised) of a long text,
    with the Project Gutenberg header, licence and marked front matter removed."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    first, last = 0, len(lines)
    if strip_boilerplate:
        for i, line in enumerate(lines):
            if _PG_START.match(line):
                first = i + 1
                break
        for i in range(first, len(lines)):
            if _PG_END.match(lines[i]):
                last = i
                break
    paras: List[Paragraph] = []
    cur: Optional[Paragraph] = None
    for i in range(first, last):
        line = _norm_line(lines[i])
        if not line:
            cur = None
            continue
        if cur is None:
            cur = Paragraph(i + 1, [])
            paras.append(cur)
        cur.lines.append(line)
    # Section dividers ("* * *") and illustration captions carry no text of the work.
    paras = [p for p in paras if any(c.isalnum() for c in p.text) and not p.text.startswith("[Illustration")]
    return _strip_front_matter(paras) if strip_boilerplate else paras


def _is_list_like(p: Paragraph) -> bool:
    """A table-of-contents block: short lines only, or lines ending in page numbers."""
    return all(len(l.split()) <= 10 or re.search(r"\d+\s*$", l) for l in p.lines)


def _strip_front_matter(paras: List[Paragraph]) -> List[Paragraph]:
    head = min(len(paras), 60)
    start = 0
    while start < head and _CREDITS.match(paras[start].text):
        start += 1
    for i in range(start, head):
        if _CONTENTS.match(paras[i].text):
            # Everything up to a marked table of contents is title matter; the contents run until
            # the first paragraph of prose.
            j = i + 1
            while j < len(paras) and _is_list_like(paras[j]):
                j += 1
            return paras[j:]
    return paras[start:]


_HEADING_WORD = re.compile(r"^(chapter|book|part|section|act|scene|canto|volume|[ivxlc]+\.?$)", re.I)


def _is_heading(p: Paragraph) -> bool:
    """ "CHAPTER II.", "The Toll House": short, and either untitled by punctuation or shouted."""
    t = p.text
    return p.words <= 8 and (not t.endswith(_TERMINAL) or t.isupper() or bool(_HEADING_WORD.match(t)))


def _split_long(text: str, target: int) -> List[str]:
    """Sentence-boundary chunks of about `target` words; a single sentence over twice the target is
    cut between words (nothing better exists)."""
    sentences: List[str] = []
    for s in _SENTENCE_END.split(text):
        ws = s.split()
        if len(ws) > 2 * target:
            sentences += [" ".join(ws[i : i + target]) for i in range(0, len(ws), target)]
        elif ws:
            sentences.append(s)
    return [" ".join(chunk) for chunk in _greedy([(s, len(s.split())) for s in sentences], target)]


def _greedy(units: List[Tuple[Any, int]], target: int) -> List[List[Any]]:
    """Consecutive runs of units whose word counts come closest to `target`."""
    runs: List[List[Any]] = []
    cur: List[Any] = []
    n = 0
    for unit, w in units:
        # Close the run before this unit when adding it overshoots the target by more than the run
        # falls short of it.
        if cur and n + w > target and (n + w - target) > (target - n):
            runs.append(cur)
            cur, n = [], 0
        cur.append(unit)
        n += w
    if cur:
        runs.append(cur)
    return runs


def cut_pieces(paras: List[Paragraph], target_words: int, min_words: int) -> Tuple[List[Tuple[int, str]], int]:
    """(first line, text) pieces of about `target_words`, paragraphs joined by a blank line; also the
    count of pieces left out for being under `min_words`."""
    # Units never split: a paragraph with the headings right before it, or one chunk of a paragraph
    # over twice the target.
    units: List[Tuple[Tuple[int, str, bool], int]] = []  # ((line, text, continues a paragraph), words)
    pending: List[Paragraph] = []
    for p in paras:
        if _is_heading(p):
            pending.append(p)
            continue
        line = pending[0].line if pending else p.line
        prefix = "".join(h.text + "\n\n" for h in pending)
        if p.words > 2 * target_words:
            for k, chunk in enumerate(_split_long(p.text, target_words)):
                units.append(((line, (prefix if k == 0 else "") + chunk, k > 0), len(chunk.split())))
        else:
            units.append(((line, prefix + p.text, False), p.words + sum(h.words for h in pending)))
        pending = []
    pieces, short = [], 0
    for run in _greedy(units, target_words):
        text = run[0][1] + "".join((" " if cont else "\n\n") + t for _, t, cont in run[1:])
        if len(text.split()) < min_words:
            short += 1
            continue
        pieces.append((run[0][0], text))
    return pieces, short


def _iter_documents(src: SourceConfig) -> Iterator[Tuple[str, str, Optional[str], Any]]:
    """(where, doc id, title, text or BadRecord) of every long text."""
    path = resolve_data_path(src.path) if src.path else None
    if path is not None and (path.is_dir() or path.suffix.lower() == ".txt"):
        files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
        if not files or not files[0].is_file():
            raise DataError(str(path), "path", "no such file" if not path.is_dir() else "folder holds no .txt files")
        for fp in files:
            text = fp.read_bytes().decode("utf-8", errors="surrogateescape")
            if has_bad_bytes(text):
                line = text.count("\n", 0, next(i for i, c in enumerate(text) if "\udc80" <= c <= "\udcff")) + 1
                yield f"{fp}:{line}", fp.stem, None, BadRecord("y", "contains bytes that are not valid UTF-8")
                continue
            yield f"{fp}:1", fp.stem, None, text
        return
    f = src.fields
    if "y" not in f:
        raise DataError(f"source {source_label(src)}", "y", "not mapped: add it to the source's `fields` (the text)")
    label = source_label(src)
    for n, (where, row) in enumerate(iter_rows(src), start=1):
        if isinstance(row, BadRecord):
            yield where, "", None, row
            continue
        try:
            text = check_text("y", _get(row, "y", f["y"]), required=True)
            did = check_text("id", _get(row, "id", f["id"]), required=True) if "id" in f else f"{label}-{n:06d}"
            title = _get(row, "title", f["title"]) if "title" in f else None
        except BadRecord as bad:
            yield where, "", None, bad
            continue
        yield where, did, title, text


def load_long_text(src: SourceConfig, strict: bool) -> LoadedSource:
    lt = src.long_text
    label = source_label(src)
    if lt.target_words < 1 or lt.min_words < 0:
        raise DataError(f"source {label}", "long_text", f"target_words must be >= 1 and min_words >= 0, got {lt}")
    skipped: List[Skipped] = []
    pairs: List[Pair] = []
    counts = {"documents": 0, "pieces_under_min_words": 0}
    seen: Dict[str, str] = {}
    for where, did, title, text in _iter_documents(src):
        if isinstance(text, BadRecord):
            reject(where, text.field, text.reason, strict, skipped)
            continue
        if did in seen:
            reject(where, "id", f"duplicate id {did!r} (first at {seen[did]})", strict, skipped)
            continue
        seen[did] = where
        counts["documents"] += 1
        pieces, short = cut_pieces(paragraphs(text, lt.strip_boilerplate), lt.target_words, lt.min_words)
        counts["pieces_under_min_words"] += short
        if not pieces:
            reject(where, "y", f"no piece of at least {lt.min_words} words after removing boilerplate", strict, skipped)
            continue
        file_part = where.rsplit(":", 1)[0]
        for k, (line, piece) in enumerate(pieces, start=1):
            # A .txt document's pieces point at their own line; a record's at the record.
            at = f"{file_part}:{line}" if file_part.endswith(".txt") else where
            meta = {"source": label, "where": at, "doc": did, "piece": k, "words": len(piece.split())}
            if title is not None:
                meta["title"] = title
            pairs.append(Pair(f"{did}-p{k:04d}", "", piece, meta))
            if src.limit is not None and len(pairs) >= src.limit:
                return LoadedSource(pairs, skipped, counts)
    return LoadedSource(pairs, skipped, counts)

"""Loading (request, answer) pairs and other records from local JSONL/Parquet/CSV files or a hub
dataset, with a field mapping from the config and per-record validation.

Every bad record is either a `DataError` naming `file:line` and the field (strict mode) or a
`Skipped` entry with the same information (lenient mode); nothing is dropped silently.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from deepwriter.config.data import SourceConfig
from deepwriter.core import think
from deepwriter.core.badinput import DataError, Skipped, reject  # noqa: F401  (the data package's names for them)
from deepwriter.core.files import resolve_data_path

# Text fields must be strings; `id` may also be an integer, which is turned into its decimal form.
TEXT_FIELDS = ("x", "y", "z", "think", "id")
# Fields a record may lack although they are mapped: the pair is then without one (a category is
# labelled when data.label_categories is on, else the pair stays uncategorised and is counted). A
# recipe maps `category` for its own data, and Hydra merges a user's `fields` into that mapping.
OPTIONAL_FIELDS = ("category",)
FORMATS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass
class Pair:
    id: str
    x: str
    y: str
    meta: Dict[str, Any] = field(default_factory=dict)  # mapped extra fields (category, ...) + source


class BadRecord(Exception):
    def __init__(self, field_name: str, reason: str):
        self.field, self.reason = field_name, reason


# --- raw rows ----------------------------------------------------------------------------------


def has_bad_bytes(s: str) -> bool:
    # Text is decoded with surrogateescape, so undecodable bytes show up as lone surrogates.
    return any("\udc80" <= ch <= "\udcff" for ch in s)


def _iter_jsonl(path: Path) -> Iterator[Tuple[str, Any]]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            text = raw.decode("utf-8", errors="surrogateescape").strip()
            if not text:
                continue  # blank lines carry no record
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                yield where, BadRecord("<line>", f"malformed JSON ({exc.msg}: column {exc.colno})")
                continue
            if not isinstance(row, dict):
                yield where, BadRecord("<line>", f"expected a JSON object, got {type(row).__name__}")
                continue
            yield where, row


def _iter_json(path: Path) -> Iterator[Tuple[str, Any]]:
    """A .json file: a JSON list of objects (the REER reference's input format: index, question,
    solution), each addressed as `file:[i]`; a file that is not one JSON document is read as one
    object per line (JSON Lines saved as .json)."""
    text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip().startswith("["):
            yield f"{path}:{exc.lineno}", BadRecord("<file>", f"malformed JSON ({exc.msg}: column {exc.colno})")
        else:
            yield from _iter_jsonl(path)
        return
    if not isinstance(data, list):
        yield (
            f"{path}:1",
            BadRecord(
                "<file>",
                f"expected a JSON list of objects, got {type(data).__name__} (one object per line: use .jsonl)",
            ),
        )
        return
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            yield f"{path}:[{i}]", BadRecord("<item>", f"expected a JSON object, got {type(row).__name__}")
            continue
        yield f"{path}:[{i}]", row


def _iter_csv(path: Path) -> Iterator[Tuple[str, Any]]:
    csv.field_size_limit(sys.maxsize)
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return
        start = reader.line_num + 1
        for values in reader:
            where = f"{path}:{start}"
            start = reader.line_num + 1
            if not values:
                continue
            if len(values) != len(header):
                yield where, BadRecord("<line>", f"{len(values)} values for {len(header)} columns")
                continue
            yield where, dict(zip(header, values))


def _iter_parquet(path: Path) -> Iterator[Tuple[str, Any]]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    row = 0
    for batch in pf.iter_batches(batch_size=1024):
        for rec in batch.to_pylist():
            row += 1
            yield f"{path}:{row}", rec


def _columns(path: Path, fmt: str) -> Optional[List[str]]:
    """Column names of a columnar file, so that a bad mapping fails once, before any row."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
            return next(csv.reader(f), [])
    return None


def _iter_hub(src: SourceConfig) -> Iterator[Tuple[str, Any]]:
    import datasets

    ds = datasets.load_dataset(src.hub_id, split=src.split)
    for i, rec in enumerate(ds, start=1):
        yield f"{src.hub_id}[{src.split}]:{i}", rec


def source_label(src: SourceConfig) -> str:
    return src.name or (Path(src.path).stem if src.path else str(src.hub_id))


def iter_rows(src: SourceConfig, key: Optional[str] = None) -> Iterator[Tuple[str, Any]]:
    """(where, raw row dict) for every record of a source; a row that cannot be read at all comes as
    (where, BadRecord). `key`: the source's config key (data.pairs), named in a mapping error's remedy."""
    if src.path:
        path = resolve_data_path(src.path)
        if path.is_dir():
            raise DataError(
                str(path),
                "path",
                f"a folder, not a file; expected a {'/'.join(FORMATS)} file (a folder laid out as a hub dataset "
                "goes in hub_id, with path null)",
            )
        if not path.is_file():
            raise DataError(str(path), "path", "no such file")
        fmt = FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise DataError(str(path), "path", f"unknown format {path.suffix!r}; expected one of {sorted(FORMATS)}")
        cols = _columns(path, fmt)
        if cols is not None:
            # a dotted name ("extra_info.index") reads inside a column of records
            absent = [
                (ours, theirs)
                for ours, theirs in src.fields.items()
                if theirs.split(".")[0] not in cols and ours not in OPTIONAL_FIELDS
            ]
            if absent:
                ours, theirs = absent[0]
                # A mapping error concerns every row: it is a configuration error in both modes.
                raise DataError(
                    f"{path}:1",
                    ours,
                    f"mapped to column {theirs!r}, which the file lacks (columns: {cols})" + remedy(ours, key),
                )
        return {"jsonl": _iter_jsonl, "json": _iter_json, "csv": _iter_csv, "parquet": _iter_parquet}[fmt](path)
    if src.hub_id:
        return _iter_hub(src)
    raise DataError(f"source {src.name or '<unnamed>'}", "path", "neither path nor hub_id is set")


# --- mapped records ----------------------------------------------------------------------------


def check_text(name: str, value: Any, required: bool) -> Optional[str]:
    if value is None:
        if required:
            raise BadRecord(name, "missing (null)")
        return None
    if name == "id" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise BadRecord(name, f"expected a string, got {type(value).__name__}")
    if has_bad_bytes(value):
        raise BadRecord(name, "contains bytes that are not valid UTF-8")
    if required and not value.strip():
        raise BadRecord(name, "empty")
    return value


ABSENT = object()


def lookup_field(row: Dict[str, Any], name: str) -> Any:
    """row[name], or for a dotted name a walk through nested records ("extra_info.index")."""
    if name in row:
        return row[name]
    value: Any = row
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return ABSENT
        value = value[part]
    return value


def remedy(ours: str, key: Optional[str], required: Sequence[str] = ("x", "y")) -> str:
    """What to do about a mapped field the data lacks, as overrides of the source's config `key`
    (nothing when the caller did not say which key). A mapping the user did not write comes from the
    recipe: Hydra merges the user's `fields` into the recipe's."""
    if not key:
        return ""
    if ours in required:
        return f"; set {key}.fields.{ours}=NAME to the field that holds it"
    return f"; not your mapping? the recipe's fields are merged with yours: ~{key}.fields.{ours} removes it"


def map_row(
    row: Dict[str, Any], fields: Dict[str, str], required: Sequence[str], key: Optional[str] = None
) -> Dict[str, Any]:
    """Our names -> values. Raises BadRecord for a missing mapped field or a bad value; an optional field
    (OPTIONAL_FIELDS) the record lacks is left out. `key` names the source in the remedy."""
    out: Dict[str, Any] = {}
    for ours, theirs in fields.items():
        value = lookup_field(row, theirs)
        if value is ABSENT:
            if ours in OPTIONAL_FIELDS:
                continue
            raise BadRecord(ours, f"mapped to {theirs!r}, which the record lacks" + remedy(ours, key, required))
        if ours in TEXT_FIELDS:
            value = check_text(ours, value, required=ours in required)
        elif isinstance(value, str) and has_bad_bytes(value):
            raise BadRecord(ours, "contains bytes that are not valid UTF-8")
        out[ours] = value
    for name in required:
        if name not in fields:
            raise BadRecord(name, "not mapped: add it to the source's `fields`")
    return out


def load_records(
    src: SourceConfig,
    strict: bool,
    required: Sequence[str] = ("x", "y"),
    key: Optional[str] = None,
) -> Tuple[List[Tuple[str, Dict[str, Any]]], List[Skipped]]:
    """(where, mapped record) for every valid record, up to `src.limit`; bad ones raise or are
    skipped. Duplicate ids count as bad records: later stages key their output on the id. `key`: the
    source's config key (data.pairs), for the remedy of a mapping error."""
    from tqdm.auto import tqdm

    records: List[Tuple[str, Dict[str, Any]]] = []
    skipped: List[Skipped] = []
    first_seen: Dict[str, str] = {}
    label = source_label(src)
    for where, row in tqdm(iter_rows(src, key), desc=f"load {label}", unit="rec", mininterval=2.0, leave=False):
        try:
            if isinstance(row, BadRecord):
                raise row
            rec = map_row(row, src.fields, required, key)
            rid = rec.get("id")
            if rid is not None:
                if rid in first_seen:
                    raise BadRecord("id", f"duplicate id {rid!r} (first at {first_seen[rid]})")
                first_seen[rid] = where
        except BadRecord as bad:
            reject(where, bad.field, bad.reason, strict, skipped)
            continue
        records.append((where, rec))
        if src.limit is not None and len(records) >= src.limit:
            break
    return records, skipped


def load_pairs(src: SourceConfig, strict: bool, key: Optional[str] = None) -> Tuple[List[Pair], List[Skipped]]:
    """Pairs of a source (local JSONL/Parquet/CSV via `src.path`, `pkg://deepwriter/...` allowed, or
    `src.hub_id` + `split`). `src.fields` maps our names (id, x, y, category, ...) to the file's; an
    unmapped id becomes `<source>-<n>` (n: position in the file). The records are taken as pairs whatever
    `src.kind` says: `deepwriter.pairs.sources` asks the source of the kind whether they are
    (`read_ready_pairs`) and reads the other shapes (`load_source`). `key`: the source's config key
    (data.pairs), named in the remedy of a mapping error."""
    label = source_label(src)
    records, skipped = load_records(src, strict, required=("x", "y"), key=key)
    pairs = []
    for n, (where, rec) in enumerate(records, start=1):
        rid = rec.pop("id", None) or f"{label}-{n:06d}"
        x, y = rec.pop("x"), rec.pop("y")
        meta = {**rec, "source": label, "where": where}
        if think.CLOSE in y:  # a solution with its thinking (as the reference does): y is what follows
            y = y.rpartition(think.CLOSE)[2].strip()
            if not y:
                reject(where, "y", f"nothing after the last {think.CLOSE}", strict, skipped)
                continue
            meta["answer_after_think"] = True
        pairs.append(Pair(id=rid, x=x, y=y, meta=meta))
    return pairs, skipped

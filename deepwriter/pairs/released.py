"""The authors' released trajectories (DeepWriting-20K) as a pair source (`data.pairs.kind=released`).

Each released row holds the request x and a solution that writes its thinking before the answer
(`<think>...</think>` then y): the authors' own (x, y) pair, plus the thinking their search kept. The
pair is (x, y); the released thinking rides along in the pair's meta (`released_thinking`) so the
search can score it under the same scorer as ours, pair for pair (synthesis counts `released_*`).

The request may be a string or chat turns (verl-style `prompt` columns, also stored as a JSON
string): the first user turn is the request.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

from deepwriter.config.data import SourceConfig
from deepwriter.core import think
from deepwriter.pairs.read import (
    ABSENT,
    BadRecord,
    Pair,
    Skipped,
    check_text,
    iter_rows,
    lookup_field,
    map_row,
    reject,
    source_label,
)

RELEASED_THINKING = "released_thinking"  # the pair meta key the search compares against


def request_text(value: Any) -> Any:
    """The request of a string or of chat turns ([{role, content}, ...]: the first user turn)."""
    if isinstance(value, str) and value.lstrip().startswith("[{"):
        try:
            turns = json.loads(value)
        except json.JSONDecodeError:
            turns = None  # a request that happens to start with "[{"
        if isinstance(turns, list) and all(isinstance(t, dict) and "role" in t for t in turns):
            value = turns
    if isinstance(value, list):
        for turn in value:
            if isinstance(turn, dict) and turn.get("role") in ("user", "human"):
                return turn.get("content")
        raise BadRecord("x", "chat turns without a user turn")
    return value


def read_released_row(row: Dict[str, Any], fields: Dict[str, str], key: str) -> Tuple[str, str, str, Dict[str, Any]]:
    """(x, thinking, y, the other mapped fields) of one released row, mapped by `fields` (the config
    key `key` names them); raises BadRecord naming the bad field. The one reading of a released row:
    the pair source below and the mix's released part (deepwriter.mix.released) both use it."""
    for name in ("x", "y"):
        if name not in fields:
            raise BadRecord(name, f"not mapped: add it to {key}.fields")
    raw_x = lookup_field(row, fields["x"])
    if raw_x is ABSENT:
        raise BadRecord("x", f"mapped to {fields['x']!r}, which the record lacks")
    x = check_text("x", request_text(raw_x), required=True)
    rec = map_row(row, {k: v for k, v in fields.items() if k != "x"}, required=("y",), key=key)
    if "think" in fields:  # the thinking in a column of its own
        thinking, y = check_text("think", rec.get("think"), required=True), rec["y"]
    else:
        if think.CLOSE not in rec["y"]:
            raise BadRecord("y", f"no {think.CLOSE} in the answer: map `think` to the thinking's column")
        parts = think.split(rec["y"])
        thinking, y = parts.thinking, parts.answer
    if not (y or "").strip():
        raise BadRecord("y", f"nothing after the last {think.CLOSE}")
    if not (thinking or "").strip():
        raise BadRecord("y", "empty thinking block")
    return x, thinking.strip(), y.strip(), rec


def released_pair(row: Dict[str, Any], fields: Dict[str, str], n: int, label: str, where: str) -> Pair:
    """One released row as a pair with its thinking in meta; raises BadRecord naming the bad field."""
    x, thinking, y, rec = read_released_row(row, fields, "data.pairs")
    meta = {RELEASED_THINKING: thinking, "source": label, "where": where}
    if rec.get("category"):
        meta["category"] = rec["category"]
    return Pair(id=rec.get("id") or f"{label}-{n:06d}", x=x, y=y, meta=meta)


def load_released_pairs(src: SourceConfig, strict: bool) -> "tuple[List[Pair], List[Skipped]]":
    """The (x, y) pairs of a released trajectory dataset, up to `src.limit`; bad rows raise (strict)
    or are counted skips."""
    label = source_label(src)
    pairs: List[Pair] = []
    skipped: List[Skipped] = []
    seen: Dict[str, str] = {}
    for n, (where, row) in enumerate(iter_rows(src, "data.pairs"), start=1):
        try:
            if isinstance(row, BadRecord):
                raise row
            pair = released_pair(row, src.fields, n, label, where)
            if pair.id in seen:
                raise BadRecord("id", f"duplicate id {pair.id!r} (first at {seen[pair.id]})")
        except BadRecord as bad:
            reject(where, bad.field, bad.reason, strict, skipped)
            continue
        seen[pair.id] = where
        pairs.append(pair)
        if src.limit is not None and len(pairs) >= src.limit:
            break
    return pairs, skipped

"""A released dataset of trajectories (DeepWriting-20K) as the mix's synthetic part.

Rows are read by the one source reader (deepwriter.pairs.read.iter_rows: a local file, or
`datasets.load_dataset` for a hub id or a local folder laid out as a hub dataset) and mapped by
`data.mix.trajectories_from.fields`. The request may be a string or chat turns (verl-style `prompt`
columns: the first user turn is the request). When `think` is not mapped, the answer column holds
the thinking as `<think>...</think>` before the answer and is split by deepwriter.core.think.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

from deepwriter.config.data import SourceConfig, TrajectoriesConfig
from deepwriter.mix.build import BadRecord, gather
from deepwriter.pairs.read import Skipped, iter_rows, source_label
from deepwriter.pairs.released import read_released_row


def as_source(t: TrajectoriesConfig) -> SourceConfig:
    """The released dataset as a source for the one reader."""
    # unnamed: a file's stem, or the hub id's (or local folder's) last part
    name = t.name or (Path(t.path).stem if t.path else str(t.hub_id).rstrip("/").split("/")[-1])
    return SourceConfig(name=name, path=t.path, hub_id=t.hub_id, split=t.split, fields=dict(t.fields), limit=t.limit)


def released_record(row: Dict[str, Any], fields: Dict[str, str], label: str) -> Dict[str, Any]:
    """A mix record from one mapped row; raises BadRecord naming the bad field."""
    x, thinking, y, rec = read_released_row(row, fields, "data.mix.trajectories_from")
    rid = rec.get("id")
    cat = rec.get("category")
    return {
        "id": rid,
        "x": x,
        "y": y,
        "think": thinking,
        "category": cat if isinstance(cat, str) and cat else "uncategorised",
        "answer_id": rid,
        "source": label,
    }


def load_released(t: TrajectoriesConfig, strict: bool) -> Tuple[List[Dict[str, Any]], List[Skipped]]:
    """Mix records of a released dataset, up to `limit` valid ones; bad rows raise or are counted."""
    src = as_source(t)
    label = source_label(src)

    def items() -> Iterator[Tuple[str, Any]]:
        valid = 0
        for n, (where, row) in enumerate(iter_rows(src), start=1):
            try:
                if isinstance(row, BadRecord):
                    raise row
                rec = released_record(row, src.fields, label)
            except BadRecord as r:
                yield where, r
                continue
            if rec["id"] is None:  # an unmapped id: the row's position
                rec["id"] = rec["answer_id"] = f"{label}-{n:07d}"
            yield where, rec
            valid += 1
            if src.limit is not None and valid >= src.limit:
                return

    records, skipped, _ = gather(items(), strict)
    return records, skipped

"""Where synthesis records go: the stage's pairs split into n shards by a hash of their ids
(`synthesis.shards`), each shard an append-only record log (deepwriter.core.records: safe against
kill -9, resumed by id, exclusive to one process), written by the worker that does it (an array task,
`synthesis.shard=i/n`, or one process doing them all). A shard whose worker got to its end has a
`.done.json` beside it: the stage is whole when every shard has one.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Optional


def shard_of(pair_id: str, n: int) -> int:
    """The worker a pair belongs to: a hash of its id, so the split does not depend on input order."""
    return int.from_bytes(hashlib.sha256(pair_id.encode()).digest()[:8], "big") % n


def shard_path(out_dir: Path, i: int, n: int) -> Path:
    return Path(out_dir) / "shards" / f"shard-{i:05d}-of-{n:05d}.jsonl"


def done_path(out_dir: Path, i: int, n: int) -> Path:
    """What the worker of shard i knew at its end (its pairs, skips, unfinished ones): the shard is done."""
    return Path(out_dir) / "shards" / f"shard-{i:05d}-of-{n:05d}.done.json"


def split_in_folder(out_dir: Path, n: int) -> Optional[int]:
    """The split of shards already in the stage folder when it is not `n` (None: none, or n): records of
    another split would not be seen by a resume keyed on this one, and their pairs would be done twice."""
    for f in sorted((Path(out_dir) / "shards").glob("shard-*-of-*.jsonl")):
        m = re.fullmatch(r"shard-\d+-of-(\d+)\.jsonl", f.name)
        if m and int(m.group(1)) != n:
            return int(m.group(1))
    return None

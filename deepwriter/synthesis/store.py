"""Append-only JSONL shards of synthesis records, safe against kill -9.

Each record is one line written with a single write, then flushed and fsynced, so after a crash a
shard holds whole records plus at most one torn last line; opening the shard again truncates that
line and reports the ids already done, so a restart neither duplicates nor loses a record.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set, Tuple

from deepwriter.errors import DeepwriterError


class ShardError(DeepwriterError, ValueError):
    pass


def parse_shard_spec(spec: str) -> Tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n."""
    try:
        i_s, n_s = spec.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise ShardError(f"synthesis.shard: got {spec!r}; expected 'i/n', e.g. '0/4'") from None
    if n < 1 or not 0 <= i < n:
        raise ShardError(f"synthesis.shard: got {spec!r}; need n >= 1 and 0 <= i < n")
    return i, n


def shard_of(pair_id: str, n: int) -> int:
    """The worker a pair belongs to: a hash of its id, so the split does not depend on input order."""
    return int.from_bytes(hashlib.sha256(pair_id.encode()).digest()[:8], "big") % n


def shard_path(out_dir: Path, i: int, n: int) -> Path:
    return Path(out_dir) / "shards" / f"shard-{i:05d}-of-{n:05d}.jsonl"


def read_records(path: Path) -> Iterator[Dict[str, Any]]:
    """Every complete record of a shard (a torn last line is ignored)."""
    if not path.exists():
        return
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                return
            try:
                yield json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ShardError(f"{path}:{lineno}: record: not valid JSON ({exc.msg})") from None


class ShardWriter:
    """Appends records to one shard; on open, repairs a torn tail and learns the ids already done."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.truncated_bytes = self._repair()
        self.done: Set[str] = set()
        for rec in read_records(self.path):
            if rec["id"] in self.done:
                raise ShardError(f"{self.path}: record: id {rec['id']!r} appears twice")
            self.done.add(rec["id"])
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _repair(self) -> int:
        """Cut a last line that has no newline: it is a record whose write was interrupted."""
        if not self.path.exists():
            return 0
        size = self.path.stat().st_size
        if size == 0:
            return 0
        with open(self.path, "rb+") as f:
            # Walk back to the last newline; records can be long, so read backwards in blocks.
            end = size
            pos = size
            while pos > 0:
                start = max(0, pos - (1 << 16))
                f.seek(start)
                block = f.read(pos - start)
                idx = block.rfind(b"\n")
                if idx >= 0:
                    keep = start + idx + 1
                    break
                pos = start
            else:
                keep = 0
            if keep < end:
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())
            return end - keep

    def append(self, record: Dict[str, Any]) -> None:
        if record["id"] in self.done:
            raise ShardError(f"{self.path}: record: id {record['id']!r} is already written")
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        view = memoryview(line)
        while view:  # os.write may write less than asked for large records
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        self.done.add(record["id"])

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def find_duplicate_ids(ids: List[Tuple[str, str]]) -> List[Tuple[str, str, str]]:
    """(where, id, first_where) for every repeated id in a list of (where, id)."""
    seen: Dict[str, str] = {}
    dups = []
    for where, pid in ids:
        if pid in seen:
            dups.append((where, pid, seen[pid]))
        else:
            seen[pid] = where
    return dups

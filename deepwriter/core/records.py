"""The one append-only record log: JSONL files of records keyed by an id, written by every stage that
produces work item by item (synthesis shards, reverse queries and labels, eval answers, judge replies).

- Each record is one line written with a single `write`; `append` fsyncs before it returns, so after a
  kill -9 a log holds whole records plus at most one torn last line.
- Opening a log cuts such a torn last line (a record whose write was interrupted) and learns the ids
  already done; a run resumes after them, so nothing is written twice or lost.
- A log is exclusive: the process that opens it holds an advisory lock (flock) on `<log>.lock` until it
  closes it or dies. A second process opening the same log is refused at once with one line naming the
  holder's pid and host, instead of appending the same items a second time.
- A record whose id is already in the log is refused: a resume that would write an item twice is a bug.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Optional

from deepwriter.core.errors import DeepwriterError


class RecordLogError(DeepwriterError, ValueError):
    """A log that cannot be used as it is: corrupt in its middle, or a repeated id."""


class RecordLogBusy(DeepwriterError):
    """Another process is writing the same log."""


def read_records(path: Path) -> Iterator[Dict[str, Any]]:
    """Every whole record of a log, without opening it for writing (a torn last line is ignored)."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                return
            try:
                yield json.loads(raw)
            except json.JSONDecodeError as exc:
                raise RecordLogError(f"{path}:{lineno}: record: not valid JSON ({exc.msg})") from None


def _cut_torn_tail(path: Path) -> int:
    """Truncate a last line that has no newline; the number of bytes cut."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        pos, keep = size, 0
        while pos > 0:  # records can be long: walk back in blocks to the last newline
            start = max(0, pos - (1 << 16))
            f.seek(start)
            idx = f.read(pos - start).rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                break
            pos = start
        if keep < size:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        return size - keep


class RecordLog:
    """An append-only JSONL log of records keyed by `key`, opened exclusively (see the module doc).
    `done` maps each id already written to its record. Thread-safe appends."""

    def __init__(self, path: Path, key: str = "id"):
        self.path = Path(path)
        self.key = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = -1
        self._lock_fd = self._lock()
        try:
            self.truncated_bytes = _cut_torn_tail(self.path) if self.path.exists() else 0
            self.done: Dict[str, Dict[str, Any]] = {}
            for rec in read_records(self.path):
                rid = rec.get(key)
                if rid in self.done:
                    raise RecordLogError(f"{self.path}: record: {key} {rid!r} appears twice")
                self.done[rid] = rec
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except BaseException:
            self.close()
            raise
        self._write_lock = threading.Lock()

    def _lock(self) -> int:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RecordLogBusy(
                f"{self.path}: already being written by {holder}; two runs of the same stage output "
                "would write its items twice (stop the other run, or wait for it)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        return fd

    def append(self, records: Iterable[Dict[str, Any]] | Dict[str, Any]) -> None:
        """Write records (one dict or several), then fsync once."""
        batch = [records] if isinstance(records, dict) else list(records)
        with self._write_lock:
            for rec in batch:
                rid = rec[self.key]
                if rid in self.done:
                    raise RecordLogError(f"{self.path}: record: {self.key} {rid!r} is already written")
                view = memoryview((json.dumps(rec, ensure_ascii=False, default=str) + "\n").encode())
                while view:  # os.write may write less than asked for large records
                    view = view[os.write(self._fd, view) :]
                self.done[rid] = rec
            if batch:
                os.fsync(self._fd)

    def get(self, rid: str) -> Optional[Dict[str, Any]]:
        return self.done.get(rid)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    def __enter__(self) -> "RecordLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_lock_fd", -1) >= 0:
            self.close()

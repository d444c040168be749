"""Where synthesis records go: one shard per worker (`synthesis.shard=i/n`), each an append-only
record log (deepwriter.core.records: safe against kill -9, resumed by id, exclusive to one process).
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def shard_of(pair_id: str, n: int) -> int:
    """The worker a pair belongs to: a hash of its id, so the split does not depend on input order."""
    return int.from_bytes(hashlib.sha256(pair_id.encode()).digest()[:8], "big") % n


def shard_path(out_dir: Path, i: int, n: int) -> Path:
    return Path(out_dir) / "shards" / f"shard-{i:05d}-of-{n:05d}.jsonl"

"""Files: where a configured path points (`pkg://` paths into installed packages), content hashes,
and atomic writes."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from deepwriter.core.errors import ConfigError


def expand(path: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(path)))


def resolve_data_path(path: str) -> Path:
    """`pkg://deepwriter/...` points into the installed package; anything else is a file path."""
    if path.startswith("pkg://"):
        rest = path[len("pkg://") :]
        package, _, rel = rest.partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise ConfigError(f"{path}: package {package!r} is not installed")
        return Path(spec.origin).parent / rel
    return expand(path)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON under a temporary name, then rename it into place: readers see the old file or the new."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str))
    os.replace(tmp, path)

"""The mix stage's dataset turned into training rows: validated, rendered with the training template,
tokenised with assistant-only labels, over-long samples truncated or dropped, and cached on disk
under a key of everything that decides the result (dataset files, tokenizer, template, length
policy), so a resumed or repeated run does not tokenise again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from deepwriter.config.root import stable_hash
from deepwriter.core.badinput import DataError, Skipped, reject
from deepwriter.sft.templates import tokenize_with_labels

log = logging.getLogger("deepwriter.sft")

ROLES = ("system", "user", "assistant")
_CHUNK = 1000  # rows per Arrow chunk while tokenising: keeps Python lists small for long samples


class SFTDataError(DataError):
    """A malformed training row: `file:row N: field 'name': reason`."""


@dataclass
class Prepared:
    path: Path  # the tokenised dataset (input_ids, labels) on disk
    counts: Dict[str, int]
    skipped: List[Skipped] = field(default_factory=list)
    sources: Dict[str, int] = field(default_factory=dict)  # rows per `source` value, for the model card


def row_problem(messages: Any) -> Optional[str]:
    """Why a `messages` value cannot be trained on, or None."""
    if not isinstance(messages, list) or not messages:
        return "expected a non-empty list of {role, content} messages"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            return f"message {i} is not a {{role, content}} mapping"
        if m["role"] not in ROLES:
            return f"message {i} has role {m['role']!r}; expected one of {list(ROLES)}"
        if not isinstance(m["content"], str):
            return f"message {i} content is not a string"
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        return "no assistant message with content (nothing to train on)"
    return None


def _dataset_digest(dataset_dir: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(dataset_dir.rglob("*")):
        if f.is_file() and f.suffix in (".arrow", ".json"):
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def _tokenizer_digest(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    blob = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_key(dataset_dir: Path, tokenizer: Any, max_length: int, overlong: str, strict: bool) -> str:
    return stable_hash(
        {
            "data": _dataset_digest(dataset_dir),
            "tokenizer": _tokenizer_digest(tokenizer),
            "template": tokenizer.chat_template,
            "eos": tokenizer.eos_token,
            "max_length": max_length,
            "overlong": overlong,
            "strict": strict,
            "version": 1,
        }
    )


def prepare(
    dataset_dir: Path,
    tokenizer: Any,
    max_length: int,
    overlong: str,
    strict: bool,
    cache_root: Path,
    is_main: bool = True,
    wait_s: float = 24 * 3600,
) -> Prepared:
    """Tokenise (or reuse) the dataset at `dataset_dir`. Only the main process writes the cache; the
    other ranks of a launch wait for it."""
    if overlong not in ("truncate", "drop"):
        raise SFTDataError(f"sft.overlong: got {overlong!r}; expected truncate or drop")
    if not (dataset_dir / "dataset_info.json").exists() and not (dataset_dir / "state.json").exists():
        raise SFTDataError(f"{dataset_dir}: not a saved Hugging Face dataset (expected Dataset.save_to_disk output)")
    key = cache_key(dataset_dir, tokenizer, max_length, overlong, strict)
    dest = cache_root / key
    done = dest / "prepare.json"
    if not done.exists():
        if is_main:
            _tokenize_to(dataset_dir, tokenizer, max_length, overlong, strict, dest)
        else:
            start = time.time()
            while not done.exists():
                if time.time() - start > wait_s:
                    raise TimeoutError(f"gave up waiting for the main process to tokenise into {dest}")
                time.sleep(2)
    else:
        log.info("reusing tokenised data %s", dest)
    meta = json.loads(done.read_text())
    return Prepared(
        path=dest / "data",
        counts=meta["counts"],
        skipped=[Skipped(**s) for s in meta["skipped"]],
        sources=meta["sources"],
    )


def _arrow_rows(dataset_dir: Path) -> int:
    """Rows in the saved Arrow files (datasets cannot load a saved empty dataset, so count first)."""
    import pyarrow as pa

    total = 0
    for f in dataset_dir.glob("*.arrow"):
        with pa.memory_map(str(f)) as source:
            total += pa.ipc.open_stream(source).read_all().num_rows
    return total


def _fit_to_length(
    ids: List[int], labels: List[int], max_length: int, overlong: str, counts: Dict[str, int]
) -> Optional[Tuple[List[int], List[int]]]:
    """The sample within max_length (truncated, or None when it is dropped), counted."""
    counts["max_sample_tokens"] = max(counts["max_sample_tokens"], len(ids))
    if len(ids) <= max_length:
        return ids, labels
    counts["overlong"] += 1
    if overlong == "drop":
        counts["dropped_overlong"] += 1
        return None
    ids, labels = ids[:max_length], labels[:max_length]
    if not any(label != -100 for label in labels):
        # The prompt alone fills max_length: no loss left, so the sample goes.
        counts["dropped_overlong"] += 1
        return None
    counts["truncated"] += 1
    return ids, labels


def _write_prepared(
    dataset_dir: Path,
    dest: Path,
    chunks: List[Any],
    counts: Dict[str, int],
    skipped: List[Skipped],
    sources: Dict[str, int],
    max_length: int,
    overlong: str,
) -> None:
    """The tokenised samples and prepare.json into `dest`, atomically (a new folder renamed over it)."""
    import datasets

    if not chunks:
        raise SFTDataError(
            f"{dataset_dir}: no trainable samples left (rows {counts['rows']}, skipped "
            f"{counts['skipped']}, dropped as over-long {counts['dropped_overlong']})"
        )
    tmp = dest.parent / (dest.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    datasets.concatenate_datasets(chunks).save_to_disk(str(tmp / "data"))
    (tmp / "prepare.json").write_text(
        json.dumps(
            {
                "counts": counts,
                "skipped": [s.__dict__ for s in skipped],
                "sources": sources,
                "max_length": max_length,
                "overlong": overlong,
                "source_dataset": str(dataset_dir),
            },
            indent=2,
        )
    )
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def _tokenize_to(dataset_dir: Path, tokenizer: Any, max_length: int, overlong: str, strict: bool, dest: Path) -> None:
    import datasets
    from tqdm.auto import tqdm

    if _arrow_rows(dataset_dir) == 0:
        raise SFTDataError(f"{dataset_dir}: the dataset has no rows")
    ds = datasets.load_from_disk(str(dataset_dir))
    if "messages" not in ds.column_names:
        raise SFTDataError(f"{dataset_dir}: field 'messages': missing column (columns: {ds.column_names})")
    if len(ds) == 0:
        raise SFTDataError(f"{dataset_dir}: the dataset has no rows")
    counts = {
        "rows": len(ds),
        "skipped": 0,
        "overlong": 0,
        "truncated": 0,
        "dropped_overlong": 0,
        "samples": 0,
        "tokens": 0,
        "loss_tokens": 0,
        "max_sample_tokens": 0,
    }
    skipped: List[Skipped] = []
    sources: Dict[str, int] = {}
    chunks = []
    ids_buf: List[List[int]] = []
    labels_buf: List[List[int]] = []

    def flush() -> None:
        if ids_buf:
            chunks.append(datasets.Dataset.from_dict({"input_ids": list(ids_buf), "labels": list(labels_buf)}))
            ids_buf.clear()
            labels_buf.clear()

    has_source = "source" in ds.column_names
    for i, row in enumerate(tqdm(ds, desc="sft: tokenising", unit="sample", mininterval=2.0)):
        where = f"{dataset_dir}:row {i}"
        problem = row_problem(row["messages"])
        if problem is None:
            ids, labels = tokenize_with_labels(tokenizer, row["messages"])
            if not any(label != -100 for label in labels):
                problem = "the template gave no assistant tokens (is {% generation %} in the chat template?)"
        if problem is not None:
            reject(where, "messages", problem, strict, skipped, error=SFTDataError)
            counts["skipped"] += 1
            continue
        fitted = _fit_to_length(ids, labels, max_length, overlong, counts)
        if fitted is None:
            continue
        ids, labels = fitted
        counts["samples"] += 1
        counts["tokens"] += len(ids)
        counts["loss_tokens"] += sum(1 for label in labels if label != -100)
        src = str(row["source"]) if has_source else "unknown"
        sources[src] = sources.get(src, 0) + 1
        ids_buf.append(ids)
        labels_buf.append(labels)
        if len(ids_buf) >= _CHUNK:
            flush()
    flush()
    if counts["skipped"]:
        log.warning(
            "sft: skipped %d malformed rows (first: %s: %s)", counts["skipped"], skipped[0].where, skipped[0].reason
        )
    if counts["dropped_overlong"] or counts["truncated"]:
        log.warning(
            "sft: %d samples longer than max_length=%d (%d truncated, %d dropped)",
            counts["overlong"],
            max_length,
            counts["truncated"],
            counts["dropped_overlong"],
        )
    _write_prepared(dataset_dir, dest, chunks, counts, skipped, sources, max_length, overlong)


def attention_pairs_per_token(dataset_path: Path) -> float:
    """Causal (query, key) pairs per token of the tokenised dataset: sum of L (L + 1) / 2 over its
    samples of L tokens, over the sum of L. Packing keeps each sample to itself, so this is what a
    token's attention needs whatever row it lands in (read from the Arrow column's list lengths, not
    the tokens)."""
    import datasets
    import pyarrow.compute as pc

    lengths = pc.list_value_length(datasets.load_from_disk(str(dataset_path)).data.column("input_ids"))
    tokens = pc.sum(lengths).as_py() or 0
    if not tokens:
        return 0.0
    pairs = pc.sum(pc.divide(pc.multiply(lengths, pc.add(lengths, 1)), 2)).as_py()
    return pairs / tokens

"""Offline W&B runs read back from disk, so tests assert on what a stage really logged."""

from __future__ import annotations

from pathlib import Path


def read_wandb_offline(path: Path) -> dict:
    """An offline W&B run read back from its `run-*.wandb` file: {"job_type", "group", "config",
    "history" (one dict per logged step), "summary" (the final one)}; values are decoded from JSON.

    wandb 0.31 ships no Python reader of that file (its Go core writes and syncs it), so this reads
    the file's framing (a LevelDB log: a ":W&B" header, 32 KiB blocks of chunks with a 7-byte header
    each: crc32c, length, kind = full | first | middle | last) and parses every record with wandb's
    own protobuf schema (`wandb.proto.wandb_internal_pb2.Record`)."""
    import json
    import time

    from wandb.proto import wandb_internal_pb2 as pb

    # wandb's core process writes the file behind the SDK: `finish()` can return before the last
    # buffered records reach the disk on a loaded machine, so read until the run's `exit` record.
    deadline = time.monotonic() + 60
    while True:
        records = _wandb_log_records(Path(path).read_bytes(), path, pb)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        assert time.monotonic() < deadline, f"{path}: no exit record after 60 s"
        time.sleep(0.2)

    def put(into: dict, item) -> None:  # `nested_key` is a path into nested dicts (an image's fields ...)
        path = [item.key] if item.key else list(item.nested_key)
        for part in path[:-1]:
            into = into.setdefault(part, {})
        into[path[-1]] = json.loads(item.value_json)

    def remove(into: dict, item) -> None:
        path = [item.key] if item.key else list(item.nested_key)
        for part in path[:-1]:
            into = into.get(part, {})
        into.pop(path[-1], None)

    run: dict = {"job_type": None, "group": None, "config": {}, "history": [], "summary": {}}
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run["job_type"], run["group"] = r.run.job_type, r.run.run_group
            for u in r.run.config.update:
                put(run["config"], u)
        elif kind == "config":
            for u in r.config.update:
                put(run["config"], u)
        elif kind == "history":
            row: dict = {}
            for i in r.history.item:
                put(row, i)
            run["history"].append(row)
        elif kind == "summary":
            for u in r.summary.update:
                put(run["summary"], u)
            for u in r.summary.remove:
                remove(run["summary"], u)
    return run


def _wandb_log_records(data: bytes, path, pb) -> list:
    """The protobuf records of a W&B transaction log, up to its last complete one."""
    import struct

    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    block, pos, buf = 32768, 7, b""
    records = []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a chunk header is zero padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 or pos + 7 + length > len(data):  # zeros past the last record, or a torn one
            break
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            records.append(record)
    return records

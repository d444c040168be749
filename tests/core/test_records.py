"""The one append-only record log (deepwriter.core.records): torn tails, repeated ids, corrupt lines, and
exclusivity between real processes, down to two runs of the same stage through the CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from deepwriter.core.records import RecordLog, RecordLogBusy, RecordLogError, read_records
from deepwriter.testing.repo import REPO
from deepwriter.testing.synthesis import write_pairs


def test_torn_tail_is_cut_and_the_log_resumes_by_id(tmp_path):
    path = tmp_path / "log.jsonl"
    with RecordLog(path) as log:
        log.append({"id": "a", "v": 1})
        log.append([{"id": "b", "v": 2}, {"id": "c", "v": "ü"}])
    with open(path, "ab") as f:
        f.write(b'{"id": "d", "v": 4, "lo')  # a write cut by kill -9
    with RecordLog(path) as log:
        assert list(log.done) == ["a", "b", "c"] and log.truncated_bytes == len(b'{"id": "d", "v": 4, "lo')
        log.append({"id": "d", "v": 4})
        with pytest.raises(RecordLogError, match=r"log.jsonl: record: id 'a' is already written"):
            log.append({"id": "a", "v": 9})
    assert [r["id"] for r in read_records(path)] == ["a", "b", "c", "d"] and path.read_bytes().endswith(b"}\n")


def test_a_repeated_id_or_a_corrupt_middle_line_is_an_error_naming_the_file(tmp_path):
    twice = tmp_path / "twice.jsonl"
    twice.write_text('{"key": "k1"}\n{"key": "k1"}\n')
    with pytest.raises(RecordLogError, match=r"twice.jsonl: record: key 'k1' appears twice"):
        RecordLog(twice, key="key")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(RecordLogError, match=r"broken.jsonl:2: record: not valid JSON"):
        RecordLog(broken)
    RecordLog(twice.with_name("fresh.jsonl")).close()  # a failed open released its lock: reopen works
    with pytest.raises(RecordLogError):
        RecordLog(twice, key="key")


HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from deepwriter.core.records import RecordLog
log = RecordLog({path!r})
log.append({{"id": "from-holder"}})
print("open", flush=True)
time.sleep(120)
"""


def test_a_second_process_is_refused_at_once_naming_the_holder_until_it_dies(tmp_path):
    path = tmp_path / "shard.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(repo=str(REPO), path=str(path))], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        t0 = time.monotonic()
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
                f"from deepwriter.core.records import RecordLog\nRecordLog({str(path)!r})",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert probe.returncode != 0 and time.monotonic() - t0 < 30
        assert f"already being written by pid {holder.pid} on {socket.gethostname()}" in probe.stderr
        with pytest.raises(RecordLogBusy):  # and in this process too
            RecordLog(path)
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a dead holder's lock goes with it
        holder.wait()
    with RecordLog(path) as log:
        assert list(log.done) == ["from-holder"]


@pytest.mark.slow
def test_two_runs_of_the_same_synthesize_stage_the_second_is_refused(tmp_path, model_cache):
    """The failure a user met: a run that looked dead was started again and both appended to one shard."""
    pairs = write_pairs(tmp_path / "pairs.jsonl", 12, ids="p{i}")
    cmd = [
        sys.executable,
        "-m",
        "deepwriter.train",
        "+recipe=demo",
        "recipe.stages=[synthesize]",
        "model@models.generator=tiny-qwen3",
        "model@models.scorer=tiny-qwen3",
        f"paths.cache_dir={model_cache}",
        f"paths.runs_dir={tmp_path}/runs",
        f"data.pairs.path={pairs}",
        "synthesis.max_in_flight=1",
        "run_id=r",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    shards = tmp_path / "runs" / "_stages" / "synthesize"
    deadline = time.monotonic() + 180
    while not any(shards.glob("*/shards/*.jsonl.lock")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first.poll() is None, first.stderr.read()[-2000:]
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    still_running = first.poll() is None
    assert first.wait(timeout=600) == 0, first.stderr.read()[-2000:]
    assert second.returncode == 2 and still_running
    lines = [x for x in second.stderr.splitlines() if x.startswith("deepwriter:")]
    assert len(lines) == 1 and f"already being written by pid {first.pid} on" in lines[0]
    (shard,) = shards.glob("*/shards/*.jsonl")
    ids = [r["id"] for r in read_records(shard)]
    assert sorted(ids) == sorted(f"p{i}" for i in range(12))  # every pair once

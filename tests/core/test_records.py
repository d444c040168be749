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


# The first run, through the CLI's own main(), with the stall hook of the kill -9 test
# (test_synthesis_stage.RUNNER): once a pair is on disk, its next generation waits for the test's go,
# so the second run meets a first that holds the shard open however fast or slow this machine is.
FIRST_RUN = """
import sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from deepwriter.synthesis import stage
from deepwriter.train import main
runs, stalled, release = Path({runs!r}), Path({stalled!r}), Path({release!r})
real = stage.build_backends
def stalling(cfg):
    generator, scorer = real(cfg)
    generate = generator.generate
    def stall(*a, **k):
        if any(p.read_text().strip() for p in runs.glob("_stages/synthesize/*/shards/*.jsonl")):
            stalled.touch()
            while not release.exists():
                time.sleep(0.1)
        return generate(*a, **k)
    generator.generate = stall
    return generator, scorer
stage.build_backends = stalling
main(sys.argv[1:])
"""


@pytest.mark.slow
@pytest.mark.timeout(840)  # three bounded waits of 240 s: the first run's stall, the second run, the first's end
def test_two_runs_of_the_same_synthesize_stage_the_second_is_refused(tmp_path, model_cache):
    """The failure a user met: a run that looked dead was started again and both appended to one shard."""
    n = 4
    pairs = write_pairs(tmp_path / "pairs.jsonl", n, ids="p{i}")
    runs, stalled, release = tmp_path / "runs", tmp_path / "stalled", tmp_path / "release"
    args = [
        "+recipe=demo",
        "recipe.stages=[synthesize]",
        "model@models.generator=tiny-qwen3",
        "model@models.scorer=tiny-qwen3",
        f"paths.cache_dir={model_cache}",
        f"paths.runs_dir={runs}",
        f"data.pairs.path={pairs}",
        "synthesis.max_in_flight=1",
        "run_id=r",
    ]
    runner = tmp_path / "first.py"
    runner.write_text(FIRST_RUN.format(repo=str(REPO), runs=str(runs), stalled=str(stalled), release=str(release)))
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [sys.executable, str(runner), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not stalled.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stalled.exists(), "the first run never reached its stall: " + (
            first.stderr.read()[-2000:] if first.poll() is not None else "still running after 240 s"
        )
        second = subprocess.run(
            [sys.executable, "-m", "deepwriter.train", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        still_running = first.poll() is None
    finally:
        release.touch()
    assert first.wait(timeout=240) == 0, first.stderr.read()[-2000:]
    assert second.returncode == 2 and still_running, second.stderr[-2000:]
    lines = [x for x in second.stderr.splitlines() if x.startswith("deepwriter:")]
    assert len(lines) == 1 and f"already being written by pid {first.pid} on" in lines[0]
    shards = runs / "_stages" / "synthesize"
    (shard,) = shards.glob("*/shards/*.jsonl")
    ids = [r["id"] for r in read_records(shard)]
    assert sorted(ids) == sorted(f"p{i}" for i in range(n))  # every pair once

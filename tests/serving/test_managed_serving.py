"""The run starts, heals and stops its own servers: `python -m deepwriter.train` with the generator and
scorer served by a managed replica. The server is the fault-free loopback over the tiny model, started
through the preset's `serving.command` (the same fleet code starts vLLM: see
tests/pipeline/test_served_demo_vllm.py; vLLM's launch branch with a stand-in Python is in
tests/serving/test_fleet.py). A kill -9 of the server mid-synthesis is healed in the same run; SIGTERM
to the run leaves no server process and no bound port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deepwriter.core.records import read_records
from deepwriter.serving.fleet import port_free
from deepwriter.testing.repo import REPO, alive, fleet_state, gone, replica_now, wait_for
from deepwriter.testing.synthesis import served_synthesis_overrides, write_pairs
from deepwriter.testing.vllm_server import free_port


def served_overrides(tmp_path: Path, cache: Path, pairs: Path, n: int, port: int, run_id: str) -> list:
    # one retry, quickly: a dead server's calls fail within seconds and the fleet's healing is what is seen
    return served_synthesis_overrides(
        tmp_path / "runs", cache, pairs, n, port, run_id, max_retries=1, backoff_s=0.1, timeout_s=30
    )


def start(tmp_path: Path, overrides: list) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "deepwriter.train", *overrides],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def shard_lines(tmp_path: Path) -> int:
    shards = list((tmp_path / "runs" / "_stages" / "synthesize").glob("*/shards/*.jsonl"))
    return sum(p.read_bytes().count(b"\n") for p in shards)


@pytest.mark.slow  # a run, a server and its restart, each a fresh interpreter: ~60-120 s on 2 busy cores
@pytest.mark.timeout(1560)  # bounded inside: 600 s to two pairs, 900 s for the healed run to end
def test_kill_9_of_the_server_mid_synthesis_is_healed_in_the_same_run(tmp_path, model_cache):
    """Another program already listens on the replica's base port and answers /v1/models as the run's
    server would (the same model name, any key): the replica takes a port the OS gives, before and after
    its restart, and the stranger gets not one request."""
    from deepwriter.testing.stranger import Stranger

    n = 12
    pairs = write_pairs(tmp_path / "pairs.jsonl", n)
    port = free_port()
    run_dir = tmp_path / "runs" / "demo" / "heal"
    stranger = Stranger(port, host="127.0.0.1", model="tiny-qwen3").__enter__()
    proc = start(tmp_path, served_overrides(tmp_path, model_cache, pairs, n, port, "heal"))
    try:
        wait_for(lambda: shard_lines(tmp_path) >= 2, proc, 600, "two pairs written")
        before = shard_lines(tmp_path)
        replica, first = wait_for(lambda: replica_now(run_dir, "tiny-qwen3"), proc, 60, "the server listening")
        os.killpg(replica["pid"], signal.SIGKILL)  # the server dies mid-stage
        killed_at = time.time()
        # the restarted server, from the OS's side (its group holds the port) while the run uses it
        restarted, second = wait_for(
            lambda: replica_now(run_dir, "tiny-qwen3", not_pid=replica["pid"]), proc, 600, "the restarted server"
        )
        assert port not in (replica["port"], restarted["port"]) and not set(first) & set(second)
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
        stranger.__exit__()
    assert stranger.lookups == [] and stranger.requests == []  # the run never talked to it
    assert proc.returncode == 0, err[-3000:]
    # hundreds of requests, none of them a log line of its own (httpx's INFO per request is quieted)
    assert "HTTP Request:" not in out + err and "fleet: " in out + err
    assert before < n, "the kill landed after the stage's work"
    (shard,) = (tmp_path / "runs" / "_stages" / "synthesize").glob("*/shards/*.jsonl")
    ids = [r["id"] for r in read_records(shard)]
    assert sorted(ids) == [f"p{i:03d}" for i in range(n)]  # every pair once: none lost, none twice
    manifest = json.loads((run_dir / "manifest.json").read_text())
    st = manifest["stages"]["synthesize"]
    assert st["status"] == "ran" and st["serving"]["restarts"] == 1 and st["serving"]["deaths"] == 1
    assert 0 < st["serving"]["down_s"] < time.time() - killed_at
    assert manifest["serving"]["groups"]["tiny-qwen3"]["restarts"] == 1
    stage_manifest = json.loads((run_dir / "synthesize" / "manifest.json").read_text())
    assert stage_manifest["metrics"]["fleet_restarts"] == 1 and stage_manifest["counts"]["pairs"] == n
    # the server was stopped at the end of its last stage: nothing left
    assert fleet_state(run_dir)["running"] == {} and port_free("127.0.0.1", restarted["port"])
    gone(first + second, restarted["port"])  # the killed server's processes and the restarted one's
    print(f"self-heal: {before} of {n} pairs before the kill; down {st['serving']['down_s']} s; {n} after")


@pytest.mark.slow
@pytest.mark.timeout(1380)  # bounded inside: 600 s to the server, 600 s to a pair, 120 s to stop
def test_sigterm_to_a_run_leaves_no_server_and_the_port_free(tmp_path, model_cache):
    n = 40
    pairs = write_pairs(tmp_path / "pairs.jsonl", n)
    port = free_port()
    run_dir = tmp_path / "runs" / "demo" / "term"
    proc = start(tmp_path, served_overrides(tmp_path, model_cache, pairs, n, port, "term"))
    try:
        replica, group = wait_for(lambda: replica_now(run_dir, "tiny-qwen3"), proc, 600, "the server up")
        wait_for(lambda: shard_lines(tmp_path) >= 1, proc, 600, "a pair written")
        assert alive(replica["pid"]) and not port_free("127.0.0.1", port)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    gone(group, port)
    assert port_free("127.0.0.1", port)
    assert fleet_state(run_dir)["running"] == {}
    assert shard_lines(tmp_path) < n  # it was stopped mid-stage, and what it wrote is kept

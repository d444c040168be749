"""The fleet manager against real server processes: the fault-injecting loopback server over the tiny
model, started as `python -m deepwriter.testing.loopback` (each a process group of its own, like vLLM).
A kill -9 of a replica is healed within the budget; past it the fleet says so; close() leaves no
process and no bound port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import httpx

from deepwriter.config.llm import ServingConfig
from deepwriter.llm.fleet import Fleet, port_free
from deepwriter.llm.placement import Group, place
from deepwriter.testing.repo import REPO, alive
from deepwriter.testing.vllm_server import free_port


def loopback_command(rep):
    argv = [sys.executable, "-m", "deepwriter.testing.loopback", "--model", "tiny-qwen3", "--port", str(rep.port)]
    return argv, {"PYTHONPATH": str(REPO)}


def layout(replicas: int, max_restarts: int):
    base = free_port()
    while not all(port_free("127.0.0.1", base + i) for i in range(replicas)):
        base = free_port()
    s = ServingConfig(managed=True, replicas=replicas, base_port=base, max_restarts=max_restarts, startup_timeout_s=120)
    return place(["synthesize"], [Group("tiny", ("generator", "scorer"), s, 0, 0)], {}, [])


def test_kill_9_is_healed_within_the_budget_and_close_leaves_nothing(tmp_path):
    fleet = Fleet(layout(2, max_restarts=1), loopback_command, tmp_path / "servers", poll_s=0.5)
    try:
        urls = fleet.up("tiny")
        assert len(urls) == 2 and all(httpx.get(f"{u}/models").status_code == 200 for u in urls)
        assert sorted(p.name for p in (tmp_path / "servers").iterdir()) == ["fleet.json", "tiny-0.log", "tiny-1.log"]
        state = json.loads((tmp_path / "servers" / "fleet.json").read_text())
        assert [r["url"] for r in state["running"]["tiny"]] == urls
        assert [r["pid"] for r in state["running"]["tiny"]] == [r.proc.pid for r in fleet.running["tiny"]]
        victim = fleet.running["tiny"][0].proc.pid
        os.killpg(victim, signal.SIGKILL)
        time.sleep(1.5)  # the watcher sees it within poll_s and restarts it
        assert fleet.heal(wait_s=120)
        assert fleet.running["tiny"][0].proc.pid != victim
        assert httpx.get(f"{urls[0]}/models").status_code == 200
        st = fleet.summary()["tiny"]
        assert st["restarts"] == 1 and st["deaths"] == 1 and st["down_s"] > 0
        assert len(st["startup_s"]) == 3  # two starts and one restart

        pids = [r.proc.pid for r in fleet.running["tiny"]]
        os.killpg(pids[1], signal.SIGKILL)  # past the budget: the fleet says so, and stays down
        time.sleep(1.5)
        assert fleet.heal(wait_s=30) is False
        assert fleet.summary()["tiny"]["restarts"] == 1 and fleet.summary()["tiny"]["deaths"] == 2
    finally:
        ports = [r.port for r in fleet.layout.replicas["tiny"]]
        pids = [r.proc.pid for r in fleet.running.get("tiny", []) if r.proc]
        fleet.close()
    assert pids and not any(alive(p) for p in pids)
    assert all(port_free("127.0.0.1", p) for p in ports)
    assert fleet.running == {}


SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from deepwriter.llm.fleet import Fleet, stop_on_signals
    sys.path.insert(0, {tests!r})
    from test_fleet import layout, loopback_command
    fleet = Fleet(layout(1, 0), loopback_command, Path({logs!r}))
    with stop_on_signals(), fleet:
        fleet.up("tiny")
        r = fleet.running["tiny"][0]
        print(json.dumps({{"pid": r.proc.pid, "port": r.replica.port}}), flush=True)
        time.sleep(600)
    """
)


def test_sigterm_stops_every_server_and_frees_the_port(tmp_path):
    code = SCRIPT.format(tests=str(REPO / "tests" / "llm"), logs=str(tmp_path / "servers"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        info = json.loads(proc.stdout.readline())
        assert alive(info["pid"]) and not port_free("127.0.0.1", info["port"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not alive(info["pid"])
    assert port_free("127.0.0.1", info["port"])


def test_ctrl_c_stops_them_too(tmp_path):
    code = SCRIPT.format(tests=str(REPO / "tests" / "llm"), logs=str(tmp_path / "servers"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    info = json.loads(proc.stdout.readline())
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert not alive(info["pid"]) and port_free("127.0.0.1", info["port"])

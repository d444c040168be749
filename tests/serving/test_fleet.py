"""The fleet manager against real server processes: the fault-injecting loopback server over the tiny
model, started as `python -m deepwriter.testing.loopback` (each a process group of its own, like vLLM).
A kill -9 of a replica is healed within the budget; past it the fleet says so; a replica that runs but
no longer answers (SIGSTOP) is killed and replaced on its port; close() leaves no process and no bound
port. The hung-replica test starts its server through the fleet's vLLM command (server_command_for
without a `serving.command`), with a stand-in for vLLM's Python that runs the loopback instead."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from deepwriter.config.llm import ServingConfig
from deepwriter.serving.fleet import Fleet, new_key, port_free, server_command_for
from deepwriter.serving.placement import Group, place
from deepwriter.testing.repo import REPO, alive, compose_typed, port_holders, process_group
from deepwriter.testing.vllm_server import free_port


def loopback_command(rep):
    argv = [sys.executable, "-m", "deepwriter.testing.loopback", "--model", "tiny-qwen3", "--port", str(rep.port)]
    return argv, {"PYTHONPATH": str(REPO)}


def two_ports() -> tuple:
    """Two free ports, never the same one (the OS may hand a closed probe's port out again)."""
    a, b = free_port(), free_port()
    while b == a:
        b = free_port()
    return a, b


class LookCountingFleet(Fleet):
    """A fleet that counts its looks at the replicas, so a test can wait for the watcher's next ones
    instead of sleeping and hoping it looked."""

    looks = 0

    def check(self) -> None:
        super().check()
        self.looks += 1

    def wait_looks(self, n: int, timeout: float = 30.0) -> None:
        target, deadline = self.looks + n, time.monotonic() + timeout
        while self.looks < target:
            assert time.monotonic() < deadline, f"the watcher looked {self.looks} times, not {target}"
            time.sleep(0.05)


def layout(replicas: int, max_restarts: int):
    base = free_port()
    while not all(port_free("127.0.0.1", base + i) for i in range(replicas)):
        base = free_port()
    s = ServingConfig(managed=True, replicas=replicas, base_port=base, max_restarts=max_restarts, startup_timeout_s=120)
    return place(["synthesize"], [Group("tiny", ("generator", "scorer"), s, 0, 0)], {}, [])


@pytest.mark.slow  # starts a run or a server: `make test` only, not test-fast
def test_a_group_that_starts_while_the_watcher_runs_is_not_taken_for_dead(tmp_path):
    """The demo-served run's eval: the generator's group had started the watcher, then the student's
    replica (slower to answer than poll_s x unhealthy_after) was killed as unanswering while it started."""
    a, b = two_ports()
    groups = [
        Group("first", ("generator",), ServingConfig(managed=True, base_port=a, startup_timeout_s=120), 0, 1),
        Group("slow", ("judge",), ServingConfig(managed=True, base_port=b, startup_timeout_s=120), 1, 1),
    ]

    def command(rep):
        argv, env = loopback_command(rep)
        if rep.group == "slow":  # 3 s before it listens: 15 polls of the watcher
            argv = ["sh", "-c", 'sleep 3; exec "$@"', "sh", *argv]
        return argv, env

    fleet = LookCountingFleet(place(["synthesize", "eval"], groups, {}, []), command, tmp_path / "servers", poll_s=0.2)
    try:
        fleet.up("first")
        assert fleet._watcher is not None and fleet._watcher.is_alive()
        (url,) = fleet.up("slow")
        assert httpx.get(f"{url}/models").status_code == 200
        fleet.wait_looks(3)  # the watcher's next looks, each over both groups, find it healthy
        assert fleet.summary()["slow"]["deaths"] == 0 and fleet.summary()["slow"]["restarts"] == 0
        assert len(fleet.summary()["slow"]["startup_s"]) == 1 and fleet.summary()["slow"]["startup_s"][0] >= 3
    finally:
        fleet.close()


def wait_deaths(fleet: Fleet, n: int, timeout: float = 30.0) -> None:
    """Until the fleet has counted `n` deaths (its watcher's doing when nobody else looks)."""
    deadline = time.monotonic() + timeout
    while fleet.deaths() < n:
        assert time.monotonic() < deadline, f"the watcher saw {fleet.deaths()} deaths, not {n}"
        time.sleep(0.05)


@pytest.mark.slow  # starts a run or a server: `make test` only, not test-fast
def test_kill_9_is_healed_within_the_budget_and_close_leaves_nothing(tmp_path):
    """Another program already answers on replica 0's port, as the run's own server would (the same model
    name, any key): the replica listens on a port the OS gives instead, and the stranger is never asked."""
    from deepwriter.testing.stranger import Stranger

    key = new_key()
    fleet = Fleet(layout(2, max_restarts=1), loopback_command, tmp_path / "servers", poll_s=0.5, key=key)
    taken = fleet.layout.replicas["tiny"][0].port
    stranger = Stranger(taken, host="127.0.0.1", model="tiny-qwen3").__enter__()
    auth = {"Authorization": f"Bearer {key}"}
    try:
        urls = fleet.up("tiny")
        assert len(urls) == 2 and all(httpx.get(f"{u}/models", headers=auth).status_code == 200 for u in urls)
        assert urls[0] != stranger.url and urls[1] == f"http://127.0.0.1:{taken + 1}/v1"
        assert stranger.lookups == [] and stranger.requests == []  # never even asked who it is
        assert f"port {taken} is taken: this replica listens on" in (tmp_path / "servers" / "tiny-0.log").read_text()
        assert sorted(p.name for p in (tmp_path / "servers").iterdir()) == ["fleet.json", "tiny-0.log", "tiny-1.log"]
        state = json.loads((tmp_path / "servers" / "fleet.json").read_text())
        assert [r["url"] for r in state["running"]["tiny"]] == urls
        assert [r["pid"] for r in state["running"]["tiny"]] == [r.proc.pid for r in fleet.running["tiny"]]
        victim = fleet.running["tiny"][0].proc.pid
        os.killpg(victim, signal.SIGKILL)
        wait_deaths(fleet, 1)  # the watcher sees it by itself (heal() below would look too) and restarts it
        assert fleet.heal(wait_s=120)
        assert fleet.running["tiny"][0].proc.pid != victim
        assert httpx.get(f"{fleet.urls('tiny')[0]}/models", headers=auth).status_code == 200
        st = fleet.summary()["tiny"]
        assert st["restarts"] == 1 and st["deaths"] == 1 and st["down_s"] > 0
        assert len(st["startup_s"]) == 3  # two starts and one restart

        pids = [r.proc.pid for r in fleet.running["tiny"]]
        os.killpg(pids[1], signal.SIGKILL)  # past the budget: the fleet says so, and stays down
        wait_deaths(fleet, 2)
        assert fleet.heal(wait_s=30) is False
        assert fleet.summary()["tiny"]["restarts"] == 1 and fleet.summary()["tiny"]["deaths"] == 2
    finally:
        ports = [r.proc.port for r in fleet.running.get("tiny", []) if r.proc]
        pids = [r.proc.pid for r in fleet.running.get("tiny", []) if r.proc]
        fleet.close()
        stranger.__exit__()
    assert pids and not any(alive(p) for p in pids)
    assert ports and all(port_free("127.0.0.1", p) for p in ports)
    assert stranger.lookups == [] and stranger.requests == []
    assert fleet.running == {}


SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from deepwriter.serving.fleet import Fleet, stop_on_signals
    sys.path.insert(0, {tests!r})
    from test_fleet import layout, loopback_command
    fleet = Fleet(layout(1, 0), loopback_command, Path({logs!r}))
    with stop_on_signals(), fleet:
        fleet.up("tiny")
        r = fleet.running["tiny"][0]
        print(json.dumps({{"pid": r.proc.pid, "port": r.proc.port}}), flush=True)
        time.sleep(600)
    """
)


@pytest.mark.slow  # starts a run or a server: `make test` only, not test-fast
def test_sigterm_stops_every_server_and_frees_the_port(tmp_path):
    code = SCRIPT.format(tests=str(REPO / "tests" / "serving"), logs=str(tmp_path / "servers"))
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


@pytest.mark.slow  # starts a run or a server: `make test` only, not test-fast
def test_ctrl_c_stops_them_too(tmp_path):
    code = SCRIPT.format(tests=str(REPO / "tests" / "serving"), logs=str(tmp_path / "servers"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # Ctrl-C at a terminal: SIGINT at its default. A suite started in the background by a shell without job
    # control (`make test &`, nohup) ignores SIGINT, every child inherits that and Python then never raises
    # KeyboardInterrupt: the child would sleep on and the test would measure the shell, not the fleet.
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    info = None
    try:
        info = json.loads(proc.stdout.readline())
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:  # whatever failed above, neither the script nor its server outlives the test
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if info is not None and process_group(info["pid"]):
            os.killpg(info["pid"], signal.SIGKILL)
    assert not alive(info["pid"]) and port_free("127.0.0.1", info["port"])


def stand_in_for_vllms_python(tmp_path):
    """An executable that takes vLLM's command line (`PY -m vllm.entrypoints.openai.api_server ...
    --port P ...`), writes it and the VLLM_* environment down, starts a child that stands for vLLM's
    engine process, and runs the loopback on that port: the fleet's vLLM launch path, without a vLLM
    start-up."""
    seen = tmp_path / "argv.jsonl"
    script = tmp_path / "python"
    script.write_text(
        textwrap.dedent(
            f"""\
            #!{sys.executable}
            import json, os, sys
            argv = sys.argv[1:]
            env = {{k: v for k, v in os.environ.items() if k.startswith("VLLM_")}}
            with open({str(seen)!r}, "a") as f:
                f.write(json.dumps({{"argv": argv, "env": env}}) + "\\n")
            port = argv[argv.index("--port") + 1]
            import subprocess
            subprocess.Popen(["sleep", "600"])  # vLLM's engine process: a child in the server's group
            loopback = [{sys.executable!r}, "-m", "deepwriter.testing.loopback", "--model", "tiny-qwen3"]
            loopback += ["--port", port]
            os.execv(loopback[0], loopback)
            """
        )
    )
    script.chmod(0o755)
    return script, seen


@pytest.mark.slow  # a server start, two health checks that time out (5 s each), a restart: ~20 s
@pytest.mark.timeout(240)
def test_a_replica_that_runs_but_no_longer_answers_is_killed_and_replaced_on_its_port(tmp_path, caplog):
    cfg = compose_typed("model@models.generator=qwen3-8b-base").models.generator  # a hub id: nothing converted
    cfg = dataclasses.replace(cfg, serving=dataclasses.replace(cfg.serving, engine_args=["--max-num-seqs", "4"]))
    assert not cfg.serving.command  # vLLM's branch of the launcher, not a preset's own command
    python, seen = stand_in_for_vllms_python(tmp_path)
    command = server_command_for({"tiny": cfg}, str(python), "127.0.0.1", str(tmp_path / "cache"))
    key = new_key()
    fleet = Fleet(layout(1, max_restarts=1), command, tmp_path / "servers", poll_s=0.2, unhealthy_after=2, key=key)
    first, second = [], []
    try:
        (url,) = fleet.up("tiny")
        port = fleet.running["tiny"][0].replica.port
        (launched,) = [json.loads(x) for x in seen.read_text().splitlines()]
        argv = launched["argv"]
        assert argv[:2] == ["-m", "vllm.entrypoints.openai.api_server"] and argv[-2:] == ["--max-num-seqs", "4"]
        opts = dict(zip(argv[2::2], argv[3::2]))
        assert opts["--model"] == "Qwen/Qwen3-8B-Base" and opts["--port"] == str(port)
        assert launched["env"]["VLLM_CPU_KVCACHE_SPACE"] == os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")
        # the run's key reaches vLLM through its environment, never its command line (ps, the replica's log)
        assert launched["env"]["VLLM_API_KEY"] == key and key not in json.dumps(argv)
        assert httpx.get(f"{url}/models", timeout=10).status_code == 401  # the server wants the key

        hung = fleet.running["tiny"][0].proc.pid
        first = process_group(hung)
        assert hung in first and port_holders(port) & set(first)  # the kernel says it is the one listening
        assert len(first) == 2  # the server and its engine stand-in
        os.killpg(hung, signal.SIGSTOP)  # alive, holding its port, answering nothing
        deadline = time.monotonic() + 120
        while not (fleet.summary()["tiny"]["restarts"] == 1 and fleet.healthy()):
            assert time.monotonic() < deadline, f"the hung replica was not replaced: {fleet.summary()}"
            time.sleep(0.2)
        assert "no answer 2 times" in caplog.text  # taken for dead by its silence, not by an exit
        assert not [p for p in first if alive(p)], "the hung server's processes still run"
        new = fleet.running["tiny"][0].proc.pid
        second = process_group(new)
        assert new != hung and new in second
        assert port_holders(port) and port_holders(port) <= set(second)  # the new server holds the port alone
        auth = {"Authorization": f"Bearer {key}"}
        assert fleet.urls("tiny") == [url] and httpx.get(f"{url}/models", headers=auth, timeout=10).status_code == 200
        assert len(seen.read_text().splitlines()) == 2  # started again the same way, on the same port
        st = fleet.summary()["tiny"]
        assert st["deaths"] == 1 and st["restarts"] == 1 and st["down_s"] > 0
        assert key not in (tmp_path / "servers" / "tiny-0.log").read_text()
    finally:
        for pid in first:  # a stopped process left behind would hold its port for good
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        fleet.close()
    assert not [p for p in first + second if alive(p)]
    assert port_free("127.0.0.1", port)


def loopback_anywhere(rep):
    """The loopback as a replica's job runs it: listening on every interface of whatever node it gets."""
    argv, env = loopback_command(rep)
    return argv + ["--host", "0.0.0.0"], env


def answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/models", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def squeued(*job_ids: str) -> str:
    """What the scheduler still queues or runs of these jobs (empty: none)."""
    out = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T"], capture_output=True, text=True)
    return out.stdout.strip()


@pytest.mark.slow  # two SLURM jobs, each a loopback server: ~30 s on 2 busy cores
@pytest.mark.timeout(300)  # bounded inside: 120 s to each start, 120 s to the scancel's heal
def test_a_replica_as_a_slurm_job_is_found_healed_after_scancel_and_cancelled_by_close(tmp_path, slurm_cluster):
    from deepwriter.cluster.jobs import TERMINAL, SlurmSpawner
    from deepwriter.testing.slurm import job, wait_until

    logs = tmp_path / "servers"
    spawner = SlurmSpawner(lambda rep: {"job_name": "deepwriter-test-serve", "time": 10}, logs)
    key = new_key()  # to the job through sbatch's environment
    auth = {"Authorization": f"Bearer {key}"}
    fleet = Fleet(layout(1, max_restarts=1), loopback_anywhere, logs, poll_s=0.5, spawner=spawner, key=key)
    ids = []
    try:
        (url,) = fleet.up("tiny")
        r = fleet.running["tiny"][0]
        first = r.proc.job_id
        ids.append(first)
        got = job(first)  # the scheduler's own record
        assert got["JobState"] == "RUNNING" and got["JobName"] == "deepwriter-test-serve", got
        node = got["NodeList"]
        # its address, written by the job into the run folder, is the URL the fleet hands out
        assert (logs / "tiny-0.addr").read_text().split() == [f"{node}:{r.replica.port}", first]
        assert url == f"http://{node}:{r.replica.port}/v1"
        assert httpx.get(f"{url}/models", headers=auth, timeout=10).status_code == 200
        assert httpx.get(f"{url}/models", timeout=10).status_code == 401  # the job's server took the run's key
        assert key not in (logs / "tiny-0.sbatch").read_text() + (logs / "tiny-0.log").read_text()
        state = json.loads((logs / "fleet.json").read_text())
        assert [(x["job_id"], x["url"]) for x in state["running"]["tiny"]] == [(first, url)]
        assert f"job {first} on {node}" in (logs / "tiny-0.log").read_text()
        assert (logs / "submitit" / f"{first}_submitted.pkl").is_file()  # submitted through submitit

        subprocess.run(["scancel", first], check=True)  # the scheduler ends the replica: self-healing
        wait_until(lambda: fleet.summary()["tiny"]["deaths"] == 1, 60, "the fleet to see the cancelled job")
        assert fleet.heal(wait_s=120)
        second = fleet.running["tiny"][0].proc.job_id
        ids.append(second)
        assert second != first
        assert job(first)["JobState"] == "CANCELLED" and job(second)["JobState"] == "RUNNING"
        # on its node's port, or on another one while the cancelled server still holds that (the job's choice)
        where, job_id = (logs / "tiny-0.addr").read_text().split()
        assert job_id == second and where.startswith(f"{node}:") and fleet.urls("tiny") == [f"http://{where}/v1"]
        assert httpx.get(f"{fleet.urls('tiny')[0]}/models", headers=auth, timeout=10).status_code == 200
        st = fleet.summary()["tiny"]
        assert st["restarts"] == 1 and st["deaths"] == 1 and st["down_s"] > 0
    finally:
        ids += [x.proc.job_id for x in fleet.running.get("tiny", []) if x.proc is not None and x.proc.job_id not in ids]
        fleet.close()
    # close() waits until the scheduler has ended every job the fleet submitted
    assert len(ids) == 2 and squeued(*ids) == ""
    assert all(job(i)["JobState"] in TERMINAL for i in ids)
    assert port_free("127.0.0.1", fleet.layout.replicas["tiny"][0].port)
    assert fleet.running == {}


@pytest.mark.slow  # a stand-in stage job and one server job: ~15 s
@pytest.mark.timeout(240)  # bounded inside: 60 s to the stage job, 120 s to the server, 60 s to its end
def test_a_replica_job_stops_its_server_once_the_stage_job_that_started_it_no_longer_runs(
    tmp_path, slurm_cluster, monkeypatch
):
    """The stage job is killed past its fleet's close() (SIGKILL, a node failure): the replica's job sees
    its stage job end and stops its server, so no orphan holds the port and GPUs."""
    from deepwriter.cluster.jobs import TERMINAL, SlurmSpawner
    from deepwriter.testing.slurm import job, wait_until

    stage = subprocess.run(
        ["sbatch", "--parsable", "--job-name=deepwriter-test-stage", "--time=10", f"--output={tmp_path}/stage.out"]
        + ["--wrap", "sleep 300"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    server = None
    try:
        wait_until(lambda: job(stage)["JobState"] == "RUNNING", 60, "the stand-in stage job running")
        monkeypatch.setenv("SLURM_JOB_ID", stage)  # the fleet runs inside that job
        logs = tmp_path / "servers"
        logs.mkdir()
        spawner = SlurmSpawner(lambda rep: {"job_name": "deepwriter-test-serve", "time": 10}, logs, watch_s=1)
        rep = layout(1, 0).replicas["tiny"][0]
        argv, env = loopback_anywhere(rep)
        server = spawner.start(rep, argv, env, logs / "tiny-0.log")
        where = wait_until(lambda: spawner.address(rep, server), 120, "the server job's address")
        wait_until(lambda: answers(f"http://{where}/v1"), 120, "the server's first answer")
        subprocess.run(["scancel", "--signal=KILL", "--full", stage], check=True)  # no close() runs in there
        wait_until(lambda: job(server.job_id)["JobState"] in TERMINAL, 60, "the server job to end by itself")
        assert spawner.ended(server) is not None and squeued(server.job_id) == ""
        assert f"stage job {stage}, which started this server, no longer runs" in (logs / "tiny-0.log").read_text()
        assert port_free("127.0.0.1", rep.port)
    finally:
        subprocess.run(["scancel", stage] + ([server.job_id] if server else []), capture_output=True)


def test_a_server_that_answers_with_another_model_is_not_taken_for_ours():
    """identify(): a 200 from /v1/models is ours only when it lists the group's served name."""
    from deepwriter.serving.fleet import identify
    from deepwriter.testing.stranger import Stranger
    from deepwriter.testing.vllm_server import free_port

    with Stranger(free_port(), host="127.0.0.1") as stranger:
        ours, why = identify(stranger.url, "tiny-qwen3")
        assert not ours and why == (
            f"the server at {stranger.url} answers but serves ['someone-elses-model'], not 'tiny-qwen3': not ours"
        )
        assert identify(stranger.url, "someone-elses-model") == (True, None)
        assert identify(stranger.url, None) == (True, None)  # no name to check: any answer
    assert identify(stranger.url, "tiny-qwen3") == (False, None)  # nothing answers: not a stranger, not up


def test_with_the_runs_key_only_a_server_that_takes_it_and_refuses_others_is_ours():
    """identify() with the run's key: a stranger that answers /v1/models 200 with the right model name
    but takes any key, or one that wants a key of its own, is not ours; the loopback started with the
    key (as the fleet starts it, vLLM's --api-key behaviour) is."""
    from deepwriter.serving.fleet import identify
    from deepwriter.testing.loopback import start_server
    from deepwriter.testing.stranger import Stranger

    key = new_key()
    assert len(key) >= 40 and key != new_key()
    with Stranger(free_port(), host="127.0.0.1", model="tiny-qwen3") as any_key:
        assert identify(any_key.url, "tiny-qwen3", key=key) == (
            False,
            f"the server at {any_key.url} answers a key that is not the run's (HTTP 200): not ours",
        )
        assert identify(any_key.url, "tiny-qwen3") == (True, None)  # without the key it would pass for ours
    with Stranger(free_port(), host="127.0.0.1", model="tiny-qwen3", key=new_key()) as own_key:
        assert identify(own_key.url, "tiny-qwen3", key=key) == (
            False,
            f"the server at {own_key.url} refuses the run's API key: not ours",
        )
    with start_server(None, model_id="tiny-qwen3", api_key=key) as ours:
        assert identify(ours.url, "tiny-qwen3", key=key) == (True, None)
        assert identify(ours.url, "tiny-qwen3", key=new_key())[0] is False
        assert httpx.get(f"{ours.url}/models", timeout=5).status_code == 401  # nothing without the key
        sent = [a for a in ours.stats.authorization if a]
        assert f"Bearer {key}" in sent and len(set(sent)) == 3  # the run's key, and two wrong ones


@pytest.mark.slow  # one server job of ~5 s
@pytest.mark.timeout(180)  # bounded inside: 60 s to the job's start, 60 s to its end
def test_a_replica_job_whose_own_server_never_answers_with_the_key_publishes_no_address(tmp_path, slurm_cluster):
    """The job's server answers /v1/models with 200 and the right model name, but takes any key (as a
    stranger on that port would), then ends: the job never writes its address into the run folder, so
    the fleet is never handed it, and its log says why."""
    from deepwriter.cluster.jobs import TERMINAL, SlurmSpawner
    from deepwriter.serving.fleet import KEY_ENV
    from deepwriter.testing.slurm import job, wait_until

    logs = tmp_path / "servers"
    logs.mkdir()
    spawner = SlurmSpawner(lambda rep: {"job_name": "deepwriter-test-serve", "time": 5}, logs)
    rep = layout(1, 0).replicas["tiny"][0]
    keyless = "import sys,time; from deepwriter.testing.stranger import Stranger as S; "
    keyless += "S(int(sys.argv[1]), model='tiny-qwen3').__enter__(); time.sleep(5)"
    key = new_key()
    server = spawner.start(
        rep,
        [sys.executable, "-c", keyless, str(rep.port)],
        {"PYTHONPATH": str(REPO), KEY_ENV: key},
        logs / "tiny-0.log",
    )
    try:
        wait_until(lambda: job(server.job_id)["JobState"] in TERMINAL, 120, "the server job to end")
        log_text = (logs / "tiny-0.log").read_text()
        assert "the server ended before it answered on port" in log_text and "no address published" in log_text
        assert not (logs / "tiny-0.addr").exists() and spawner.address(rep, server) is None
        assert key not in log_text + (logs / "tiny-0.sbatch").read_text()
    finally:
        subprocess.run(["scancel", server.job_id], capture_output=True)

"""A served synthesis under launcher=slurm on a local cluster that behaves like a shared one, with
accounting and without (`make slurm-local`; `.ci/slurm-local --accounting`: slurmdbd on MariaDB): the node
busy with other users' jobs, another user's server on the replica's port, the controller silent for 30 s
mid-stage, then forgetting the run's jobs (MinJobAge). One scenario stages every failure in one run, once
per mode; the cluster is switched to accounting once for this module (about 10 s each way), for that leg
and the two tests after it of how a job's end is read once the controller has forgotten it or does not
answer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from deepwriter.cluster.jobs import submitted_jobs
from deepwriter.cluster.launcher import read_jobs
from deepwriter.core.records import read_records
from deepwriter.serving.fleet import port_free
from deepwriter.testing.repo import REPO
from deepwriter.testing.slurm import (
    accounting_on,
    busy_cluster,
    controller_stopped,
    forgetful_controller,
    forgotten,
    job,
    queued_reason,
    wait_until,
)
from deepwriter.testing.stranger import Stranger
from deepwriter.testing.synthesis import LOOPBACK_COMMAND, served_synthesis_overrides, write_pairs
from deepwriter.testing.vllm_server import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def accounting(slurm_cluster):
    """The local cluster with accounting for this module; without it again after."""
    script = str(REPO / ".ci" / "slurm-local")
    on = subprocess.run([script, "--accounting"], capture_output=True, text=True, timeout=600)
    assert on.returncode == 0, on.stderr[-2000:]
    assert accounting_on()
    try:
        yield
    finally:
        off = subprocess.run([script], capture_output=True, text=True, timeout=600)
        assert off.returncode == 0, off.stderr[-2000:]


def _shard_ids(runs) -> list:
    return [r["id"] for p in (runs / "_stages" / "synthesize").glob("*/shards/*.jsonl") for r in read_records(p)]


def _jobs(run_dir) -> list:
    """The run's stage jobs as the launcher recorded them, [] until it has (or while it writes)."""
    return (read_jobs(run_dir) or {}).get("jobs", [])


@pytest.mark.timeout(600)  # 100-120 s a mode on 2 shared cores: 32 s queued past start-up, 30 s without a controller
@pytest.mark.parametrize("mode", ["plain", "accounting"])
def test_a_served_synthesis_outlasts_the_queue_a_strangers_server_a_silent_controller_and_a_forgetful_one(
    mode, request, tmp_path, model_cache, slurm_cluster
):
    """One run through every way a shared cluster differs from an idle one. The node's every slot held
    by blocker jobs: the stage job waits in the queue, then its replica's job waits longer than
    serving.startup_timeout_s (the start-up clock runs from RUNNING). Another user's server already
    listens on the replica's base port and answers /v1/models with 200: the replica's job takes another
    port, and the stranger gets no request. slurmctld stopped for 30 s while the replica serves the stage:
    the fleet asks again rather than taking its replica's job for gone (no death, no restart), and the
    launcher following the run waits. Every pair once, the replica's job cancelled by the stage job's
    end. Then the controller forgets the run's job (MinJobAge, 300 s on a shared cluster, 2 s here):
    following the run again says done, the job's end read from sacct with accounting, from the stage's
    own manifest without."""
    from deepwriter.cluster.launcher import wait_for_jobs
    from deepwriter.config.compose import compose
    from deepwriter.config.root import to_typed
    from deepwriter.pipeline.runner import finished_stages

    switched = time.time()
    if mode == "accounting":
        request.getfixturevalue("accounting")  # the module's one switch, shared with the tests below
    switched = time.time() - switched
    assert accounting_on() == (mode == "accounting"), f"the local cluster is not in {mode} mode (.ci/slurm-local)"
    n, startup_s = 10, 30
    pairs = write_pairs(tmp_path / "pairs.jsonl", n)
    port = free_port()
    runs = tmp_path / "runs"
    anywhere = LOOPBACK_COMMAND.replace('"--latency-s"', '"--host","{host}","--latency-s"')  # binds 0.0.0.0 in a job
    anywhere = anywhere.replace('"--latency-s","0.3"', '"--latency-s","1.5"')  # the stop lands mid-stage
    assert '"--host","{host}"' in anywhere and '"1.5"' in anywhere
    served = [*served_synthesis_overrides(runs, model_cache, pairs, n, port, "q"), f"paths.stage_store={runs}/_stages"]
    served += [f"models.{r}.serving.command={anywhere}" for r in ("generator", "scorer")]
    served += [f"models.{r}.serving.startup_timeout_s={startup_s}" for r in ("generator", "scorer")]
    run_dir = runs / "demo" / "q"
    servers = run_dir / "servers"
    t0, at = time.time(), {}  # seconds from the submission to each step, printed
    with Stranger(port) as stranger, busy_cluster() as blockers:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "deepwriter.train", *served, "launcher=slurm", "launcher.wait=true"]
        pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        launcher = subprocess.Popen([*cmd, "launcher.poll_s=1"], cwd=tmp_path, env=env, **pipes)

        def running(check):
            """check, failing at once once the launcher has ended (the run failed: nothing more will come)."""

            def look():
                if launcher.poll() is not None:
                    raise AssertionError(
                        f"the run ended (exit {launcher.returncode}): {launcher.stderr.read()[-3000:]}"
                    )
                return check()

            return look

        try:
            (synth,) = wait_until(running(lambda: _jobs(run_dir)), 120, "the stage job submitted")
            job_id = synth["job_id"]
            waited = wait_until(running(lambda: queued_reason(job_id)), 60, "the stage job held in the queue")
            blockers.release(1)  # room for the stage job (one CPU), none for its replica's job
            wait_until(running(lambda: job(job_id)["JobState"] == "RUNNING"), 60, "the stage job to start")
            at["stage job runs"] = time.time() - t0
            (server_id,) = wait_until(
                running(lambda: [str(j["job_id"]) for j in submitted_jobs(servers)]), 120, "the replica's job submitted"
            )
            server_waited = wait_until(
                running(lambda: queued_reason(server_id)), 60, "the replica's job held in the queue"
            )
            submitted_at = float(submitted_jobs(servers)[0]["submitted"])
            time.sleep(max(0.0, submitted_at + startup_s + 2 - time.time()))  # queued past startup_timeout_s
            assert queued_reason(server_id) and job(job_id)["JobState"] == "RUNNING"
            blockers.release()  # the node is free: the replica's job starts
            at["replica job released"] = time.time() - t0
            wait_until(running(lambda: _shard_ids(runs)), 300, "the first pair written through the replica")
            at["first pair"] = time.time() - t0
            with controller_stopped(30):
                at_stop = len(_shard_ids(runs))
            at["controller back"] = time.time() - t0
            out, err = launcher.communicate(timeout=300)  # the stranger still listens until the run's end
        except BaseException:  # nothing of the run left in the queue for the next test
            launcher.kill()
            ours = [j["job_id"] for j in _jobs(run_dir)] + [str(j["job_id"]) for j in submitted_jobs(servers)]
            subprocess.run(["scancel", *ours], capture_output=True, timeout=30)
            raise
    took = time.time() - t0
    assert launcher.returncode == 0, (out[-3000:], err[-3000:])
    assert stranger.requests == []  # not one prompt sent to someone else's server
    assert (waited, server_waited) == ("Resources", "Resources")
    assert at_stop < n, f"the controller stopped after the stage's work ({at_stop} of {n} pairs)"
    assert sorted(_shard_ids(runs)) == [f"p{i:03d}" for i in range(n)]  # every pair once
    serving = json.loads((run_dir / "serving.json").read_text())  # what the stage job's fleet did
    fleet = serving["groups"]["tiny-qwen3"]
    assert (fleet["deaths"], fleet["restarts"]) == (0, 0), fleet  # never taken for dead, queued or silent
    assert len(fleet["startup_s"]) == 1 and fleet["startup_s"][0] < startup_s  # counted from RUNNING, not sbatch
    assert "replica 0: port %d, a SLURM job of its own" % port in serving["layout"]

    # the scheduler's records, while the controller remembers the jobs
    record = json.loads((run_dir / "slurm" / "jobs.json").read_text())
    ((synth,), (server,)) = record["jobs"], record["servers"]
    assert (server["group"], server["index"], server["state"]) == ("tiny-qwen3", 0, "CANCELLED")  # close()'s scancel
    got = job(server["job_id"])  # a job of its own, not a step of the stage job
    assert got["JobName"] == "deepwriter-demo-serve-tiny-qwen3" and got["JobState"] == "CANCELLED", got
    assert server["job_id"] != job_id and job(job_id)["JobState"] == "COMPLETED"
    assert got["EndTime"] <= job(job_id)["EndTime"]  # stopped before the stage job ended
    where, server_job = (servers / "tiny-qwen3-0.addr").read_text().split()
    node, _, own_port = where.rpartition(":")
    assert (node, server_job) == (got["NodeList"], server["job_id"]) and int(own_port) != port  # the stranger's port
    squeued = subprocess.run(["squeue", "-h", "-j", server["job_id"]], capture_output=True, text=True, timeout=30)
    assert squeued.stdout.strip() == "" and port_free("0.0.0.0", int(own_port))
    server_log = (servers / "tiny-qwen3-0.log").read_text()
    assert "--host 0.0.0.0" in server_log and f"port {port} is taken on {node}: this replica listens on" in server_log
    # published once its server answered with the run's key, which reached the job in no file of the run
    assert f"the server answers on {where}: address published" in server_log
    assert "export VLLM_API_KEY" not in (servers / "tiny-qwen3-0.sbatch").read_text()
    assert json.loads((servers / "fleet.json").read_text())["running"] == {}
    assert server["log"] == str(servers / "tiny-qwen3-0.log")
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    shown = json.loads(re.search(r"window\.__REPORT = (\{.*?\});</script>", page).group(1))["runs"][0]["jobs"]
    assert [(j["job_id"], j["state"]) for j in shown["servers"]] == [(server["job_id"], "CANCELLED")]
    stage_log = (run_dir / "slurm" / f"{job_id}_0_log.out").read_text()
    assert f"tiny-qwen3 replica 0 waits in the queue: job {server['job_id']} PENDING (Reason=Resources)" in stage_log

    # the run followed again once the controller has forgotten its job
    t1 = time.time()
    at["records read"] = t1 - t0
    with forgetful_controller(min_job_age_s=2):
        wait_until(lambda: forgotten(job_id), 60, f"the controller to forget job {job_id}", 1)
        cfg = to_typed(compose([*served, "launcher=slurm", "launcher.poll_s=0.2"]))
        rc = wait_for_jobs(cfg, read_jobs(run_dir), run_dir / "slurm", lambda: finished_stages(cfg))
        remembered = job(job_id) if mode == "accounting" else None  # sacct's record of the forgotten job
    recorded = read_jobs(run_dir)
    assert rc == 0 and recorded["result"] == {"exit_code": 0, "line": None}, recorded["result"]
    (followed,) = recorded["jobs"]
    if mode == "accounting":  # the job's end read from sacct
        assert (remembered["From"], remembered["JobState"], remembered["ExitCode"]) == ("sacct", "COMPLETED", "0:0")
        assert (followed["state"], followed["exit_code"], followed["stage_finished"]) == ("COMPLETED", "0:0", True)
    else:  # the scheduler forgot the job; the stage's own manifest says done
        assert (followed["state"], followed["stage_finished"]) == ("GONE", True)
    assert json.loads((run_dir / "synthesize" / "manifest.json").read_text())["status"] == "complete"
    print(
        f"{mode}: {n} pairs in {took:.1f} s through a busy SLURM (controller stopped 30 s with {at_stop} written); "
        f"replica job {server['job_id']} on port {own_port}, never healed; forgotten job followed in "
        f"{time.time() - t1:.1f} s as {followed['state']}; replica start-up {fleet['startup_s']} s; "
        + ", ".join(f"{k} at {v:.0f} s" for k, v in at.items())
        + f"; {switched:.1f} s to switch the cluster's mode first"
    )


def _submit(command: str) -> str:
    done = subprocess.run(
        ["sbatch", "--parsable", "-o", "/dev/null", "-J", "deepwriter-accounting", "--wrap", command],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.timeout(300)  # ~30 s: two one-second jobs, forgotten by the controller, plus the mode switches
def test_with_accounting_a_forgotten_jobs_end_is_read_from_sacct(accounting, tmp_path):
    """A forgotten job's end read from sacct, a failed one's too: a stage job that ended more than
    MinJobAge ago with its stage done is done (the scenario above reads a whole run so), one that left
    items unfinished (exit 3) says so, resumable."""
    from deepwriter.cluster.jobs import show_job
    from deepwriter.cluster.launcher import EXIT_UNFINISHED, job_states, outcome, wait_for_jobs
    from deepwriter.config.compose import compose
    from deepwriter.config.root import to_typed

    ok, unfinished = _submit("true"), _submit("exit 3")
    for j in (ok, unfinished):
        wait_until(lambda j=j: job(j)["JobState"] in ("COMPLETED", "FAILED"), 120, f"job {j} to end", 1)
    with forgetful_controller(min_job_age_s=2):
        wait_until(lambda: forgotten(ok) and forgotten(unfinished), 120, "the controller to forget both jobs", 1)
        got = {j: show_job(j) for j in (ok, unfinished)}
        cfg = to_typed(compose(["+recipe=demo", "launcher=slurm", "launcher.poll_s=0.2"]))
        run = {"run": "demo/a", "jobs": [{"stage": "synthesize", "job_id": ok, "err": "synthesize.err"}]}
        (tmp_path / "slurm").mkdir()
        rc = wait_for_jobs(cfg, run, tmp_path / "slurm", lambda: {"synthesize": True})
    assert rc == 0 and run["result"] == {"exit_code": 0, "line": None}, run["result"]
    (shown,) = run["jobs"]
    assert (shown["state"], shown["exit_code"], shown["stage_finished"]) == ("COMPLETED", "0:0", True)
    assert (got[ok]["JobState"], got[ok]["ExitCode"], got[ok]["From"]) == ("COMPLETED", "0:0", "sacct")
    assert (got[unfinished]["JobState"], got[unfinished]["ExitCode"]) == ("FAILED", "3:0")
    # the launcher's reading: the first stage done, the second left items unfinished (exit 3, resumable)
    record = {
        "run": "demo/a",
        "jobs": [
            {"stage": "synthesize", "job_id": ok, "err": "synthesize.err"},
            {"stage": "mix", "job_id": unfinished, "err": "mix.err"},
        ],
    }
    rc, line = outcome(record, job_states(record), finished={})
    assert rc == EXIT_UNFINISHED and line.startswith(f"stage mix (job {unfinished}) left items unfinished (exit 3)")


@pytest.mark.timeout(300)  # ~10 s: one running job, the controller silent for two looks
def test_with_accounting_a_silent_controller_leaves_a_replica_job_unknown_never_ended(
    accounting, tmp_path, monkeypatch
):
    """The scenario above stops slurmctld for 30 s under a whole run. Here, with slurmdbd
    still answering, the scheduler commands pointed at a controller port nothing listens on (as while
    slurmctld restarts): a running replica's job is unknown (ask again), never ended nor read from sacct,
    the launcher's reading says UNKNOWN, and once the controller answers the job runs on and its end is
    seen."""
    import re

    from deepwriter.cluster.jobs import ReplicaJob, SlurmSpawner, accounted_job
    from deepwriter.cluster.launcher import job_states
    from deepwriter.testing.slurm import silent_controller_conf

    job_id = _submit("sleep 120")
    try:
        wait_until(lambda: job(job_id)["JobState"] == "RUNNING", 60, "the job to run")
        # slurmdbd's record follows the controller's by a moment
        wait_until(lambda: (accounted_job(job_id) or {}).get("JobState") == "RUNNING", 60, "sacct to say RUNNING")
        spawner = SlurmSpawner(lambda rep: {}, tmp_path, ask_every_s=0)
        handle = ReplicaJob(job_id, tmp_path / "x.addr")
        assert spawner.ended(handle) is None and handle.state == "RUNNING"
        monkeypatch.setenv("SLURM_CONF", str(silent_controller_conf(tmp_path)))
        assert accounted_job(job_id)["JobState"] == "RUNNING"  # slurmdbd answers while the controller does not
        assert spawner.ended(handle) is None and spawner.waiting(handle) is None  # not gone, not queued
        assert handle.silent_since is not None and handle.state == "RUNNING"
        record = {"run": "demo/x", "jobs": [{"stage": "synthesize", "job_id": job_id}]}
        assert job_states(record)[job_id]["JobState"] == "UNKNOWN"
        monkeypatch.delenv("SLURM_CONF")
        assert spawner.ended(handle) is None and handle.silent_since is None and job(job_id)["JobState"] == "RUNNING"
        subprocess.run(["scancel", job_id], check=True, timeout=30)
        why = wait_until(lambda: spawner.ended(handle), 60, "the cancelled job seen as ended")
        assert re.match(rf"job {job_id} (CANCELLED|COMPLETING) \(exit ", why), why
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)

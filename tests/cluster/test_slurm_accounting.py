"""The launcher's reading of a job's end on a cluster that keeps accounting (`make slurm-local` with
`--accounting`: slurmdbd on MariaDB): once the controller has forgotten a job (MinJobAge), its end is read
from `sacct`, not taken for unknown. The module switches the local cluster to accounting and back (about
10 s each way); everything else the launcher does is the same in both modes and is tested once, in
test_slurm.py, without accounting."""

from __future__ import annotations

import subprocess

import pytest

from deepwriter.testing.repo import REPO
from deepwriter.testing.slurm import accounting_on, forgetful_controller, forgotten, job, wait_until

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
    """Also the run-level reading (test_slurm.py's forgotten run, there without accounting, GONE): a run
    whose stage job ended more than MinJobAge ago is done, its job's end read from sacct."""
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
    """test_slurm.py stops slurmctld for 30 s under a whole run, without accounting. Here, with slurmdbd
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

"""The launcher's reading of a job's end on a cluster that keeps accounting (`make slurm-local` with
`--accounting`: slurmdbd on MariaDB): once the controller has forgotten a job (MinJobAge), its end is read
from `sacct`, not taken for unknown. The module switches the local cluster to accounting and back (about
10 s each way); everything else the launcher does is the same in both modes and is tested once, in
test_slurm.py, without accounting."""

from __future__ import annotations

import subprocess

import pytest

from deepwriter.testing.repo import REPO
from deepwriter.testing.slurm import forgetful_controller, forgotten, job, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def accounting(slurm_cluster):
    """The local cluster with accounting for this module; without it again after."""
    script = str(REPO / ".ci" / "slurm-local")
    on = subprocess.run([script, "--accounting"], capture_output=True, text=True, timeout=600)
    assert on.returncode == 0, on.stderr[-2000:]
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
def test_with_accounting_a_forgotten_jobs_end_is_read_from_sacct(accounting):
    from deepwriter.cluster.jobs import show_job
    from deepwriter.cluster.launcher import EXIT_UNFINISHED, job_states, outcome

    ok, unfinished = _submit("true"), _submit("exit 3")
    for j in (ok, unfinished):
        wait_until(lambda j=j: job(j)["JobState"] in ("COMPLETED", "FAILED"), 120, f"job {j} to end", 1)
    with forgetful_controller(min_job_age_s=2):
        wait_until(lambda: forgotten(ok) and forgotten(unfinished), 120, "the controller to forget both jobs", 1)
        got = {j: show_job(j) for j in (ok, unfinished)}
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

"""The local SLURM cluster the launcher's tests submit to (`make slurm-local`, .ci/slurm-local): whether
it answers, a job's state read back from the scheduler (`scontrol show job`), and the ways a shared
cluster differs from an idle one: a controller that forgets ended jobs, one that does not answer, a node
busy with other users' jobs."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional

from deepwriter.cluster.jobs import show_job
from deepwriter.testing.repo import REPO
from deepwriter.testing.vllm_server import free_port


def cluster_answers() -> bool:
    """slurmctld answers and a node takes jobs."""
    if not shutil.which("sinfo") or not shutil.which("scontrol"):
        return False
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10)
        nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    states = nodes.stdout.split()
    return "is UP" in ping.stdout and any(s in ("idle", "mixed", "allocated", "completing") for s in states)


def job(job_id: str) -> Dict[str, str]:
    got = show_job(job_id)
    assert got is not None, f"the controller does not know job {job_id}"
    return got


def wait_until(check: Callable[[], Optional[object]], timeout_s: float, what: str, poll_s: float = 0.5):
    """check()'s first truthy value within timeout_s, else a failure naming what was awaited."""
    end = time.time() + timeout_s
    while time.time() < end:
        got = check()
        if got:
            return got
        time.sleep(poll_s)
    raise AssertionError(f"gave up after {timeout_s:.0f} s waiting for {what}")


def scontrol(*args: str) -> None:
    done = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"scontrol {' '.join(args)}: {done.stderr.strip()}"


# --- a cluster that behaves like a shared one ---------------------------------------------------------

SLURM_CONF = Path("/etc/slurm/slurm.conf")
OURS = "# written by deepwriter .ci/slurm-local"  # the mark .ci/slurm-local leaves in the file it writes


@contextlib.contextmanager
def forgetful_controller(min_job_age_s: int = 2) -> Iterator[None]:
    """The local controller forgets an ended job `min_job_age_s` after its end (a shared cluster's
    MinJobAge is 300 s; waiting that long is not a test's business): slurm.conf with that MinJobAge and
    `scontrol reconfigure`; the file as it was, and a reconfigure, after."""
    before = SLURM_CONF.read_text()
    assert OURS in before, f"{SLURM_CONF} is not the local cluster's (.ci/slurm-local): not changing it"
    kept = [line for line in before.splitlines() if not line.startswith("MinJobAge=")]
    SLURM_CONF.write_text("\n".join([*kept, f"MinJobAge={min_job_age_s}"]) + "\n")
    try:
        scontrol("reconfigure")
        yield
    finally:
        SLURM_CONF.write_text(before)
        scontrol("reconfigure")


def accounting_on() -> bool:
    """The cluster keeps accounting (slurmdbd): `.ci/slurm-local --accounting` configured it."""
    return any(
        line.startswith("AccountingStorageType=accounting_storage/slurmdbd")
        for line in SLURM_CONF.read_text().splitlines()
    )


def forgotten(job_id: str) -> bool:
    """The controller answers that it does not know the job (`Invalid job id`)."""
    done = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30)
    return done.returncode != 0 and "Invalid job id" in done.stderr


def silent_controller_conf(folder: Path) -> Path:
    """A copy of the cluster's slurm.conf whose controller port nothing listens on: the SLURM commands
    that read it (SLURM_CONF) get no answer from a controller, as while slurmctld restarts."""

    lines = SLURM_CONF.read_text().splitlines()
    lines = [x for x in lines if not x.startswith(("SlurmctldPort=", "MessageTimeout="))]
    conf = Path(folder) / "slurm.conf"
    conf.write_text("\n".join([*lines, f"SlurmctldPort={free_port()}", "MessageTimeout=2"]) + "\n")
    return conf


@contextlib.contextmanager
def busy_cluster(name: str = "deepwriter-blocker") -> Iterator["Blockers"]:
    """The node's every CPU slot held by blocker jobs (one CPU each, until the node takes no more: the
    next job waits with Reason=Resources), as on a cluster full of other users' work. `release(n)`
    frees n slots; every blocker is cancelled on the way out."""
    blockers = Blockers(name)
    try:
        blockers.fill()
        yield blockers
    finally:
        blockers.release()


class Blockers:
    def __init__(self, name: str):
        self.name, self.ids = name, []  # type: ignore[var-annotated]

    def _submit(self) -> str:
        cmd = ["sbatch", "--parsable", "-J", self.name, "-c", "1", "-o", "/dev/null", "--wrap", "sleep 3600"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"sbatch of a blocker job: {done.stderr.strip()}"
        return done.stdout.strip().split(";")[0]

    def fill(self, most: int = 64, batch: int = 12) -> None:
        """Blockers, `batch` at a time, until some wait (PENDING for Resources): those are cancelled, the
        rest hold the node. A batch larger than the local node's 8 slots fills it in one scheduling pass
        (4 at a time took three, about 4 s)."""
        while len(self.ids) < most:
            ids = [self._submit() for _ in range(batch)]
            states = {j: wait_until(lambda j=j: _state_once_scheduled(j), 60, f"blocker {j} scheduled") for j in ids}
            self.ids += [j for j in ids if states[j] == "RUNNING"]
            waiting = [j for j in ids if states[j] == "PENDING"]
            if waiting:
                subprocess.run(["scancel", *waiting], capture_output=True, timeout=30)
                return
        raise AssertionError(f"the node took {most} blocker jobs and still had room")

    def release(self, n: Optional[int] = None) -> None:
        """Cancel n blockers (all by default)."""
        n = len(self.ids) if n is None else n
        gone, self.ids = self.ids[:n], self.ids[n:]
        if gone:
            subprocess.run(["scancel", *gone], capture_output=True, timeout=30)


def _state_once_scheduled(job_id: str) -> Optional[str]:
    """RUNNING, or PENDING for want of resources; None while the scheduler has not looked at it yet."""
    st = job(job_id)
    if st["JobState"] == "RUNNING" or (st["JobState"] == "PENDING" and st.get("Reason") in ("Resources", "Priority")):
        return st["JobState"]
    return None


@contextlib.contextmanager
def controller_stopped(seconds: float) -> Iterator[None]:
    """slurmctld stopped (`scontrol shutdown slurmctld`: its state saved, running jobs left running) for
    `seconds`, then started again by .ci/slurm-local in the mode it runs in (with accounting or without),
    which waits until it answers."""

    mode = ["--accounting"] if accounting_on() else []
    t0 = time.monotonic()
    scontrol("shutdown", "slurmctld")
    wait_until(lambda: subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode != 0, 60, "stop")
    try:
        yield
        time.sleep(max(0.0, t0 + seconds - time.monotonic()))
    finally:
        done = subprocess.run([str(REPO / ".ci" / "slurm-local"), *mode], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f".ci/slurm-local did not start slurmctld again: {done.stderr.strip()}"


def queued_reason(job_id: str) -> Optional[str]:
    """The scheduler's Reason while the job waits in the queue (Resources, Priority, ...), else None."""
    st = job(job_id)
    return st.get("Reason") if st["JobState"] == "PENDING" and st.get("Reason") not in (None, "None") else None

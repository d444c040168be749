"""The local SLURM cluster the launcher's tests submit to (`make slurm-local`, .ci/slurm-local): whether
it answers, and a job's state read back from the scheduler (`scontrol show job`; no accounting here)."""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Callable, Dict, Optional

from deepwriter.cluster.launcher import show_job


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

"""A managed server replica as a SLURM job of its own (serving.placement: slurm; the fleet's spawner seam,
deepwriter.serving.fleet.Spawner).

The replica's server command (deepwriter.serving.fleet.server_command_for, bound to 0.0.0.0) becomes a
script `<servers>/<group>-<index>.sbatch` that submitit runs as the job's command (a CommandFunction, as the
stage jobs are its callables; `--no-requeue`: the fleet, not the scheduler, brings a dead replica back,
within serving.max_restarts). The script appends its own and its server's output to the replica's log.
Once its server answers (with the run's key) the job writes `<node>:<port> <job id>` to
`<servers>/<group>-<index>.addr` in the run folder, which every node sees: the fleet reads the replica's
address there and health-checks it as it does a local process. A job that SLURM ended (scancel, node
failure, preemption, its time limit) is seen through `scontrol show job`; `stop` is scancel and waits
until the scheduler says the job has ended.

Submitted through submitit, but watched here: submitit reads a job's state through `sacct`, which a cluster
without accounting (the local one in its plain mode) does not have, so the fleet asks `scontrol show job`
(show_job: sacct only for a job the controller has forgotten, where accounting keeps it).

Every job submitted is a line of `<servers>/jobs.jsonl` (the launcher's jobs.json lists them with their
end state). Also here: the scheduler's view of one job (`scontrol show job`), which the launcher
(deepwriter.cluster.launcher) reads too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

from deepwriter.serving.fleet import KEY_ENV, FleetError
from deepwriter.serving.placement import Replica

_log = logging.getLogger("deepwriter.fleet")

# job states after which SLURM runs nothing more for the job (a requeued one goes back to PENDING)
TERMINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
    "SPECIAL_EXIT",
}


def run_tool(cmd: List[str], timeout: float = 30, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """A SLURM command (sbatch, scontrol, sinfo, ...), its output captured; `env`: its environment
    (sbatch hands the one it runs in to the job)."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


class ControllerSilent(RuntimeError):
    """slurmctld did not answer (restarting, overloaded, a network blip): a job's state is unknown, not
    ended; ask again later."""


# what scontrol says of a job the controller does not (or no longer) know
_UNKNOWN_JOB = "Invalid job id"


def show_job(job_id: str) -> Optional[Dict[str, str]]:
    """`scontrol show job -o ID` as a dict (JobState, ExitCode, Restarts, NumTasks, Reason, ...). A job
    the controller no longer knows (it forgets ended jobs after MinJobAge) is read from accounting
    (`sacct`) where the cluster keeps it, else None. A controller that does not answer raises
    ControllerSilent: that is "unknown, ask again", never "the job is gone"."""
    try:
        out = run_tool(["scontrol", "show", "job", "-o", str(job_id)])
    except subprocess.TimeoutExpired as exc:
        raise ControllerSilent(f"scontrol show job {job_id}: no answer in {exc.timeout:.0f} s") from exc
    if out.returncode != 0:
        if _UNKNOWN_JOB not in out.stderr + out.stdout:
            why = (out.stderr or out.stdout).strip().splitlines()
            raise ControllerSilent(f"scontrol show job {job_id}: {why[-1] if why else f'exit {out.returncode}'}")
        return accounted_job(job_id)
    if not out.stdout.strip():
        return accounted_job(job_id)
    fields: Dict[str, str] = {}
    for token in shlex.split(out.stdout.strip().splitlines()[0]):
        k, eq, v = token.partition("=")
        if eq:
            fields.setdefault(k, v)
    return fields


def accounted_job(job_id: str) -> Optional[Dict[str, str]]:
    """A job's end as accounting (slurmdbd) recorded it, in scontrol's field names; None where the
    cluster keeps no accounting or has no record of the job."""
    try:
        out = run_tool(["sacct", "-n", "-P", "-X", "-j", str(job_id), "-o", "State,ExitCode,NodeList,Reason"])
    except (OSError, subprocess.TimeoutExpired):
        return None
    rows = [line.split("|") for line in out.stdout.splitlines() if line.count("|") == 3]
    if out.returncode != 0 or not rows:
        return None
    state, code, nodes, reason = rows[-1]  # the last try of a requeued job
    # "CANCELLED by 0": the state is the first word
    return {"JobState": state.split()[0], "ExitCode": code, "NodeList": nodes, "Reason": reason, "From": "sacct"}


def partition_has_gpus(partition: Optional[str]) -> bool:
    """Whether the nodes of a partition (None: the default one) offer GPUs as a generic resource."""
    cmd = ["sinfo", "-h", "-o", "%G"] + (["-p", partition] if partition else [])
    try:
        out = run_tool(cmd)
    except OSError:  # not on a cluster (a plan on a laptop): a serving partition has GPUs
        return True
    return any("gpu" in g for g in out.stdout.split())


# every replica job a fleet of the run submitted, one JSON line each (group, index, job_id), in <servers>/
JOBS_LOG = "jobs.jsonl"


def submitted_jobs(servers_dir: Path) -> List[Dict[str, object]]:
    try:
        text = (Path(servers_dir) / JOBS_LOG).read_text()
    except OSError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# Inside a stage job, a replica's job stops its server once that stage job has ended (scancel, a node
# failure, SIGKILL past the fleet's close()): checked every WATCH_S seconds, two looks in a row.
WATCH_S = 10


def batch_script(
    rep: Replica,
    argv: List[str],
    env: Dict[str, str],
    addr: Path,
    parent: Optional[str],
    watch_s: float = WATCH_S,
    python: str = sys.executable,
    log_path: Optional[Path] = None,
) -> str:
    """The replica's batch script: a port free on its node (the replica's own, base_port + index, unless
    another server holds it there: then one the system gives), then its server; once that server answers
    on the port (with the run's key, KEY_ENV in the job's environment, and refusing any other key) its
    address goes into the run folder. A server that ends without answering publishes nothing: the fleet
    never sees an address that may be someone else's. With `parent` (the stage job that runs the fleet)
    the server is stopped when that job is no longer running. The port is every argument of `argv` that
    is the replica's port. The key is not in `env` (the script is a file of the run folder): sbatch
    hands it to the job in its environment. With `log_path` everything the script and its server print
    is appended there (submitit's CommandFunction would hold it all in memory until the job's end)."""
    q = shlex.quote
    own = str(rep.port)
    command = " ".join('"$port"' if a == own else q(a) for a in argv)
    bind = "import socket,sys; s=socket.socket(); s.bind(('', int(sys.argv[1]))); print(s.getsockname()[1])"
    lines = [
        "#!/bin/bash",
        f"# deepwriter: {rep.group} replica {rep.index}, a server job of the run's fleet",
        *([f"exec >> {q(str(log_path))} 2>&1"] if log_path else []),  # not through submitit's buffer: it is kept
        *(f"export {k}={q(v)}" for k, v in env.items() if k != KEY_ENV),
        f'free_port() {{ {q(python)} -c {q(bind)} "$1" 2>/dev/null; }}',
        f'answers() {{ {q(python)} -c {q(_ANSWERS.format(key_env=KEY_ENV))} "$1"; }}',
        f"port=$(free_port {own} || free_port 0)",
        f'[ "$port" = {own} ] || echo "deepwriter: port {own} is taken on $(hostname): this replica listens on $port"',
        'echo "=== $(date +%H:%M:%S) job $SLURM_JOB_ID on $(hostname): "' + command,
        command + " &",
        "srv=$!",
        "trap 'kill -TERM $srv 2>/dev/null' TERM INT",
        'until answers "$port"; do',
        '  if ! kill -0 "$srv" 2>/dev/null; then',
        '    echo "deepwriter: the server ended before it answered on port $port: no address published"',
        '    wait "$srv"',
        "    exit 1",
        "  fi",
        "  sleep 1",
        "done",
        f'printf "%s:%s %s\\n" "$(hostname)" "$port" "$SLURM_JOB_ID" > {q(str(addr))}.$SLURM_JOB_ID',
        f"mv {q(str(addr))}.$SLURM_JOB_ID {q(str(addr))}",
        'echo "deepwriter: the server answers on $(hostname):$port: address published"',
    ]
    if parent:
        lines += [
            "gone=0",
            'while kill -0 "$srv" 2>/dev/null; do',
            f"  sleep {watch_s:g}",
            f"  st=$(scontrol show job -o {q(parent)} 2>&1)",
            '  case "$st" in',
            "    *JobState=RUNNING*|*JobState=SUSPENDED*) gone=0 ;;",
            '    *JobState=*|*"Invalid job id"*) gone=$((gone + 1)) ;;',
            "  esac",
            '  if [ "$gone" -ge 2 ]; then',
            f'    echo "deepwriter: stage job {parent}, which started this server, no longer runs: stopping it"',
            '    kill -TERM "$srv"',
            "    break",
            "  fi",
            "done",
        ]
    return "\n".join(lines + ['wait "$srv"']) + "\n"


# Whether the server on this node's port (argv[1]) is the job's own: it answers /v1/models with the key in
# the job's environment and refuses another (without a key: any answer). Exit 0 if so.
_ANSWERS = """
import os, sys, urllib.error, urllib.request as u
url, key = "http://127.0.0.1:%s/v1/models" % sys.argv[1], os.environ.get("{key_env}")
direct = u.build_opener(u.ProxyHandler({{}}))
def status(k):
    try:
        return direct.open(u.Request(url, headers={{"Authorization": "Bearer " + k}} if k else {{}}), timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception:
        return None
sys.exit(0 if status(key) == 200 and (not key or status(key + "-not-the-key") in (401, 403)) else 1)
"""


@dataclass
class ReplicaJob:
    job_id: str
    addr_path: Path
    asked_at: float = 0.0  # when the scheduler was last asked about it (monotonic)
    state: str = "PENDING"  # as the scheduler last said (GONE: it no longer knows the job)
    reason: str = ""  # scontrol's Reason (why a PENDING job waits: Resources, Priority, ...)
    exit_code: str = "?"
    silent_since: Optional[float] = None  # the controller has not answered about it since (monotonic)


# a job in these states has not started its server yet (CONFIGURING: its nodes are booting)
QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"}


# submitit hands sbatch the environment of this process: the run's key goes there only while one job is
# submitted, one submission at a time
_SUBMITTING = threading.Lock()


@contextlib.contextmanager
def _environment(extra: Dict[str, str]) -> Iterator[None]:
    with _SUBMITTING:
        before = {k: os.environ.get(k) for k in extra}
        os.environ.update(extra)
        try:
            yield
        finally:
            for k, v in before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


class SlurmSpawner:
    """Starts each replica as a batch job through submitit; `request_for(replica)` gives its submitit
    SlurmExecutor parameters (partition, GPUs, CPUs, time; extra sbatch options under
    `additional_parameters`: launcher.jobs.server, see deepwriter.cluster.requests.server_request)."""

    def __init__(
        self,
        request_for: Callable[[Replica], Dict[str, Any]],
        log_dir: Path,
        stop_wait_s: float = 120.0,
        watch_s: float = WATCH_S,
        ask_every_s: float = 5.0,
    ):
        self.request_for, self.log_dir, self.stop_wait_s, self.watch_s = (
            request_for,
            Path(log_dir),
            stop_wait_s,
            watch_s,
        )
        self.ask_every_s = ask_every_s  # the controller is shared: no more than one look at a job per this

    def start(self, rep: Replica, argv: List[str], env: Dict[str, str], log_path: Path) -> ReplicaJob:
        import submitit
        from submitit.core.utils import FailedJobError, FailedSubmissionError

        name = f"{rep.group}-{rep.index}".replace("/", "_")
        addr = self.log_dir / f"{name}.addr"
        self._cancel_former(rep, addr)
        addr.unlink(missing_ok=True)  # a former job's address is not this one's
        script = self.log_dir / f"{name}.sbatch"
        parent = os.environ.get("SLURM_JOB_ID")
        script.write_text(batch_script(rep, argv, env, addr, parent, self.watch_s, log_path=log_path))
        request = dict(self.request_for(rep))
        # submitit's own lines (its start, a failure to load the job) go to the replica's log too
        extra = {"no-requeue": True, "output": str(log_path), **request.pop("additional_parameters", {})}
        executor = submitit.SlurmExecutor(folder=self.log_dir / "submitit", max_num_timeout=0)
        executor.update_parameters(**request, use_srun=False, stderr_to_stdout=True, additional_parameters=extra)
        secret = {k: v for k, v in env.items() if k == KEY_ENV}  # to the job through sbatch, in no file
        try:
            with _environment(secret):
                job_id = str(executor.submit(submitit.helpers.CommandFunction(["bash", str(script)])).job_id)
        except (FailedJobError, FailedSubmissionError, OSError) as exc:
            why = str(exc).strip().splitlines()
            raise FleetError(
                f"{rep.group} replica {rep.index}: sbatch refused its job: {why[-1] if why else type(exc).__name__} "
                f"(request {request}, {extra})"
            ) from exc
        with open(self.log_dir / JOBS_LOG, "a") as f:  # every job of the run's fleets, across stage jobs
            entry = {"group": rep.group, "index": rep.index, "job_id": job_id, "submitted": time.time()}
            f.write(json.dumps({**entry, "log": str(log_path)}))
            f.write("\n")
        return ReplicaJob(job_id, addr)

    def _cancel_former(self, rep: Replica, addr: Path) -> None:
        """A job of this replica from an earlier try of the stage (a requeued stage job, a killed run) that
        still runs is cancelled first: it holds the replica's GPUs. A controller that does not answer
        cannot say: the job is cancelled anyway (scancel of an ended job changes nothing)."""
        try:
            former = addr.read_text().split()[1]
        except (OSError, IndexError):
            return
        try:
            st = show_job(former)
        except ControllerSilent:
            st = {"JobState": "UNKNOWN"}
        if st is not None and st.get("JobState") not in TERMINAL:
            self.stop(rep, ReplicaJob(former, addr), graceful=False)

    def _look(self, job: ReplicaJob) -> None:
        """Ask the scheduler about the job, at most every `ask_every_s`; a controller that does not answer
        leaves what it last said (unknown is not ended: ask again)."""
        now = time.monotonic()
        if now - job.asked_at < self.ask_every_s:
            return
        job.asked_at = now
        try:
            st = show_job(job.job_id)
        except ControllerSilent as exc:
            if job.silent_since is None:
                job.silent_since = now
                _log.warning("fleet: job %s: the controller does not answer (%s); asking again", job.job_id, exc)
            return
        if job.silent_since is not None:
            _log.info("fleet: job %s: the controller answers again after %.0f s", job.job_id, now - job.silent_since)
            job.silent_since = None
        if st is None:
            job.state, job.reason = "GONE", "the scheduler no longer knows the job"
            return
        job.state, job.reason = st.get("JobState", "UNKNOWN"), st.get("Reason", "")
        job.exit_code = st.get("ExitCode", "?")

    def ended(self, job: ReplicaJob) -> Optional[str]:
        """Why the job ended, asking the scheduler at most every `ask_every_s` (a health check that fails
        `unhealthy_after` times also counts the replica as dead)."""
        self._look(job)
        if job.state == "GONE":
            return f"job {job.job_id} is gone from the scheduler"
        if job.state in TERMINAL or job.state == "COMPLETING":
            return f"job {job.job_id} {job.state} (exit {job.exit_code}, reason {job.reason or '?'})"
        return None

    def waiting(self, job: ReplicaJob) -> Optional[str]:
        """Why the job has not started its server yet (it waits in the queue), None once it runs."""
        self._look(job)
        if job.state in QUEUED:
            return f"job {job.job_id} {job.state} (Reason={job.reason or '?'})"
        return None

    def address(self, rep: Replica, job: ReplicaJob) -> Optional[str]:
        try:
            where, _, job_id = job.addr_path.read_text().strip().partition(" ")
        except OSError:
            return None
        return where if job_id == job.job_id else None

    def stop(self, rep: Replica, job: ReplicaJob, graceful: bool) -> None:
        """scancel the job (SIGTERM, then SIGKILL after the cluster's KillWait) and wait until it has ended."""
        deadline = time.monotonic() + self.stop_wait_s
        cancelled = False
        while time.monotonic() < deadline:
            try:
                if not cancelled:
                    cancelled = run_tool(["scancel", job.job_id]).returncode == 0
                st = show_job(job.job_id)
            except (ControllerSilent, subprocess.TimeoutExpired):  # not known to have ended: ask again
                time.sleep(1.0)
                continue
            if st is None or st.get("JobState") in TERMINAL:
                return
            time.sleep(0.5)
        _log.warning(
            "fleet: job %s of %s replica %d has not ended %.0f s after scancel",
            job.job_id,
            rep.group,
            rep.index,
            self.stop_wait_s,
        )

    def describe(self, rep: Replica, job: ReplicaJob) -> Dict[str, object]:
        return {"job_id": job.job_id, "address": self.address(rep, job)}

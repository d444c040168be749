"""The recipe as SLURM jobs: `python -m deepwriter.train +recipe=NAME launcher=slurm` on a login node.

One job per stage that is not finished yet, chained by `afterok` dependencies (a failed job cancels the
jobs after it: `kill-on-invalid-dep`), submitted through submitit. Each job runs the same train command
for its one stage (`recipe.stages=[STAGE] run_id=RUN launcher=local`), so every rule of a local run holds
inside it: stage keys and reuse, resume from what a stage wrote (synthesis from its records, SFT from its
last checkpoint, eval from its judge cache), the managed serving fleet of the stage's roles (started,
healed and stopped by the job; by default each replica is a SLURM job of its own, serving.placement,
deepwriter.cluster.jobs), exit 3 for unfinished items. A requeued or
preempted job (submitit requeues on the pre-timeout signal; `scontrol requeue` restarts it) is the same
command again and resumes its stage exactly.

The sft job has one task per rank (`sft.num_processes` tasks on each of `sft.num_nodes` nodes); each
task exports RANK/WORLD_SIZE/MASTER_ADDR from SLURM's variables (submitit's TorchDistributedEnvironment),
which is how the stage runs as one rank of an outer launch.

The job graph goes to `<run_dir>/slurm/jobs.json` (read by report.html) and is printed with how to
follow it; `launcher.wait=true` polls `scontrol show job` until the last job ends and exits with the
run's result: 0 done, 3 unfinished, 1 a failed job. The run's own records decide: a stage whose manifest
says it finished is done even when the scheduler has forgotten its job (MinJobAge); a controller that
does not answer is asked again, never taken for an ended job.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from deepwriter.cluster.jobs import TERMINAL, ControllerSilent, run_tool, show_job, submitted_jobs
from deepwriter.cluster.requests import (
    job_request,
    key_of,
    sbatch_flags,
    server_flags,
    server_request,
    serves_as_jobs,
)
from deepwriter.cluster.time_limits import job_times, partition_limits
from deepwriter.config.root import ConfigError, RootConfig, expand
from deepwriter.core.contract import JOB_ENV
from deepwriter.core.errors import print_error
from deepwriter.core.files import write_json_atomic
from deepwriter.serving.placement import Group, Layout

JOBS_FILE = "jobs.json"
EXIT_UNFINISHED = 3


def slurm_dir(cfg: RootConfig) -> Path:
    return expand(cfg.paths.runs_dir) / cfg.recipe.name / cfg.run_id / "slurm"


def check_cluster(cfg: RootConfig, stages: List[str]) -> None:
    """Before any submission: sbatch is there, every partition exists, and the scheduler would accept
    every job as asked (`sbatch --test-only`: account, QOS, time limit, sizes). One line naming the key."""
    for tool in ("sbatch", "scontrol", "sinfo"):
        if not shutil.which(tool):
            raise ConfigError(
                f"launcher.kind: slurm, but {tool} is not on PATH; submit from a login node of the cluster "
                "(or launcher=local)"
            )
    listed = run_tool(["sinfo", "-h", "-o", "%R"])
    if listed.returncode != 0:
        raise ConfigError(f"launcher.kind: slurm, but sinfo fails: {_first_line(listed.stderr or listed.stdout)}")
    partitions = sorted(set(listed.stdout.split()))
    default = next(
        (p.rstrip("*") for p in run_tool(["sinfo", "-h", "-o", "%P"]).stdout.split() if p.endswith("*")), None
    )
    accounts = _user_accounts()
    for stage in stages:
        req = job_request(cfg, stage)
        if req.get("partition") and req["partition"] not in partitions:
            raise ConfigError(
                f"{key_of(cfg, stage, 'partition')}: no partition {req['partition']!r} on this cluster; "
                f"expected one of {partitions}"
            )
        account = req.get("account")
        if account and accounts is not None and account not in accounts:
            raise ConfigError(
                f"{key_of(cfg, stage, 'account')}: {account!r} is not an account of yours on this cluster; "
                f"expected one of {sorted(accounts)} (sacctmgr show assoc)"
            )
        allowed = _partition_accounts(req.get("partition") or default)
        if allowed is not None and account not in allowed:
            key = key_of(cfg, stage, "account") if account else "launcher.account"
            raise ConfigError(
                f"{key}: partition {req.get('partition') or default!r} takes jobs of accounts {sorted(allowed)} only; "
                f"got {account!r}"
            )
        additional = dict(getattr(cfg.launcher.jobs, stage).additional)
        test = run_tool(["sbatch", "--test-only", *sbatch_flags(req, additional), "--wrap", "true"])
        if test.returncode != 0:
            why = _first_line(test.stderr or test.stdout).removeprefix("sbatch: error: ")
            low = why.lower()
            key = next(
                (key_of(cfg, stage, w) for w in ("account", "partition", "qos") if w in low and req.get(w)),
                f"launcher.jobs.{stage}",
            )
            shown = " ".join(sbatch_flags(req, {}))
            raise ConfigError(f"{key}: the scheduler refuses the {stage} job ({shown}): {why}")


def check_server_jobs(cfg: RootConfig, groups: Dict[str, Group]) -> None:
    """Before any submission: the scheduler would accept each managed group's replica job as asked."""
    for name, g in groups.items():
        flags = server_flags(cfg, name, g.serving)
        test = run_tool(["sbatch", "--test-only", *flags, "--wrap", "true"])
        if test.returncode != 0:
            why = _first_line(test.stderr or test.stdout).removeprefix("sbatch: error: ")
            raise ConfigError(
                f"launcher.jobs.server: the scheduler refuses {name}'s replica job ({' '.join(flags)}): {why}"
            )


def check_arrays(graph: List[Dict[str, Any]]) -> None:
    """Before any submission: each job array fits the cluster's MaxArraySize (task ids 0..N-1 must all
    be below it; SLURM's default is 1001)."""
    arrays = [j for j in graph if j.get("array")]
    if not arrays:
        return
    fields = dict(
        (k.strip(), v.strip())
        for k, _, v in (line.partition("=") for line in run_tool(["scontrol", "show", "config"]).stdout.splitlines())
    )
    limit = int(fields.get("MaxArraySize", "1001") or 1001)
    for j in arrays:
        if len(j["array"]) > limit:
            raise ConfigError(
                f"launcher.jobs.{j['stage']}: a job array of {len(j['array'])} tasks ({j['array'][0]} .. "
                f"{j['array'][-1]}) is more than this cluster's MaxArraySize ({limit}, scontrol show config) allows"
            )


def _user_accounts() -> Optional[set]:
    """The accounts the submitting user may charge, where the cluster keeps accounting (slurmdbd);
    None where it does not (then SLURM accepts any account name)."""
    if not shutil.which("sacctmgr"):
        return None
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or ""
    out = run_tool(["sacctmgr", "-n", "-P", "show", "assoc", f"where user={user}", "format=account"])
    names = {x.strip() for x in out.stdout.split()} if out.returncode == 0 else set()
    return names or None


def _partition_accounts(partition: Optional[str]) -> Optional[set]:
    """A partition's AllowAccounts (minus its DenyAccounts); None when it takes every account. A job of
    another account would wait there forever ("account not known, so it can't use this partition")."""
    if not partition:
        return None
    out = run_tool(["scontrol", "show", "partition", "-o", partition])
    fields = dict(t.partition("=")[::2] for t in out.stdout.split() if "=" in t)
    allow = fields.get("AllowAccounts", "ALL")
    if allow in ("ALL", ""):
        return None
    return set(allow.split(",")) - set((fields.get("DenyAccounts") or "").split(","))


def _first_line(text: str) -> str:
    lines = [x.strip() for x in (text or "").strip().splitlines() if x.strip()]
    return lines[-1] if lines else "no output"


# --- what runs inside a job --------------------------------------------------------------------------------


class StageJob:
    """The callable each job runs (pickled by submitit): the train command for one stage of the run."""

    def __init__(self, stage: str, argv: List[str], run_id: str, cwd: str, ranks: int, task: Optional[str] = None):
        """`task`: the override that makes this job one task of the stage's array (`synthesis.shard=1/4`)."""
        self.stage, self.argv, self.run_id, self.cwd, self.ranks = stage, list(argv), run_id, cwd, ranks
        self.task = task

    def command(self) -> List[str]:
        return [
            sys.executable,
            "-m",
            "deepwriter.train",
            *self.argv,
            "launcher=local",
            f"recipe.stages=[{self.stage}]",
            f"run_id={self.run_id}",
            *([self.task] if getattr(self, "task", None) else []),
        ]

    def __call__(self) -> int:
        # the run's id, not this job's: SLURM_JOB_ID is set in here and would otherwise name the run
        env = {**os.environ, "DEEPWRITER_RUN_ID": self.run_id, JOB_ENV: self.stage}
        if self.ranks > 1:
            from submitit.helpers import TorchDistributedEnvironment

            env.update(rank_env(TorchDistributedEnvironment(), os.environ.get("CUDA_VISIBLE_DEVICES")))
        restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
        print(
            f"deepwriter: slurm job {os.environ.get('SLURM_JOB_ID')} ({self.stage}, restart {restarts}, "
            f"rank {env.get('RANK', '0')} of {self.ranks}): {shlex.join(self.command())}",
            flush=True,
        )
        self._child = subprocess.Popen(self.command(), cwd=self.cwd, env=env)
        _stop_signal_requeues_too()
        rc = self._child.wait()
        if rc != 0:
            sys.exit(rc)  # the job's exit code is the stage's: 3 unfinished, 2 bad input, 1 failed
        return rc

    def __getstate__(self) -> Dict[str, Any]:  # pickled again for the requeue: the child stays behind
        return {k: v for k, v in self.__dict__.items() if k != "_child"}

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Preemption or the time limit near: let the stage save (SFT checkpoints the step it is in,
        sft/preemption.py; the other stages' records are already on disk), then requeue the same
        command; the stage resumes from its files."""
        import submitit

        child = getattr(self, "_child", None)
        if child is not None:
            _let_stage_stop(child.pid, STOP_GRACE_S)
        return submitit.helpers.DelayedSubmission(self)


# How long a stage job waits for its stage to save and stop once the scheduler said the job ends: below
# submitit's default warning (the `--signal=USR2@90` it asks for), so the requeue is asked for in time.
STOP_GRACE_S = 75.0


def _stop_signal_requeues_too() -> None:
    """SLURM's `--signal=USR1@<s>` (and `scancel --signal=USR1`) ends a job as submitit's USR2 does: through
    its checkpoint-and-requeue handler, not the default action of USR1 (ending this process at once)."""
    import signal

    handler = signal.getsignal(signal.SIGUSR2)
    if callable(handler):  # submitit's, inside a submitted job
        signal.signal(signal.SIGUSR1, handler)


def _let_stage_stop(pid: int, grace_s: float) -> None:
    """Tell the stage process the job ends (SLURM may have signalled this process only) and wait, at most
    `grace_s`, until it has exited. Called from a signal handler while __call__ waits on the same child,
    so this waits without reaping it (WNOWAIT) and without Popen's lock."""
    import signal

    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        return
    end = time.time() + grace_s
    while time.time() < end:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return
        except ChildProcessError:
            return
        time.sleep(0.2)


def rank_env(dist: Any, visible_gpus: Optional[str]) -> Dict[str, str]:
    """A task's rank variables from SLURM's (submitit's TorchDistributedEnvironment). A cluster that binds
    one GPU to each task (--gpus-per-task=1, --gpu-bind=single:1) shows each task only its own GPU as
    device 0: its LOCAL_RANK is then 0 in a local world of 1 (DeepSpeed takes cuda:LOCAL_RANK), while a
    task that sees all of the node's GPUs keeps SLURM's local rank."""
    local_rank, local_world = dist.local_rank, dist.local_world_size
    if visible_gpus and len(visible_gpus.split(",")) == 1 and local_world > 1:
        local_rank, local_world = 0, 1
    return {
        "RANK": str(dist.rank),
        "WORLD_SIZE": str(dist.world_size),
        "LOCAL_RANK": str(local_rank),
        "LOCAL_WORLD_SIZE": str(local_world),
        "MASTER_ADDR": str(dist.master_addr),
        "MASTER_PORT": str(dist.master_port),
    }


# --- submission ---------------------------------------------------------------------------------------


# the launcher's keys a stage job keeps: what its managed replicas' jobs ask for (serving.placement: slurm)
_KEPT = ("launcher.partition", "launcher.account", "launcher.qos", "launcher.job_name")


def _forwarded(argv: List[str], task: Optional[str] = None) -> List[str]:
    """The submitter's overrides a stage job repeats: all but the launcher's (but for what its server
    replicas' jobs ask for), the run id, the stages and the key an array task sets itself (`task`)."""
    out = []
    own = task.partition("=")[0] if task else None
    for a in argv:
        key = a.lstrip("+~").partition("=")[0]
        kept = key in _KEPT or key.startswith("launcher.jobs.server")
        if key in ("launcher", "run_id", "recipe.stages", own) or (key.startswith("launcher.") and not kept):
            continue
        out.append(a)
    return out


def _describe(req: Dict[str, Any]) -> str:
    gpus = f", {req['gpus_per_node']} GPU/node" if req.get("gpus_per_node") else ""
    gpus += (f", {req['mem']} memory" if req["mem"] != "0" else ", all node memory") if req.get("mem") else ""
    where = ", ".join(f"{k} {req[k]}" for k in ("partition", "account", "qos") if req.get(k))
    return (
        f"{req['nodes']} node(s) x {req['ntasks_per_node']} task(s), {req['cpus_per_task']} CPU/task{gpus}, "
        f"{req['time']} min" + (f", {where}" if where else "")
    )


def job_graph(
    cfg: RootConfig, stages: List[str], hours: Dict[str, float], arrays: Optional[Dict[str, List[str]]] = None
) -> List[Dict[str, Any]]:
    """The jobs the run would submit, in order, each after the one before (no ids yet), each with the
    requeues it may take at its time limit, from the plan's projected `hours` of each stage
    (cost.stage_wall_hours); a graph that cannot finish is refused here, before any submission.
    `arrays`: a stage split among the tasks of a job array (StageSpec.array), one override per task; its
    projected hours are shared out among them (they run side by side)."""

    arrays = {s: t for s, t in (arrays or {}).items() if len(t) > 1}
    per_task = {s: h / len(arrays.get(s, [None])) for s, h in hours.items()}
    times = job_times(cfg, stages, per_task, partition_limits())
    graph = []
    for i, stage in enumerate(stages):
        req = job_request(cfg, stage)
        job = {
            "stage": stage,
            "request": req,
            "resources": _describe(req),
            "after": stages[i - 1] if i else None,
            "projected_h": round(times[stage].projected_h, 2),
            "requeues": times[stage].requeues,
            "time_text": times[stage].text(),
        }
        if stage in arrays:
            job.update(array=arrays[stage], stage_projected_h=round(hours.get(stage, 0.0), 2))
            job["time_text"] += f" (a task; {hours.get(stage, 0.0):,.1f} h over {len(arrays[stage])} tasks)"
        graph.append(job)
    return graph


def graph_text(graph: List[Dict[str, Any]]) -> str:
    """The job graph as `python -m deepwriter.plan ... launcher=slurm` prints it (before any submission)."""
    lines = [f"== SLURM jobs ({len(graph)}, each after the one before: afterok)"]
    for j in graph:
        after = f"  after {j['after']}" if j["after"] else ""
        if j.get("array"):  # afterok on an array: the next job waits for every task
            first, last = j["array"][0], j["array"][-1]
            after += f"\n  {'':<10} a job array of {len(j['array'])} tasks, each its own part: {first} .. {last}"
        lines.append(f"  {j['stage']:<10} {j['request']['job_name']}: {j['resources']}{after}")
        lines.append(f"  {'':<10} {j['time_text']}")
    return "\n".join(lines) + "\n"


def server_graph_text(cfg: RootConfig, layout: Layout, arrays: Optional[Dict[str, List[str]]] = None) -> str:
    """The managed replicas' own jobs (serving.placement: slurm) as the plan prints them; each task of a
    stage's job array (`arrays`) starts replicas of its own."""
    if not layout.groups:
        return ""
    lines = ["== SLURM server jobs (one per replica, submitted by the stage job that first calls the group)"]
    for name, g in layout.groups.items():
        span = layout.stages[g.first] if g.first == g.last else f"{layout.stages[g.first]}..{layout.stages[g.last]}"
        req = server_request(cfg, name, g.serving, ask_cluster=False)
        tasks = len((arrays or {}).get(layout.stages[g.first], [])) if g.first == g.last else 0
        each = f" in each of its {tasks} tasks" if tasks > 1 else ""
        lines.append(f"  {name}: {g.serving.replicas} x {req['job_name']}: {_describe(req)}  during {span}{each}")
    return "\n".join(lines) + "\n"


def submit_run(
    cfg: RootConfig,
    argv: List[str],
    todo: List[str],
    reused: List[str],
    server_groups: Dict[str, Group],
    hours: Dict[str, float],
    finished_stages: Callable[[], Dict[str, bool]],
    arrays: Optional[Dict[str, List[str]]] = None,
) -> int:
    """Submit the run's unfinished stages `todo` as jobs (the runner has checked the run and planned its
    managed servers' groups); with launcher.wait, follow them to the end. Returns the exit code of the
    submitting command. `hours`: the plan's projected wall-clock hours of each stage (commands.plan
    .stage_wall_hours), for each job's requeue allowance; `arrays`: the stages split among the tasks of a
    job array (one override per task, StageSpec.array)."""
    check_cluster(cfg, todo)
    if todo and serves_as_jobs(cfg, in_stage_job=False):
        check_server_jobs(cfg, server_groups)

    graph = job_graph(cfg, todo, hours, arrays)
    check_arrays(graph)

    import submitit

    folder = slurm_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    previous: Optional[str] = None
    launched: List[Dict[str, Any]] = []
    for job in graph:
        stage = job["stage"]
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=job["requeues"])
        extra = {"requeue": True, **getattr(cfg.launcher.jobs, stage).additional}
        if previous:
            extra["kill-on-invalid-dep"] = "yes"
        executor.update_parameters(
            **job["request"],
            dependency=f"afterok:{previous}" if previous else None,
            additional_parameters=extra,
        )
        ranks = job["request"]["nodes"] * job["request"]["ntasks_per_node"]
        dependency = f"afterok:{previous}" if previous else None
        if job.get("array"):  # one task per part, in one array; the next job depends on the array's id
            tasks = executor.submit_array(
                [StageJob(stage, _forwarded(argv, t), cfg.run_id, os.getcwd(), ranks, t) for t in job["array"]]
            )
            for t, done in zip(job["array"], tasks):
                task_job = {k: v for k, v in job.items() if k != "array"}
                task_job.update(task=t, tasks=len(job["array"]), array_job_id=done.job_id.split("_")[0])
                task_job.update(
                    job_id=str(done.job_id),
                    dependency=dependency,
                    log=str(done.paths.stdout),
                    err=str(done.paths.stderr),
                )
                launched.append(task_job)
            previous = tasks[0].job_id.split("_")[0]
            continue
        submitted = executor.submit(StageJob(stage, _forwarded(argv), cfg.run_id, os.getcwd(), ranks))
        job.update(
            job_id=str(submitted.job_id),
            dependency=dependency,
            log=str(folder / f"{submitted.job_id}_0_log.out"),
            err=str(folder / f"{submitted.job_id}_0_log.err"),
        )
        launched.append(job)
        previous = str(submitted.job_id)
    record = {
        "run": f"{cfg.recipe.name}/{cfg.run_id}",
        "submitted": time.time(),
        "reused": reused,
        "jobs": launched,  # an array's tasks one by one
    }
    write_json_atomic(folder / JOBS_FILE, record)
    _print_graph(record, folder)
    if not cfg.launcher.wait or not graph:
        return 0
    return wait_for_jobs(cfg, record, folder, finished_stages)


def _print_graph(record: Dict[str, Any], folder: Path) -> None:
    jobs = record["jobs"]
    print(f"slurm: {record['run']}: {len(jobs)} job(s) submitted (graph: {folder / JOBS_FILE})", flush=True)
    for s in record["reused"]:
        print(f"  {s:<10} finished already: reused, no job")
    for j in jobs:
        dep = f"  after {j['after']} ({j['dependency']})" if j.get("after") else ""
        task = f"  [{j['task']}]" if j.get("task") else ""
        print(f"  {j['stage']:<10} job {j['job_id']:<8} {j['resources']}{dep}{task}")
    if jobs:
        ids = ",".join(j["job_id"] for j in jobs)
        print(f"follow: squeue -j {ids}   |   scontrol show job JOBID   |   tail -f {jobs[0]['log']}")
        run_id = record["run"].split("/", 1)[1]
        print(f"resume (after a failure or scancel): the same command with run_id={run_id}", flush=True)


# --- following the jobs -----------------------------------------------------------------------------------


# what the launcher writes for a job the scheduler no longer knows (it forgets an ended job MinJobAge
# after its end; no accounting to ask), and for one it could not ask about (the controller was silent)
GONE, UNKNOWN = "GONE", "UNKNOWN"


def job_states(record: Dict[str, Any], seen: Optional[Dict[str, Dict[str, str]]] = None) -> Dict[str, Dict[str, str]]:
    """Each job's state as the scheduler has it now; a job it has forgotten keeps the state `seen` last
    (else GONE); one the controller did not answer about is UNKNOWN: ask again, it is not ended."""
    seen = {} if seen is None else seen
    states = {}
    for j in record["jobs"]:
        try:
            st = show_job(j["job_id"])
        except ControllerSilent as exc:
            st = {"JobState": UNKNOWN, "Reason": str(exc)}
        if st is None:
            st = seen.get(j["job_id"]) or {"JobState": GONE}
        elif st.get("JobState") != UNKNOWN:
            seen[j["job_id"]] = st
        states[j["job_id"]] = st
    return states


def outcome(
    record: Dict[str, Any], states: Dict[str, Dict[str, str]], finished: Optional[Dict[str, bool]] = None
) -> Tuple[int, Optional[str]]:
    """The run's exit code and, when it did not finish, the one line that says why. A stage whose
    manifest says it finished is done (`finished`); otherwise the job's end as the scheduler says it."""
    jobs, finished = record["jobs"], finished or {}
    run_id = record["run"].split("/", 1)[1]
    for i, j in enumerate(jobs):
        st = states[j["job_id"]]
        if finished.get(j["stage"]) or st.get("JobState") == "COMPLETED":
            continue
        code = st.get("ExitCode", "?")
        rest = [f"{k['stage']} (job {k['job_id']})" for k in jobs[i + 1 :] if k["stage"] != j["stage"]]
        after = f"; not run, as they depend on it: {', '.join(rest)}" if rest else ""
        if code.split(":")[0] == str(EXIT_UNFINISHED):
            return EXIT_UNFINISHED, (
                f"stage {j['stage']} (job {j['job_id']}) left items unfinished (exit 3){after}; "
                f"the same command with run_id={run_id} submits the rest and resumes them"
            )
        if st.get("JobState") == GONE:
            return 1, (
                f"stage {j['stage']} (job {j['job_id']}) is not finished (its manifest does not say complete) and "
                f"the scheduler no longer knows how its job ended (log {j['err']}){after}; the same command "
                f"with run_id={run_id} resumes it"
            )
        return 1, (
            f"stage {j['stage']} (job {j['job_id']}) {st.get('JobState', '?')} (exit {code}, log {j['err']}){after}"
        )
    return 0, None


def wait_for_jobs(
    cfg: RootConfig, record: Dict[str, Any], folder: Path, finished_stages: Callable[[], Dict[str, bool]]
) -> int:
    """Poll the scheduler until every job has ended (a requeued job is followed through its restarts);
    the run's result from its stage manifests first (`finished_stages()`, asked once the jobs have ended:
    whether each stage's manifest says it finished), the scheduler's record of each job second."""

    settled, seen, silent = 0, {}, False
    while True:
        states = job_states(record, seen)
        quiet = [st["Reason"] for st in states.values() if st.get("JobState") == UNKNOWN]
        if quiet and not silent:
            print(f"slurm: the controller does not answer ({quiet[0]}); asking again", file=sys.stderr, flush=True)
        elif silent and not quiet:
            print("slurm: the controller answers again", file=sys.stderr, flush=True)
        silent = bool(quiet)
        ended = all(s.get("JobState") in TERMINAL or s.get("JobState") == GONE for s in states.values())
        # twice in a row: a preempted job that requeues itself passes through an ended state first
        settled = settled + 1 if ended else 0
        if settled >= 2:
            break
        time.sleep(cfg.launcher.poll_s)
    finished = finished_stages()
    for j in record["jobs"]:
        st = states[j["job_id"]]
        j["state"] = st.get("JobState")
        j["exit_code"] = st.get("ExitCode")
        j["restarts"] = int(st.get("Restarts", "0") or 0)
        j["node_list"] = st.get("NodeList")
        j["num_tasks"] = st.get("NumTasks")
        j["stage_finished"] = bool(finished.get(j["stage"]))
    rc, line = outcome(record, states, finished)
    record["result"] = {"exit_code": rc, "line": line}
    record["servers"] = server_jobs(folder.parent / "servers")
    write_json_atomic(folder / JOBS_FILE, record)
    for j in record["jobs"]:
        done = "stage finished" if j["stage_finished"] else "stage not finished"
        print(
            f"  {j['stage']:<10} job {j['job_id']:<8} {j['state']} (exit {j['exit_code']}, restarts {j['restarts']}; "
            f"{done})"
        )
    for j in record["servers"]:
        print(f"  {'server':<10} job {j['job_id']:<8} {j['state']} ({j['group']} replica {j['index']})")
    if line:
        print_error(f"deepwriter: slurm: {line}")
    return rc


def server_jobs(servers_dir: Path) -> List[Dict[str, Any]]:
    """The managed replicas' own jobs the run's stage jobs submitted (serving.placement: slurm), each with
    its state as the scheduler has it now (GONE: forgotten; UNKNOWN: the controller did not answer)."""
    out = []
    # an array task's replicas are in a folder of their own (task-<i>)
    listed = [j for d in (servers_dir, *sorted(Path(servers_dir).glob("task-*"))) for j in submitted_jobs(d)]
    for j in listed:
        try:
            st = show_job(str(j["job_id"])) or {"JobState": GONE}
        except ControllerSilent:
            st = {"JobState": UNKNOWN}
        out.append({**j, "state": st.get("JobState"), "exit_code": st.get("ExitCode"), "node_list": st.get("NodeList")})
    return out


def read_jobs(run_dir: Path) -> Optional[Dict[str, Any]]:
    path = Path(run_dir) / "slurm" / JOBS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None

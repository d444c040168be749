"""The recipe submitted to a real SLURM (the one-node cluster of `make slurm-local`) with launcher=slurm:
every stage a job, SFT as one job of two ranks, the same records as a local run; synthesis as a job
array of two shards, one task requeued mid-shard, finishes with every pair once and the mix after both;
a bad partition or account stops before any submission. Jobs are read back from the scheduler
(`scontrol show job`), not from our own files."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deepwriter.cluster.jobs import TERMINAL as TERMINAL_STATES
from deepwriter.core.records import read_records
from deepwriter.testing.repo import REPO
from deepwriter.testing.slurm import job, scontrol, wait_until
from deepwriter.testing.synthesis import synthesis_overrides, write_pairs

pytestmark = pytest.mark.slow

STAGES = ["synthesize", "mix", "sft", "eval"]


def tiny(tmp_path: Path, cache: Path, runs: str) -> list:
    """The demo with the tiny random model in every role and small limits: each stage for real, in seconds."""
    return [
        "+recipe=demo",
        f"paths.runs_dir={tmp_path}/{runs}",
        f"paths.stage_store={tmp_path}/{runs}/_stages",
        f"paths.cache_dir={cache}",
        *(f"model@models.{r}=tiny-qwen3" for r in ("generator", "scorer", "student", "judge")),
        "synthesis.limit=2",
        "synthesis.max_steps=1",
        "synthesis.initial.max_new_tokens=16",
        "synthesis.refine.max_new_tokens=8",
        "sft.max_steps=2",
        "sft.save_steps=1",
        "sft.max_length=256",
        "sft.num_processes=2",
        "eval.benchmarks.demo.limit=2",
        "eval.benchmarks.demo.max_new_tokens=8",
        "logging.wandb_mode=disabled",
    ]


def train(tmp_path: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "deepwriter.train", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_requeued_soon(job_id: str) -> None:
    """Start a requeued job in 2 s instead of SLURM's wait (its BeginTime: the requeue + cred_expire, 121 s
    by default). Not at once: slurmd refuses a launch whose credential is no newer than the revocation of
    the job's previous run, in whole seconds, so a start in the requeue's second ends the job FAILED
    ("Killing non-startable batch JobId=N: Job credential revoked", exit 1; 2 of 4 runs of the demo test)."""
    scontrol("update", f"JobId={job_id}", "StartTime=now+2")


def jobs_of(run_dir: Path) -> list:
    return json.loads((run_dir / "slurm" / "jobs.json").read_text())["jobs"]


def without_timings(value):
    """Records as they are, but for the seconds they took."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not re.search(r"(_s|seconds|timings)$", k)}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def stage_files(runs: Path, stage: str, pattern: str) -> list:
    (path,) = (runs / "_stages" / stage).glob(pattern)
    return without_timings(list(read_records(path)))


def logged_losses(runs: Path) -> list:
    """(step, loss) of every line of the sft stage's train log (none before it starts)."""
    logs = list((runs / "_stages" / "sft").glob("*/train_log.jsonl"))
    rows = [json.loads(line) for line in logs[0].read_text().splitlines() if line.strip()] if logs else []
    return [(r["step"], r["loss"]) for r in rows]


# SFT long enough for a signal to land mid-training; saves only when told to (no save_steps step, no interval)
SIGNALLED_SFT = ["sft.max_steps=24", "sft.save_steps=1000", "sft.save_every_min=null"]


@pytest.mark.timeout(900)  # 86 s through SLURM (the sft job twice) and 27 s locally, measured on 2 shared cores
def test_the_demo_through_slurm_runs_every_stage_as_a_job_and_writes_a_local_runs_records(
    tmp_path, model_cache, slurm_cluster
):
    """Every stage a job; the sft job (two ranks) is told mid-training that it ends (`scancel
    --signal=USR1`, as SLURM's --signal=USR1@s does before a time limit): it saves the step it is in,
    requeues itself, resumes from that checkpoint and ends with the losses of the local run."""
    t0 = time.time()
    submit = ["run_id=r", "launcher=slurm", "launcher.wait=true", "launcher.poll_s=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out, err = open(tmp_path / "submit.out", "w+"), open(tmp_path / "submit.err", "w+")
    argv = [sys.executable, "-m", "deepwriter.train", *tiny(tmp_path, model_cache, "s"), *SIGNALLED_SFT, *submit]
    submitter = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out, stderr=err, text=True)
    run_dir = tmp_path / "s" / "demo" / "r"
    try:
        wait_until(lambda: len(logged_losses(tmp_path / "s")) >= 2, 600, "the sft job's second step", 0.1)
        sft_job = jobs_of(run_dir)[2]["job_id"]
        subprocess.run(["scancel", "--signal=USR1", sft_job], check=True)
        wait_until(lambda: job(sft_job)["Restarts"] == "1", 120, "the sft job requeued by itself")
        if job(sft_job)["JobState"] == "PENDING":
            start_requeued_soon(sft_job)
        submitter.wait(timeout=600)
    finally:
        if submitter.poll() is None:
            submitter.kill()
            subprocess.run(["scancel", *(j["job_id"] for j in jobs_of(run_dir))], capture_output=True)
    slurm_s = time.time() - t0
    out.seek(0), err.seek(0)
    done = subprocess.CompletedProcess(argv, submitter.returncode, out.read(), err.read())
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert done.stdout.strip().splitlines()[-1] == f"report: {run_dir / 'report.html'}"

    jobs = jobs_of(run_dir)
    assert [j["stage"] for j in jobs] == STAGES
    for i, j in enumerate(jobs):
        got = job(j["job_id"])  # the scheduler's own record of the job
        assert got["JobState"] == "COMPLETED" and got["ExitCode"] == "0:0", got
        assert got["JobName"] == f"deepwriter-demo-{j['stage']}"
        assert got["NumTasks"] == ("2" if j["stage"] == "sft" else "1"), (j["stage"], got["NumTasks"])
        assert j["dependency"] == (f"afterok:{jobs[i - 1]['job_id']}" if i else None)
        if i:  # it started once the job before it had ended
            assert got["StartTime"] >= job(jobs[i - 1]["job_id"])["EndTime"]
        assert f"job {j['job_id']} ({j['stage']}" in (run_dir / "slurm" / f"{j['job_id']}_0_log.out").read_text()
    for rank in (0, 1):  # one task per rank, in one job; each started twice
        log = (run_dir / "slurm" / f"{sft_job}_{rank}_log.out").read_text()
        assert f"job {sft_job} (sft, restart 0, rank {rank} of 2)" in log
        assert f"job {sft_job} (sft, restart 1, rank {rank} of 2)" in log
    assert job(sft_job)["Restarts"] == "1"
    rank0_err = (run_dir / "slurm" / f"{sft_job}_0_log.err").read_text()
    stopped = re.search(r"stopped by SIGUSR1 after step (\d+) of 24", rank0_err)
    assert stopped, "the sft job did not stop on the signal"
    signalled_at = int(stopped.group(1))
    sft = json.loads((run_dir / "sft" / "manifest.json").read_text())
    assert sft["counts"]["world_size"] == 2 and sft["counts"]["steps"] == 24
    # resumed from the checkpoint it saved on the signal (the only one: save_steps is past the end)
    assert 2 <= signalled_at < 24 and sft["counts"]["resumed_from_step"] == signalled_at

    # inside a job SLURM_JOB_ID is set, yet every job wrote to the run's one folder (named by the run's id)
    assert [p.name for p in (tmp_path / "s" / "demo").iterdir()] == ["r"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [manifest["stages"][s]["status"] for s in STAGES] == ["ran"] * 4  # every job's stage, one manifest
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    literal = re.search(r"window\.__REPORT = (\{.*?\});</script>", page).group(1)
    shown = json.loads(literal)["runs"][0]["jobs"]  # what the page's SLURM section renders
    assert [(j["stage"], j["job_id"], j["state"]) for j in shown["jobs"]] == [
        (j["stage"], j["job_id"], "COMPLETED") for j in jobs
    ]
    assert shown["result"] == {"exit_code": 0, "line": None}

    t0 = time.time()
    local = train(tmp_path, *tiny(tmp_path, model_cache, "l"), *SIGNALLED_SFT, "run_id=r")
    local_s = time.time() - t0
    assert local.returncode == 0, local.stderr[-3000:]
    local_manifest = json.loads((tmp_path / "l" / "demo" / "r" / "manifest.json").read_text())
    # the same content keys (config slice + inputs' keys): the jobs ran the stages of the local run ...
    assert {s: manifest["stages"][s]["key"] for s in STAGES} == {s: local_manifest["stages"][s]["key"] for s in STAGES}
    # ... and wrote the same records: trajectories, the SFT data, the losses, the judged eval items
    s, loc = tmp_path / "s", tmp_path / "l"
    assert stage_files(s, "synthesize", "*/shards/*.jsonl") == stage_files(loc, "synthesize", "*/shards/*.jsonl")
    (mix_s,), (mix_l,) = (list((r / "_stages" / "mix").glob("*/dataset/*.arrow")) for r in (s, loc))
    assert mix_s.read_bytes() == mix_l.read_bytes()
    trained = [json.loads(next((r / "_stages" / "sft").glob("*/manifest.json")).read_text()) for r in (s, loc)]
    losses = [(m["metrics"]["first_loss"], m["metrics"]["last_loss"], m["counts"]["tokens"]) for m in trained]
    assert losses[0] == losses[1]
    signalled, straight = logged_losses(s), logged_losses(loc)
    assert [st for st, _ in signalled] == [st for st, _ in straight] == list(range(1, 25))  # each step once
    assert [lo for _, lo in signalled] == pytest.approx([lo for _, lo in straight], rel=1e-5)
    print(f"sft signalled at step {signalled_at}: losses {signalled}; local, uninterrupted: {straight}")
    assert stage_files(s, "eval", "*/items/demo.jsonl") == stage_files(loc, "eval", "*/items/demo.jsonl")
    print(f"slurm demo: {len(jobs)} jobs {[j['job_id'] for j in jobs]} in {slurm_s:.1f} s; local run {local_s:.1f} s")


def shared_fleet_synthesis(tmp_path: Path, cache: Path, pairs: Path, n: int, url: str) -> list:
    """Synthesis and the mix, the generator and scorer a fleet the user names (`endpoint.base_urls`): the
    loopback server over the tiny model that the test runs. One pair at a time: the tiny model's first
    trajectory is discarded before any scoring, so a pair is one request."""
    runs = tmp_path / "runs"
    fleet = [f"endpoint.base_urls=[{url}]"]
    return [
        *synthesis_overrides(runs, cache, pairs, n, "a", fleet, stages="synthesize,mix", in_flight=1),
        f"paths.stage_store={runs}/_stages",
        "model@models.student=tiny-qwen3",
        # no dtype probe (a second of matmuls) in each of the jobs' starts
        *(f"models.{role}.dtype=float32" for role in ("generator", "scorer", "student", "judge")),
    ]


@pytest.mark.timeout(600)
def test_a_synthesis_array_task_requeued_mid_shard_writes_every_pair_once_and_the_mix_waits_for_both(
    tmp_path, model_cache, slurm_cluster, tiny_model
):
    """synthesis.shards=2 under launcher=slurm: a job array of two tasks, each writing its own shard, and the
    mix job after the whole array (afterok). Task 1 is told mid-shard that it ends (`scancel --signal=USR1`,
    as before a preemption or its time limit): it requeues itself and resumes its shard after the records
    it had written; every pair is written once,
    and the mix starts only after both tasks have ended."""
    from deepwriter.llm.hf import TransformersGenerator, TransformersScorer
    from deepwriter.testing.loopback import start_server

    n = 8  # shard 0 holds p001, p002, p004, p005; shard 1 the other 4
    pairs = write_pairs(tmp_path / "pairs.jsonl", n)
    model, tok = tiny_model
    fleet = start_server(
        TransformersGenerator(model, tok, "tiny-qwen3"), TransformersScorer(model, tok, "tiny-qwen3"), latency_s=0.5
    )
    shard = tmp_path / "runs" / "_stages" / "synthesize"
    ids_in = lambda i: [r["id"] for p in shard.glob(f"*/shards/shard-0000{i}-of-00002.jsonl") for r in read_records(p)]
    ids: list = []
    ours: list = []  # the jobs to cancel on the way out, once submitted
    try:
        submitted = train(
            tmp_path,
            *shared_fleet_synthesis(tmp_path, model_cache, pairs, n, fleet.url),
            "launcher=slurm",
            "synthesis.shards=2",
        )
        assert submitted.returncode == 0, submitted.stderr[-3000:]
        task0, task1, mix = jobs_of(tmp_path / "runs" / "demo" / "a")
        array = task0["array_job_id"]
        ours += [array, mix["job_id"]]
        assert (task0["job_id"], task1["job_id"], task0["task"], task1["task"]) == (
            f"{array}_0",
            f"{array}_1",
            "synthesis.shard=0/2",
            "synthesis.shard=1/2",
        )
        assert mix["stage"] == "mix" and job(mix["job_id"])["Dependency"].startswith(f"afterok:{array}")
        wait_until(lambda: ids_in(1), 300, "the first pair of shard 1 written by task 1", 0.2)
        # the signal SLURM sends before it preempts a job or ends it at its time limit (--signal=USR1@s):
        # submitit's handler stops the stage and requeues the task itself
        subprocess.run(["scancel", "--signal=USR1", task1["job_id"]], check=True)
        written = b"".join(p.read_bytes() for p in shard.glob("*/shards/shard-00001-of-00002.jsonl"))
        written = written[: written.rfind(b"\n") + 1]  # its whole records (a torn last one is cut on resume)
        at_requeue = written.count(b"\n")
        requeued = lambda: job(task1["job_id"])["Restarts"] == "1" and job(task1["job_id"])["JobState"]  # noqa: E731
        state = wait_until(lambda: requeued() in ("PENDING", "RUNNING", "COMPLETED") and requeued(), 120, "a requeue")
        if state == "PENDING":
            start_requeued_soon(task1["job_id"])
        wait_until(lambda: job(mix["job_id"])["JobState"] in TERMINAL_STATES, 300, "the mix job to end", 1)
        ids = ids_in(0) + ids_in(1)
    finally:
        fleet.stop()
        if ours:
            subprocess.run(["scancel", *ours], capture_output=True)
    got = {k: job(j["job_id"]) for k, j in (("task0", task0), ("task1", task1), ("mix", mix))}
    assert [g["JobState"] for g in got.values()] == ["COMPLETED"] * 3, got
    assert (got["task0"]["Restarts"], got["task1"]["Restarts"]) == ("0", "1")
    assert at_requeue < 4, "the requeue landed after task 1's shard was done"
    lost, duplicated = n - len(set(ids)), len(ids) - len(set(ids))
    assert sorted(ids) == [f"p{i:03d}" for i in range(n)]  # every pair once: none lost, none twice
    (resumed,) = shard.glob("*/shards/shard-00001-of-00002.jsonl")
    assert resumed.read_bytes().startswith(written)  # the records written before the requeue kept, not redone
    assert got["mix"]["StartTime"] >= max(got["task0"]["EndTime"], got["task1"]["EndTime"])
    log = Path(task1["log"]).read_text()
    assert "(synthesize, restart 0" in log and "(synthesize, restart 1" in log
    run_dir = tmp_path / "runs" / "demo" / "a"
    stage = json.loads((run_dir / "synthesize" / "manifest.json").read_text())
    assert stage["status"] == "complete" and stage["counts"]["pairs"] == n
    mixed = json.loads((run_dir / "mix" / "manifest.json").read_text())
    assert mixed["counts"]["not_kept_by_search"] + mixed["counts"]["loaded_synthetic"] == n  # it read both shards
    print(
        f"array {array}: task 1 signalled with {at_requeue} of its 4 pairs written; {len(ids)} records after "
        f"({len(set(ids))} distinct): lost {lost}, duplicated {duplicated}; tasks ended "
        f"{got['task0']['EndTime']} / {got['task1']['EndTime']}, mix started {got['mix']['StartTime']}; "
        f"mix counts {mixed['counts']}"
    )


@pytest.mark.timeout(300)
def test_a_bad_partition_or_account_stops_before_any_submission_with_one_line(tmp_path, model_cache, slurm_cluster):
    base = [*tiny(tmp_path, model_cache, "b"), "run_id=b", "launcher=slurm"]
    cases = (
        (["launcher.partition=nosuch"], "launcher.partition: no partition 'nosuch' on this cluster; expected one of"),
        (
            ["launcher.jobs.sft.partition=restricted", "launcher.account=nosuch"],
            "launcher.account: partition 'restricted' takes jobs of accounts ['deepwriter'] only; got 'nosuch'",
        ),
    )
    for extra, line in cases:
        done = train(tmp_path, *base, *extra, timeout=240)
        errors = [x for x in done.stderr.splitlines() if x.startswith("deepwriter:")]
        assert done.returncode == 2 and len(errors) == 1, done.stderr[-3000:]
        assert errors[0].startswith(f"deepwriter: config error: {line}"), errors[0]
        assert not (tmp_path / "b" / "demo" / "b" / "slurm").exists()  # submitit writes there before any sbatch
        assert "submitted" not in done.stdout


@pytest.mark.timeout(300)  # ~15 s: one job that fails at once, the next cancelled by the scheduler
def test_a_failed_job_cancels_the_jobs_after_it_and_the_run_says_so_in_one_line(tmp_path, model_cache, slurm_cluster):
    """The pairs file has a bad record: it passes the submission's checks (it exists), and the synthesize
    job stops on it (exit 2). The mix job, which depends on it, never runs; launcher.wait exits non-zero."""
    pairs = write_pairs(tmp_path / "pairs.jsonl", 2, extra_lines=["{not json"])
    done = train(
        tmp_path,
        *tiny(tmp_path, model_cache, "f"),
        "recipe.stages=[synthesize,mix]",
        f"data.pairs.path={pairs}",
        "data.pairs.fields={id: id, x: request, y: answer, category: category}",
        "run_id=f",
        "launcher=slurm",
        "launcher.wait=true",
        "launcher.poll_s=1",
    )
    run_dir = tmp_path / "f" / "demo" / "f"
    synth, mix = jobs_of(run_dir)
    assert done.returncode == 1, (done.stdout[-2000:], done.stderr[-2000:])
    assert job(synth["job_id"])["JobState"] == "FAILED" and job(synth["job_id"])["ExitCode"] == "2:0"
    assert job(mix["job_id"])["JobState"] == "CANCELLED"  # kill-on-invalid-dep: it never started
    assert job(mix["job_id"])["StartTime"] in ("None", "Unknown") or job(mix["job_id"])["RunTime"] == "00:00:00"
    lines = [x for x in done.stderr.splitlines() if x.startswith("deepwriter: slurm:")]
    assert lines == [
        f"deepwriter: slurm: stage synthesize (job {synth['job_id']}) FAILED (exit 2:0, log {synth['err']}); "
        f"not run, as they depend on it: mix (job {mix['job_id']})"
    ], done.stderr[-2000:]
    assert "pairs.jsonl:3" in Path(synth["err"]).read_text()  # the job's own one line names file:line
    recorded = json.loads((run_dir / "slurm" / "jobs.json").read_text())
    assert recorded["result"]["exit_code"] == 1 and recorded["result"]["line"] == lines[0].removeprefix(
        "deepwriter: slurm: "
    )


def test_where_replicas_run_and_what_a_stage_job_keeps_of_the_launcher():
    """serving.placement auto: a job of its own inside a stage job of launcher=slurm (and in the plan of
    one), a local process otherwise; a stage job keeps the server jobs' launcher keys, not the rest."""
    from deepwriter.cluster.launcher import _forwarded
    from deepwriter.cluster.requests import server_request, serves_as_jobs
    from deepwriter.config.compose import compose
    from deepwriter.config.root import to_typed

    def cfg(*o):
        return to_typed(compose(["+recipe=demo", *o]))

    assert serves_as_jobs(cfg(), in_stage_job=False) is False
    assert serves_as_jobs(cfg(), in_stage_job=True) is True
    assert serves_as_jobs(cfg("launcher=slurm"), in_stage_job=False) is True
    assert serves_as_jobs(cfg("serving.placement=local"), in_stage_job=True) is False
    assert serves_as_jobs(cfg("serving.placement=slurm"), in_stage_job=False) is True
    argv = ["launcher=slurm", "launcher.wait=true", "launcher.jobs.server.partition=gpu", "launcher.account=a"]
    argv += ["launcher.jobs.sft.partition=x", "run_id=r", "synthesis.limit=2"]
    assert _forwarded(argv) == ["launcher.jobs.server.partition=gpu", "launcher.account=a", "synthesis.limit=2"]
    c = cfg("launcher.jobs.server.partition=gpu", "launcher.jobs.server.cpus_per_task=8", "launcher.account=a")
    req = server_request(c, "g", dataclasses.replace(c.models.generator.serving, tensor_parallel=4), ask_cluster=False)
    assert req == {
        "job_name": "deepwriter-demo-serve-g",
        "time": 60,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": 8,
        "partition": "gpu",
        "account": "a",
        "gpus_per_node": 4,
    }


def test_a_controller_that_does_not_answer_leaves_a_job_unknown_never_ended(tmp_path, slurm_cluster, monkeypatch):
    """The real scontrol, pointed at a controller port nothing listens on (as while slurmctld restarts):
    a running replica's job is not taken for ended, the launcher does not take a stage job for ended,
    and once the controller answers the job's real end is seen."""
    from deepwriter.cluster.jobs import ControllerSilent, ReplicaJob, SlurmSpawner, show_job
    from deepwriter.cluster.launcher import job_states
    from deepwriter.testing.slurm import silent_controller_conf

    submitted = subprocess.run(
        ["sbatch", "--parsable", "-o", "/dev/null", "-J", "deepwriter-silence", "--wrap", "sleep 120"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    job_id = submitted.stdout.strip()
    try:
        wait_until(lambda: job(job_id)["JobState"] == "RUNNING", 60, "the job to run")
        spawner = SlurmSpawner(lambda rep: {}, tmp_path, ask_every_s=0)
        handle = ReplicaJob(job_id, tmp_path / "x.addr")
        assert spawner.ended(handle) is None and spawner.waiting(handle) is None  # RUNNING, answered

        monkeypatch.setenv("SLURM_CONF", str(silent_controller_conf(tmp_path)))
        with pytest.raises(ControllerSilent, match="Unable to contact slurm controller"):
            show_job(job_id)
        assert spawner.ended(handle) is None  # unknown: ask again, not "gone from the scheduler"
        assert handle.silent_since is not None and handle.state == "RUNNING"
        record = {"run": "demo/x", "jobs": [{"stage": "synthesize", "job_id": job_id}]}
        assert job_states(record)[job_id]["JobState"] == "UNKNOWN"  # not GONE: the wait goes on

        monkeypatch.delenv("SLURM_CONF")
        subprocess.run(["scancel", job_id], check=True, timeout=30)
        why = wait_until(lambda: spawner.ended(handle), 60, "the cancelled job seen as ended")
        assert re.match(rf"job {job_id} (CANCELLED|COMPLETING) \(exit ", why), why  # scancel's end, seen
        assert handle.silent_since is None
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)


def test_the_sft_job_asks_for_memory_and_its_ranks_work_with_one_gpu_per_task():
    """The sft job asks for its nodes' memory (--mem=0 unless launcher.jobs.sft.mem_gb says); a task
    that sees only its own GPU (a cluster binding one GPU per task) is local rank 0 of 1, one that sees
    the node's GPUs keeps SLURM's local rank."""
    from types import SimpleNamespace

    from deepwriter.cluster.launcher import rank_env
    from deepwriter.cluster.requests import job_request
    from deepwriter.config.compose import compose
    from deepwriter.config.root import to_typed

    assert job_request(to_typed(compose(["+recipe=demo"])), "sft")["mem"] == "0"
    assert job_request(to_typed(compose(["+recipe=demo", "launcher.jobs.sft.mem_gb=64"])), "sft")["mem"] == "65536M"
    assert "mem" not in job_request(to_typed(compose(["+recipe=demo"])), "mix")  # the partition's default
    task = SimpleNamespace(rank=5, world_size=8, local_rank=1, local_world_size=4, master_addr="n1", master_port=29500)
    whole_node = rank_env(task, "0,1,2,3")
    assert (whole_node["LOCAL_RANK"], whole_node["LOCAL_WORLD_SIZE"], whole_node["RANK"]) == ("1", "4", "5")
    bound = rank_env(task, "1")  # the task's own GPU is its cuda:0
    assert (bound["LOCAL_RANK"], bound["LOCAL_WORLD_SIZE"], bound["RANK"], bound["WORLD_SIZE"]) == ("0", "1", "5", "8")
    assert rank_env(task, None)["LOCAL_RANK"] == "1"  # no GPUs at all (the CPU): SLURM's

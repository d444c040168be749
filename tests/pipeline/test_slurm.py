"""The recipe submitted to a real SLURM (the one-node cluster of `make slurm-local`) with launcher=slurm:
every stage a job, SFT as one job of two ranks, the same records as a local run; a synthesis job
cancelled mid-stage and requeued finishes with every pair once; a bad partition or account stops before
any submission. Jobs are read back from the scheduler (`scontrol show job`), not from our own files."""

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

from deepwriter.cluster.jobs import submitted_jobs
from deepwriter.core.records import read_records
from deepwriter.serving.fleet import port_free
from deepwriter.testing.repo import REPO
from deepwriter.testing.slurm import job, scontrol, wait_until
from deepwriter.testing.synthesis import LOOPBACK_COMMAND, served_synthesis_overrides, write_pairs
from deepwriter.testing.vllm_server import free_port

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
            scontrol("update", f"JobId={sft_job}", "StartTime=now")  # SLURM delays a requeued job's start
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


def served_synthesis(tmp_path: Path, cache: Path, pairs: Path, n: int, port: int) -> list:
    """Synthesis alone, its generator and scorer served by the job's own managed server (the loopback
    over the tiny model, 0.3 s a request: slow enough to cancel the job mid-stage)."""
    runs = tmp_path / "runs"
    return [*served_synthesis_overrides(runs, cache, pairs, n, port, "q"), f"paths.stage_store={runs}/_stages"]


def shard_ids(tmp_path: Path) -> list:
    shards = list((tmp_path / "runs" / "_stages" / "synthesize").glob("*/shards/*.jsonl"))
    return [r["id"] for p in shards for r in read_records(p)]


@pytest.mark.timeout(600)  # ~60-90 s: two starts of the job and its server, 10 pairs at 0.3 s a request
def test_a_synthesis_job_cancelled_mid_stage_then_requeued_writes_every_pair_once(tmp_path, model_cache, slurm_cluster):
    n = 10
    pairs = write_pairs(tmp_path / "pairs.jsonl", n)
    port = free_port()
    submitted = train(tmp_path, *served_synthesis(tmp_path, model_cache, pairs, n, port), "launcher=slurm")
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    (synth,) = jobs_of(tmp_path / "runs" / "demo" / "q")
    job_id = synth["job_id"]
    try:
        wait_until(lambda: len(shard_ids(tmp_path)) >= 2, 300, "two pairs written by the job")
        before = len(shard_ids(tmp_path))
        subprocess.run(["scancel", job_id], check=True)
        wait_until(lambda: job(job_id)["JobState"] == "CANCELLED", 120, "the job cancelled")
        wait_until(lambda: port_free("127.0.0.1", port), 60, "the job's server gone with it")
        at_cancel = len(shard_ids(tmp_path))
        assert at_cancel < n, "the cancel landed after the stage's work"
        scontrol("requeue", job_id)
        scontrol("update", f"JobId={job_id}", "StartTime=now")  # SLURM delays a requeued job's start
        wait_until(lambda: job(job_id)["JobState"] in ("COMPLETED", "FAILED"), 400, "the requeued job to end", 1)
    finally:
        subprocess.run(["scancel", job_id], capture_output=True)
    got = job(job_id)
    assert got["JobState"] == "COMPLETED" and got["Restarts"] == "1", got
    ids = shard_ids(tmp_path)
    lost, duplicated = n - len(set(ids)), len(ids) - len(set(ids))
    assert sorted(ids) == [f"p{i:03d}" for i in range(n)]  # every pair once: none lost, none twice
    log = Path(synth["log"]).read_text()
    assert f"job {job_id} (synthesize, restart 0" in log and f"job {job_id} (synthesize, restart 1" in log
    stage = json.loads((tmp_path / "runs" / "demo" / "q" / "synthesize" / "manifest.json").read_text())
    assert stage["counts"]["pairs"] == n and stage["timing"]["resumed"] is True
    # the server was a job of its own each time (serving.placement auto), cancelled with its stage job's try
    servers = [j["job_id"] for j in submitted_jobs(tmp_path / "runs" / "demo" / "q" / "servers")]
    assert len(servers) == 2 and job_id not in servers
    assert [job(s)["JobState"] for s in servers] == ["CANCELLED", "CANCELLED"]
    assert job(servers[0])["EndTime"] <= job(servers[1])["StartTime"]
    print(
        f"requeue: {before} pairs when scancel was sent, {at_cancel} when the job had ended, {len(ids)} after the "
        f"requeue ({len(set(ids))} distinct); lost {lost}, duplicated {duplicated}"
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


@pytest.mark.timeout(400)  # ~40-60 s: the synthesize job, and its server as a job of its own
def test_under_launcher_slurm_the_managed_replica_is_a_job_of_its_own_and_gone_after(
    tmp_path, model_cache, slurm_cluster
):
    n = 4
    pairs = write_pairs(tmp_path / "pairs.jsonl", n)
    port = free_port()
    anywhere = LOOPBACK_COMMAND.replace('"--latency-s"', '"--host","{host}","--latency-s"')  # binds 0.0.0.0 in a job
    served = [*served_synthesis(tmp_path, model_cache, pairs, n, port), "synthesis.limit=4"]
    served += [f"models.{r}.serving.command={anywhere}" for r in ("generator", "scorer")]
    t0 = time.time()
    done = train(tmp_path, *served, "launcher=slurm", "launcher.wait=true", "launcher.poll_s=1", timeout=360)
    took = time.time() - t0
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    run_dir = tmp_path / "runs" / "demo" / "q"
    assert sorted(shard_ids(tmp_path)) == [f"p{i:03d}" for i in range(n)]  # every pair once

    record = json.loads((run_dir / "slurm" / "jobs.json").read_text())
    ((synth,), (server,)) = record["jobs"], record["servers"]
    assert (server["group"], server["index"], server["state"]) == ("tiny-qwen3", 0, "CANCELLED")  # close()'s scancel
    got = job(server["job_id"])  # the scheduler's record: a job of its own, not a step of the stage job
    assert got["JobName"] == "deepwriter-demo-serve-tiny-qwen3" and got["JobState"] == "CANCELLED", got
    assert server["job_id"] != synth["job_id"] and job(synth["job_id"])["JobState"] == "COMPLETED"
    assert got["EndTime"] <= job(synth["job_id"])["EndTime"]  # stopped before the stage job ended
    squeued = subprocess.run(["squeue", "-h", "-j", server["job_id"]], capture_output=True, text=True)
    assert squeued.stdout.strip() == "" and port_free("127.0.0.1", port)
    servers = run_dir / "servers"
    assert (servers / "tiny-qwen3-0.addr").read_text().split() == [f"{got['NodeList']}:{port}", server["job_id"]]
    assert "--host 0.0.0.0" in (servers / "tiny-qwen3-0.log").read_text()
    assert json.loads((servers / "fleet.json").read_text())["running"] == {}
    assert server["log"] == str(servers / "tiny-qwen3-0.log")
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    shown = json.loads(re.search(r"window\.__REPORT = (\{.*?\});</script>", page).group(1))["runs"][0]["jobs"]
    assert [(j["job_id"], j["state"]) for j in shown["servers"]] == [(server["job_id"], "CANCELLED")]
    serving = json.loads((run_dir / "serving.json").read_text())  # what the stage job's fleet did
    assert "replica 0: port %d, a SLURM job of its own" % port in serving["layout"]
    assert serving["groups"]["tiny-qwen3"]["restarts"] == 0 and len(serving["groups"]["tiny-qwen3"]["startup_s"]) == 1
    print(f"replica as a job: {n} pairs in {took:.1f} s through SLURM; server job {server['job_id']}")


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

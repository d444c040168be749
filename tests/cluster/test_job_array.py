"""A stage run as a SLURM job array (synthesis.shards under launcher=slurm), the parts that need no
cluster: each task's managed replicas in a folder of their own, and the run's result read from the
tasks' ends. The array on the real scheduler: tests/pipeline/test_slurm.py."""

from __future__ import annotations

import pytest

from deepwriter.cluster.launcher import EXIT_UNFINISHED, outcome, server_jobs
from deepwriter.core.contract import JOB_ENV
from deepwriter.pipeline.runner import run_serving
from deepwriter.testing.repo import compose_typed
from deepwriter.testing.synthesis import served_synthesis_overrides


def test_each_array_task_keeps_its_replicas_apart_and_the_run_lists_them_all(tmp_path, monkeypatch):
    """Two tasks of one array start replica 0 of the same group: each in its own folder (its address,
    log and job list), so neither takes the other's replica for a former job of its own and cancels it."""
    served = served_synthesis_overrides(tmp_path, tmp_path, tmp_path / "pairs.jsonl", 2, 8100, "a")
    cfg = compose_typed(*served, "serving.placement=slurm")
    run_dir = tmp_path / "run"
    monkeypatch.setenv(JOB_ENV, "synthesize")
    fleets = {}
    for task in ("0", "1"):
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", task)
        fleets[task] = run_serving(cfg, run_dir, []).fleet
    assert {t: f.log_dir for t, f in fleets.items()} == {t: run_dir / "servers" / f"task-{t}" for t in "01"}
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    assert run_serving(cfg, run_dir, []).fleet.log_dir == run_dir / "servers"  # a job of its own, not an array
    for task in ("0", "1"):  # what each task's fleet logged of the replica jobs it submitted
        (run_dir / "servers" / f"task-{task}").mkdir(parents=True)
        line = f'{{"group": "tiny-qwen3", "index": 0, "job_id": "no-such-{task}", "submitted": 0}}\n'
        (run_dir / "servers" / f"task-{task}" / "jobs.jsonl").write_text(line)
    monkeypatch.setattr("deepwriter.cluster.launcher.show_job", lambda job_id: None)  # forgotten by the scheduler
    assert [(j["job_id"], j["state"]) for j in server_jobs(run_dir / "servers")] == [
        ("no-such-0", "GONE"),
        ("no-such-1", "GONE"),
    ]


def test_an_array_task_that_left_pairs_unfinished_names_itself_and_the_jobs_after_the_array():
    record = {
        "run": "demo/a",
        "jobs": [
            {"stage": "synthesize", "job_id": "7_0", "err": "7_0.err", "task": "synthesis.shard=0/2"},
            {"stage": "synthesize", "job_id": "7_1", "err": "7_1.err", "task": "synthesis.shard=1/2"},
            {"stage": "mix", "job_id": "8", "err": "8.err"},
        ],
    }
    states = {
        "7_0": {"JobState": "FAILED", "ExitCode": "3:0"},
        "7_1": {"JobState": "COMPLETED", "ExitCode": "0:0"},
        "8": {"JobState": "CANCELLED", "ExitCode": "0:0"},
    }
    rc, line = outcome(record, states, finished={})
    assert rc == EXIT_UNFINISHED
    assert line == (
        "stage synthesize (job 7_0) left items unfinished (exit 3); not run, as they depend on it: mix (job 8); "
        "the same command with run_id=a submits the rest and resumes them"
    )
    # the stage's manifest says it finished (the tasks' last writes it): the run is done, whatever the jobs say
    assert outcome(record, states, finished={"synthesize": True, "mix": True}) == (0, None)


def test_an_array_larger_than_the_clusters_max_array_size_is_refused_with_one_line(slurm_cluster):
    from deepwriter.cluster.launcher import check_arrays
    from deepwriter.config.root import ConfigError

    tasks = [f"synthesis.shard={i}/2000" for i in range(2000)]
    with pytest.raises(ConfigError) as refused:
        check_arrays([{"stage": "synthesize", "array": tasks}, {"stage": "mix"}])
    assert str(refused.value) == (
        "launcher.jobs.synthesize: a job array of 2000 tasks (synthesis.shard=0/2000 .. synthesis.shard=1999/2000) "
        "is more than this cluster's MaxArraySize (1001, scontrol show config) allows"
    )
    check_arrays([{"stage": "synthesize", "array": tasks[:64]}])  # 64 fit

"""Each SLURM job's requeue allowance from the plan's projected hours and the partition's time limit; a
graph that cannot finish is refused with one line naming the key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deepwriter.cluster.time_limits import job_times, parse_slurm_minutes, partition_limits
from deepwriter.config.root import ConfigError
from deepwriter.testing.repo import REPO, compose_typed


@pytest.mark.parametrize(
    "text, minutes",
    [("infinite", None), ("30", 30), ("1:30:00", 90), ("2-00:00:00", 2880), ("10:30", 11), ("1-12:00:00", 2160)],
)
def test_slurm_time_limits_read_in_minutes(text, minutes):
    assert parse_slurm_minutes(text) == minutes


def test_requeues_follow_the_projected_hours_and_the_time_limit():
    cfg = compose_typed("+recipe=full", "launcher=slurm", "launcher.jobs.synthesize.time_min=2880")
    stages = ["synthesize", "sft"]
    # 224 h x 1.25 = 280 h = 5.8 jobs of 48 h: 6 jobs, 5 requeues; 9 h fits in one (one spare requeue)
    times = job_times(cfg, stages, {"synthesize": 224.0, "sft": 9.0}, {"": 2880})
    assert (times["synthesize"].jobs_needed, times["synthesize"].requeues) == (6, 5)
    assert (times["sft"].jobs_needed, times["sft"].requeues) == (1, 1)
    assert "projected 224.0 h (+25%): 6 job(s) of 2880 min, 5 requeue(s) allowed" == times["synthesize"].text()


def test_a_graph_that_cannot_finish_is_refused_with_one_line():
    cfg = compose_typed("+recipe=full", "launcher=slurm", "launcher.max_requeues=3")
    with pytest.raises(ConfigError, match=r"^launcher.jobs.synthesize.time_min: the synthesize job cannot finish: "):
        job_times(cfg, ["synthesize"], {"synthesize": 224.0}, {"": None})
    cfg = compose_typed("+recipe=full", "launcher=slurm", "launcher.jobs.sft.partition=gpu")
    with pytest.raises(ConfigError, match=r"^launcher.jobs.sft.time_min: 2880 min is above the time limit of "):
        job_times(cfg, ["sft"], {"sft": 9.0}, {"gpu": 1440, "": None})


@pytest.mark.slow  # two plan commands, ~5 s
def test_the_plan_prints_each_jobs_allowance_and_refuses_the_issues_graph():
    """The issue's numbers: 3 requeues of 48 h (192 h) against a synthesis the plan projects at ~224 h."""
    cmd = [sys.executable, "-m", "deepwriter.plan", "+recipe=full", "launcher=slurm"]
    ok = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "5 requeue(s) allowed" in ok.stdout.split("deepwriter-full-synthesize")[1].splitlines()[1]
    bad = subprocess.run([*cmd, "launcher.max_requeues=3"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr[-2000:]
    assert "the synthesize job cannot finish" in bad.stderr


def test_the_clusters_partition_limits_are_read_from_sinfo(slurm_cluster):
    limits = partition_limits()
    listed = subprocess.run(["sinfo", "-h", "-o", "%P %l"], capture_output=True, text=True).stdout.split("\n")
    default = next(line.split()[0].rstrip("*") for line in listed if line.split() and line.split()[0].endswith("*"))
    assert default in limits and limits[""] == limits[default]


def test_a_synthesis_split_into_shards_is_a_job_array_sharing_the_projected_hours():
    """synthesis.shards=8: the synthesize job is an array of 8 tasks (task i: synthesis.shard=i/8), each
    projected an eighth of the stage's hours; a graph refused as one job (224 h > 4 jobs of 48 h) fits."""
    from deepwriter.cluster.launcher import graph_text, job_graph
    from deepwriter.pipeline.runner import stage_arrays

    cfg = compose_typed("+recipe=full", "launcher=slurm", "launcher.max_requeues=3", "synthesis.shards=8")
    arrays = stage_arrays(cfg)
    assert arrays == {"synthesize": [f"synthesis.shard={i}/8" for i in range(8)]}
    synth, mix = job_graph(cfg, ["synthesize", "mix"], {"synthesize": 224.0, "mix": 0.01}, arrays)
    assert synth["array"] == arrays["synthesize"] and "array" not in mix and mix["after"] == "synthesize"
    assert (synth["projected_h"], synth["requeues"]) == (28.0, 1)  # 28 h x 1.25 in one job of 48 h
    text = graph_text([synth, mix])
    assert "a job array of 8 tasks, each its own part: synthesis.shard=0/8 .. synthesis.shard=7/8" in text
    assert "projected 28.0 h (+25%): 1 job(s) of 2880 min, 1 requeue(s) allowed (a task; 224.0 h over 8 tasks)" in text
    with pytest.raises(ConfigError, match="the synthesize job cannot finish"):  # the same stage as one job
        job_graph(cfg, ["synthesize"], {"synthesize": 224.0}, {})

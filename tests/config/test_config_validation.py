"""Validation before any work, through the real CLI: every value outside its declared range or
choices (deepwriter.core.schema), the rules that tie fields together, and the stages' own input checks stop
the run with exit 2 and one line naming the key, and no stage folder is made."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deepwriter.testing.repo import REPO

CASES = [
    # (overrides, the key the message must name, words it must hold)
    (["synthesis.num_candidates=0"], "synthesis.num_candidates", "expected >= 1"),
    (["synthesis.clip_min=1", "synthesis.clip_max=0"], "synthesis.clip_min", "is not below synthesis.clip_max"),
    (["synthesis.refine.temperature=0"], "synthesis.num_candidates", "would all be the same text"),
    (["synthesis.shard=3/2"], "synthesis.shard", "0 <= i < n"),
    (["synthesis.stop_threshold=nan"], "synthesis.stop_threshold", "finite"),
    (["synthesis.initial.top_p=1.5"], "synthesis.initial.top_p", "expected <= 1.0"),
    (["synthesis.max_unfinished_share=2"], "synthesis.max_unfinished_share", "expected <= 1.0"),
    (["eval.benchmarks.demo.limit=-1"], "eval.benchmarks.demo.limit", "expected >= 1"),
    (["eval.benchmarks.demo.kind=longbench"], "eval.benchmarks.demo.kind", "expected one of"),
    (["eval.model_under_test=teacher"], "eval.model_under_test", "expected one of ['sft', 'student']"),
    (["sft.max_length=0"], "sft.max_length", "expected >= 1"),
    (["sft.learning_rate=-1"], "sft.learning_rate", "expected > 0.0"),
    (["sft.max_steps=0"], "sft.max_steps", "expected -1"),
    (["sft.launcher=slurm"], "sft.launcher", "expected one of ['torchrun', 'deepspeed']"),
    (["sft.lr_scheduler=warmup"], "sft.lr_scheduler", "expected one of"),
    (["sft.global_batch_size=7", "sft.per_device_batch_size=2"], "sft.global_batch_size", "not a multiple"),
    (["models.scorer.endpoint.logprobs_api=vllm"], "models.scorer.endpoint.logprobs_api", "expected one of"),
    (["models.generator.endpoint.max_concurrency=0"], "models.generator.endpoint.max_concurrency", "expected >= 1"),
    (["data.queries.paired_extra_share=1.5"], "data.queries.paired_extra_share", "expected <= 1.0"),
    (["data.mix.trajectory_field=z1"], "data.mix.trajectory_field", "expected one of ['z_final', 'z0']"),
    (["logging.wandb_mode=sometimes"], "logging.wandb_mode", "expected one of"),
    (["data.mix.dedup.num_perm=0"], "data.mix.dedup.num_perm", "expected >= 1"),
    (["data.mix.drop_above_quantile=1.5"], "data.mix.drop_above_quantile", "expected <= 1.0"),
    (["data.quotas.max_per_category=0"], "data.quotas.max_per_category", "expected >= 1"),
    (["EMPTY_PAIRS"], "data.pairs", "no usable pair"),
]


@pytest.mark.parametrize(
    "overrides, key, words", CASES, ids=[c[1] + ("-empty" if c[0] == ["EMPTY_PAIRS"] else "") for c in CASES]
)
def test_bad_values_stop_before_any_work_naming_the_key(tmp_path, overrides, key, words):
    if overrides == ["EMPTY_PAIRS"]:
        empty = tmp_path / "pairs.jsonl"
        empty.write_text("\n")
        overrides = [f"data.pairs.path={empty}"]
    runs = tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "deepwriter.train", "+recipe=demo", f"paths.runs_dir={runs}", "run_id=v", *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    lines = [x for x in done.stderr.splitlines() if x.startswith("deepwriter:")]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert key in lines[0] and words in lines[0], lines[0]
    assert not (runs / "_stages").exists()  # no stage began
    assert "Traceback" not in done.stderr

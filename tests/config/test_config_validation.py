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
    # nonsense that used to start the stage: the search's counts have upper bounds a real run could use
    (["synthesis.num_candidates=1000000"], "synthesis.num_candidates", "expected <= 64 (allowed: >= 1 and <= 64)"),
    (["synthesis.max_steps=100000"], "synthesis.max_steps", "expected <= 1000"),
    (["synthesis.max_in_flight=10000000"], "synthesis.max_in_flight", "expected <= 100000"),
    (["synthesis.initial.max_new_tokens=1000000000"], "synthesis.initial.max_new_tokens", "expected <= 1000000"),
    (["sft.seed=-1"], "sft.seed", "expected >= 0"),
    (["eval.judge.max_reasks=1000"], "eval.judge.max_reasks", "expected <= 100"),
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
    (["serving.placement=cloud"], "serving.placement", "expected one of ['auto', 'local', 'slurm']"),
    (["launcher.jobs.server.time_min=0"], "launcher.jobs.server.time_min", "expected >= 1"),
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
    (["FOLDER_PAIRS"], "field 'path'", "a folder, not a file"),
]


@pytest.mark.parametrize(
    "overrides, key, words", CASES, ids=[c[1] + ("-empty" if c[0] == ["EMPTY_PAIRS"] else "") for c in CASES]
)
@pytest.mark.slow  # starts a run or a server: `make test` only, not test-fast
def test_bad_values_stop_before_any_work_naming_the_key(tmp_path, overrides, key, words):
    if overrides == ["EMPTY_PAIRS"]:
        empty = tmp_path / "pairs.jsonl"
        empty.write_text("\n")
        overrides = [f"data.pairs.path={empty}"]
    if overrides == ["FOLDER_PAIRS"]:  # a folder where the pairs file belongs
        (tmp_path / "pairs").mkdir()
        overrides = [f"data.pairs.path={tmp_path / 'pairs'}"]
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


# Numbers that need no upper bound, and why. Every other int or float field of the config declares one.
NO_UPPER_BOUND = {
    # caps: a larger one takes everything there is
    "data.pairs.limit": "cap",
    "data.public.limit": "cap",
    "data.mix.trajectories_from.limit": "cap",
    "synthesis.limit": "cap",
    "data.quotas.max_per_category": "cap",
    "eval.benchmarks.*.limit": "cap",
    "eval.benchmarks.*.judge.max_answer_tokens": "cap (0: never cut)",
    "eval.benchmarks.*.judge.truncate_above_tokens": "cap (0: never cut)",
    # counts of data, checked against what the data holds (the mix names a shortfall)
    "data.mix.total": "count of data",
    "data.mix.synthetic": "count of data",
    "data.mix.public": "count of data",
    "data.quotas.total": "count of data",
    # values on a scale of their own
    "synthesis.clip_min": "log-prob clip; validated below clip_max",
    "synthesis.clip_max": "log-prob clip; validated above clip_min",
    "data.pairs.scored.min_score": "the source's own score scale",
    "data.public.scored.min_score": "the source's own score scale",
}


def numeric_fields(schema, path=""):
    """(dotted key, field) of every int or float field under a config dataclass; `*` for dict entries."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key, hint = f"{path}.{f.name}" if path else f.name, hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if dataclasses.is_dataclass(hint):
            yield from numeric_fields(hint, key)
        elif typing.get_origin(hint) is dict and dataclasses.is_dataclass(args[-1]):
            yield from numeric_fields(args[-1], key + ".*")
        elif typing.get_origin(hint) is dict and f.metadata.get("entries"):  # entries typed by their kind
            for schema in f.metadata["entries"]:
                yield from numeric_fields(schema, key + ".*")
        elif (args[0] if typing.get_origin(hint) is typing.Union else hint) in (int, float):
            yield key, f


def test_every_number_has_an_upper_bound_or_a_reason():
    from deepwriter.config.root import RootConfig

    fields = dict(numeric_fields(RootConfig))
    assert "synthesis.num_candidates" in fields and "eval.benchmarks.*.judge.seed" in fields
    # plan.* are the cost projection's figures: no stage reads them
    unbounded = sorted(
        k
        for k, f in fields.items()
        if not k.startswith("plan.") or k == "plan.hardware.count"
        if (f.metadata.get("bounds") or (None,) * 4)[2:] == (None, None)
    )
    assert unbounded == sorted(NO_UPPER_BOUND), set(unbounded) ^ set(NO_UPPER_BOUND)
    for key, f in fields.items():  # and a lower one: nothing negative where a count or size is meant
        if not key.startswith("plan.") and key not in ("synthesis.clip_min", "synthesis.clip_max"):
            assert "min_score" in key or (f.metadata.get("bounds") or (None,) * 4)[:2] != (None, None), key

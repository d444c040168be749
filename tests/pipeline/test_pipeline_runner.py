"""The stage runner: content keys, reuse of finished outputs, resume of unfinished ones, manifests,
missing inputs. Stage bodies are small functions here; the mechanism under test is the real one."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from deepwriter.config.root import ConfigError
from deepwriter.pipeline import runner as pipeline
from deepwriter.pipeline.runner import StageResult, plan, run_pipeline
from deepwriter.testing.repo import NullTracker, compose_typed

CALLS: list[str] = []
FAIL_ONCE: set[str] = set()


def record_stage(cfg, ctx):
    """Appends a line per call (so a resumed stage sees its earlier partial work) and reads inputs."""
    CALLS.append(ctx.name)
    log = ctx.out_dir / "work.txt"
    with open(log, "a") as f:
        f.write(f"{ctx.name}\n")
    if ctx.name in FAIL_ONCE:
        FAIL_ONCE.discard(ctx.name)
        raise RuntimeError(f"{ctx.name} killed")
    upstream = {n: (p / "work.txt").read_text().count("\n") for n, p in ctx.inputs.items()}
    return StageResult(
        counts={"lines": log.read_text().count("\n"), **{f"from_{k}": v for k, v in upstream.items()}},
        artifacts={"work": "work.txt"},
    )


@pytest.fixture
def fake_stages(monkeypatch):
    CALLS.clear()
    FAIL_ONCE.clear()
    for name, spec in list(pipeline.STAGES.items()):
        monkeypatch.setitem(pipeline.STAGES, name, dataclasses.replace(spec, entry=record_stage, preflight=None))


def cfg_for(tmp_path: Path, *overrides: str):
    """The demo recipe over small local input files (the stage bodies here do not read them)."""
    pairs, public = tmp_path / "in-pairs.jsonl", tmp_path / "in-public.jsonl"
    for f in (pairs, public):
        if not f.exists():
            f.write_text('{"id": "1"}\n')
    return compose_typed(
        "+recipe=demo",
        f"paths.runs_dir={tmp_path}/runs",
        f"data.pairs.path={pairs}",
        f"data.public.path={public}",
        "eval.benchmarks={}",
        *overrides,
    )


def test_keys_change_downstream_only(tmp_path):
    base = plan(cfg_for(tmp_path))
    changed = plan(cfg_for(tmp_path, "sft.learning_rate=1e-3"))
    assert base["synthesize"].key == changed["synthesize"].key
    assert base["mix"].key == changed["mix"].key
    assert base["sft"].key != changed["sft"].key
    assert base["eval"].key != changed["eval"].key  # eval tests the sft output
    resynth = plan(cfg_for(tmp_path, "synthesis.max_steps=3"))
    assert all(base[s].key != resynth[s].key for s in ("synthesize", "mix", "sft", "eval"))


def test_operational_settings_do_not_change_keys(tmp_path):
    """Fields marked operational on the dataclasses (where and how work runs) stay out of the keys; a
    field of the same name elsewhere is not skipped by its name."""
    base = plan(cfg_for(tmp_path))
    other = plan(
        cfg_for(
            tmp_path,
            "synthesis.shard=1/4",
            "synthesis.shards=4",
            "sft.save_steps=7",
            "run_id=other",
            "models.generator.endpoint.max_retries=1",
            "models.scorer.endpoint.timeout_s=5",
            "data.labels.batch_size=3",
            "synthesis.max_unfinished_share=0.1",
            "sft.num_processes=2",
            "eval.judge.max_concurrency=2",
            "data.mix.num_proc=4",
        )
    )
    assert {s: p.key for s, p in base.items()} == {s: p.key for s, p in other.items()}
    # the search samples each prompt with its pair's own seed: how pairs are scheduled is operational
    for how in ("synthesis.batch_size=3", "synthesis.max_in_flight=64", "synthesis.schedule=lockstep"):
        assert plan(cfg_for(tmp_path, how))["synthesize"].key == base["synthesize"].key, how
    # elsewhere batch composition changes samples (one seed per batched call): those batch sizes are keys
    assert plan(cfg_for(tmp_path, "eval.batch_size=1"))["eval"].key != base["eval"].key
    assert plan(cfg_for(tmp_path, "data.queries.batch_size=2"))["synthesize"].key != base["synthesize"].key


def test_input_file_content_is_part_of_the_key(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"id": "a", "request": "x", "answer": "y"}\n')
    k1 = plan(cfg_for(tmp_path, f"data.pairs.path={pairs}"))["synthesize"].key
    pairs.write_text('{"id": "a", "request": "x", "answer": "z"}\n')
    k2 = plan(cfg_for(tmp_path, f"data.pairs.path={pairs}"))["synthesize"].key
    assert k1 != k2


def test_run_reuse_and_manifests(tmp_path, fake_stages):
    cfg = cfg_for(tmp_path, "run_id=first")
    m1 = run_pipeline(cfg, NullTracker)
    assert CALLS == ["synthesize", "mix", "sft", "eval"]
    assert [e["status"] for e in m1["stages"].values()] == ["ran"] * 4
    run_dir = Path(m1["run_dir"])
    for stage in ("synthesize", "mix", "sft", "eval"):
        link = run_dir / stage
        assert link.is_symlink()
        man = json.loads((link / "manifest.json").read_text())
        assert man["status"] == "complete" and man["key"] == m1["stages"][stage]["key"]
        assert {"config_hash", "inputs", "counts", "timing", "versions"} <= set(man)
        assert man["versions"]["torch"] and man["versions"]["transformers"]
    assert json.loads((run_dir / "eval" / "manifest.json").read_text())["counts"]["from_sft"] == 1
    assert (run_dir / "config.json").exists() and (run_dir / "manifest.json").exists()

    # A second run of the same recipe reuses everything; another recipe changing only SFT re-runs SFT and eval.
    CALLS.clear()
    m2 = run_pipeline(cfg_for(tmp_path, "run_id=second"), NullTracker)
    assert CALLS == []
    assert [e["status"] for e in m2["stages"].values()] == ["reused"] * 4
    assert m2["stages"]["sft"]["made_by_run"] == "demo/first"
    m3 = run_pipeline(cfg_for(tmp_path, "run_id=third", "sft.learning_rate=1e-3"), NullTracker)
    assert CALLS == ["sft", "eval"]
    assert m3["stages"]["mix"]["status"] == "reused" and m3["stages"]["sft"]["status"] == "ran"


def test_killed_stage_resumes_in_place_and_keeps_finished_work(tmp_path, fake_stages):
    FAIL_ONCE.add("mix")
    with pytest.raises(RuntimeError, match="mix killed"):
        run_pipeline(cfg_for(tmp_path, "run_id=a"), NullTracker)
    synth_manifest = plan(cfg_for(tmp_path))["synthesize"].out_dir / "manifest.json"
    before = synth_manifest.read_text()
    CALLS.clear()
    m = run_pipeline(cfg_for(tmp_path, "run_id=b"), NullTracker)
    assert CALLS == ["mix", "sft", "eval"]  # synthesize was finished: not run again
    assert synth_manifest.read_text() == before  # and not rewritten
    assert m["stages"]["mix"]["resumed"] is True
    mix_dir = Path(m["run_dir"]) / "mix"
    assert (mix_dir / "work.txt").read_text() == "mix\nmix\n"  # the partial work was handed back


def test_subset_of_stages_needs_finished_inputs(tmp_path, fake_stages):
    with pytest.raises(ConfigError, match="stage 'eval' needs the output of 'sft'"):
        run_pipeline(cfg_for(tmp_path, "recipe.stages=[eval]"), NullTracker)
    assert CALLS == []
    run_pipeline(cfg_for(tmp_path, "run_id=full"), NullTracker)
    CALLS.clear()
    m = run_pipeline(cfg_for(tmp_path, "recipe.stages=[eval]", "eval.seed=5"), NullTracker)
    assert CALLS == ["eval"] and list(m["stages"]) == ["eval"]


def test_missing_input_file_is_named(tmp_path, fake_stages):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(ConfigError, match="input file not found: .*nope.jsonl"):
        run_pipeline(cfg_for(tmp_path, f"data.pairs.path={missing}"), NullTracker)
    assert CALLS == []


def test_no_synthetic_mix_does_not_need_synthesis(tmp_path, fake_stages):
    run_pipeline(cfg_for(tmp_path, "data.mix.synthetic=0", "recipe.stages=[mix]"), NullTracker)
    assert CALLS == ["mix"]


def test_a_worker_that_did_its_part_of_a_split_stage_leaves_it_unfinished(tmp_path, fake_stages, monkeypatch):
    """A job-array task that did its shard while others are to come: no stage manifest (nothing may take
    the stage as finished), the run manifest says what it did; the worker that ends last writes it."""
    parts = iter(["shard 0/2; 1 to come", None])

    def shard_worker(cfg, ctx):
        return StageResult(counts={"pairs": 1}, part=next(parts))

    spec = pipeline.STAGES["synthesize"]
    monkeypatch.setitem(pipeline.STAGES, "synthesize", dataclasses.replace(spec, entry=shard_worker))
    cfg = cfg_for(tmp_path, "recipe.stages=[synthesize]", "synthesis.shards=2", "synthesis.shard=0/2")
    first = run_pipeline(cfg, NullTracker)["stages"]["synthesize"]
    assert first["status"] == "part" and first["part"] == "shard 0/2; 1 to come"
    assert not plan(cfg)["synthesize"].finished() and not (plan(cfg)["synthesize"].out_dir / "manifest.json").exists()
    last = run_pipeline(cfg_for(tmp_path, "recipe.stages=[synthesize]", "synthesis.shard=1/2"), NullTracker)
    assert last["stages"]["synthesize"]["status"] == "ran" and plan(cfg)["synthesize"].finished()


@pytest.mark.parametrize("left", ["raised", "returned"])
def test_a_stage_resumed_after_its_replica_was_healed_elsewhere_calls_the_replicas_new_address(
    left, tmp_path, fake_stages, monkeypatch
):
    """A replica that is a SLURM job of its own died under the stage (its node failed) and the fleet
    brought it back as a new job, on another node and port: the stage, resumed for its unfinished items
    (`left`: the stage raised UnfinishedError, or returned them within its max_unfinished_share), is
    handed the replica's new URL, read again from the fleet, not the dead job's. The runner and its
    RunServing are the real ones; the fleet is a stand-in whose one replica moves when it is healed."""
    from deepwriter.core.errors import UnfinishedError
    from deepwriter.testing.synthesis import served_synthesis_overrides, write_pairs

    class HealedElsewhere:
        """What RunServing asks of its fleet; its replica listens at `at` and moves when healed."""

        def __init__(self):
            self.at, self.died, self.healed, self.running = "node-a:8100", 0, 0, {}

        def up(self, group):
            self.running[group] = True
            return [f"http://{self.at}/v1"]

        def url(self, replica):
            return f"http://{self.at}/v1"

        def deaths(self):
            return self.died

        def check(self):
            pass

        def heal(self, wait_s=None):
            self.at, self.healed = "node-b:41234", self.healed + 1  # the new job's node and free port
            return True

        def summary(self):
            return {}

        def down(self, group):
            self.running.pop(group, None)

        def close(self):
            pass

    fleet = HealedElsewhere()
    real_run_serving = pipeline.run_serving

    def with_the_stand_in(*args, **kwargs):
        serving = real_run_serving(*args, **kwargs)
        assert serving.as_jobs and serving.layout.groups  # each replica a SLURM job, as configured
        serving.fleet = fleet
        return serving

    monkeypatch.setattr(pipeline, "run_serving", with_the_stand_in)
    handed: list = []  # the generator's and scorer's base_urls, per call of the stage

    def synthesize(cfg, ctx):
        handed.append((list(cfg.models.generator.endpoint.base_urls), list(cfg.models.scorer.endpoint.base_urls)))
        if len(handed) == 1:
            fleet.died += 1  # the replica's job ended mid-stage: its calls failed after their retries
            if left == "raised":
                raise UnfinishedError("synthesize", "pairs", 3, 4, "connection refused")
            return StageResult(counts={"pairs": 1}, unfinished={"count": 3, "total": 4})
        return StageResult(counts={"pairs": 4})

    monkeypatch.setitem(
        pipeline.STAGES, "synthesize", dataclasses.replace(pipeline.STAGES["synthesize"], entry=synthesize)
    )
    pairs = write_pairs(tmp_path / "pairs.jsonl", 4)
    overrides = served_synthesis_overrides(tmp_path / "runs", tmp_path / "cache", pairs, 4, 8100, "healed")
    cfg = compose_typed(
        *overrides, "serving.placement=slurm", "models.generator.dtype=float32", "models.scorer.dtype=float32"
    )
    manifest = run_pipeline(cfg, NullTracker)
    first, second = "http://node-a:8100/v1", "http://node-b:41234/v1"
    assert handed == [([first], [first]), ([second], [second])]  # the resumed stage calls the healed replica
    assert fleet.healed == 1 and manifest["stages"]["synthesize"]["status"] == "ran"

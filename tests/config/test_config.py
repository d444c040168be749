"""Hydra composition, typed schemas and one-line config errors."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml

from deepwriter.config.root import ConfigError, RootConfig, _resolve_run_id
from deepwriter.testing.repo import REPO, compose_typed, run_train

RECIPES = sorted(p.stem for p in (REPO / "recipes").glob("*.yaml"))


def test_recipes_exist():
    assert {"demo", "full"} <= set(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_composes_to_typed_config(recipe):
    cfg = compose_typed(f"+recipe={recipe}")
    assert isinstance(cfg, RootConfig)
    assert cfg.recipe.name == recipe
    assert cfg.recipe.stages, "a recipe must run at least one stage"


def test_full_recipe_is_the_papers_setup():
    cfg = compose_typed("+recipe=full")
    assert cfg.models.student.path == "Qwen/Qwen3-8B-Base"
    assert cfg.models.scorer.path == "Qwen/Qwen3-8B-Base"
    assert cfg.models.generator.path == "Qwen/Qwen2.5-32B-Instruct"  # REER config.yaml:16 (FIDELITY D1)
    assert cfg.sft.epochs == 3
    assert cfg.sft.learning_rate == pytest.approx(2e-5)
    assert cfg.sft.lr_scheduler == "constant"
    assert cfg.sft.global_batch_size == 96
    assert cfg.sft.bf16 is True
    assert cfg.sft.deepspeed.enabled and cfg.sft.deepspeed.config["zero_optimization"]["stage"] == 3
    assert (cfg.data.mix.total, cfg.data.mix.synthetic, cfg.data.mix.public) == (37000, 20000, 17000)
    enabled = {b.kind if hasattr(b, "kind") else name for name, b in cfg.eval.benchmarks.items() if b.enabled}
    assert {"longbench_write", "hellobench", "writingbench"} <= enabled
    assert (cfg.synthesis.stop_threshold, cfg.synthesis.max_steps, cfg.synthesis.num_candidates) == (0.25, 10, 2)


def test_full_cfg_job_prints_without_gpu():
    out = run_train("+recipe=full", "--cfg", "job")
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load(out.stdout)
    assert doc["models"]["student"]["path"] == "Qwen/Qwen3-8B-Base"
    assert doc["sft"]["global_batch_size"] == 96


@pytest.mark.parametrize(
    "args, expected",
    [
        (["+recipe=nope"], "recipe: unknown recipe 'nope'"),
        (["+recipe=demo", "synthesis.max_stepz=3"], "synthesis.max_stepz"),
        (["+recipe=demo", "+synthesis.max_stepz=3"], "synthesis.max_stepz: unknown key"),
        (["+recipe=demo", "sft.learning_rate=fast"], "sft.learning_rate"),
        (["+recipe=demo", "models.student.source=ftp"], "models.student.source"),
        (["+recipe=demo", "sft=nope"], "sft: unknown option 'nope'"),
        (["+recipe=demo", "recipe.stages=[eval,mix]"], "out of order"),
        (["+recipe=demo", "recipe.stages=[train]"], "unknown stage 'train'"),
    ],
)
def test_bad_config_fails_with_one_line(args, expected):
    out = run_train(*args)
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("deepwriter: config error: ")
    assert expected in lines[0]


# Keys that another group fills in (conf/config.yaml: `deepspeed@sft.deepspeed`).


def _yaml_keys_match_schema(doc: dict, schema: type, where: str, group: str = "") -> list[str]:
    """Keys a YAML file writes that its schema does not have (each default is written once, in the
    dataclass: tests/config/test_defaults_once.py; so a file holds a subset of the schema's fields)."""
    problems = []
    hints = typing.get_type_hints(schema)
    unknown = sorted(set(doc) - set(hints))
    if unknown:
        problems.append(f"{where}: keys the schema does not have: {unknown}")
    for key, sub in hints.items():
        if dataclasses.is_dataclass(sub) and isinstance(doc.get(key), dict):
            problems += _yaml_keys_match_schema(doc[key], sub, f"{where}.{key}")
    return problems


def test_group_yaml_files_write_only_schema_fields():
    """A group's YAML files write only fields of its dataclass (the defaults live in the dataclass, once)."""
    from deepwriter.config.data import DataConfig
    from deepwriter.config.eval import EvalConfig
    from deepwriter.config.llm import ModelConfig
    from deepwriter.config.root import LoggingConfig, PathsConfig
    from deepwriter.config.sft import DeepSpeedConfig, SFTConfig
    from deepwriter.config.synthesis import SynthesisConfig

    groups = {
        "model": ModelConfig,
        "synthesis": SynthesisConfig,
        "data": DataConfig,
        "sft": SFTConfig,
        "deepspeed": DeepSpeedConfig,
        "eval": EvalConfig,
        "logging": LoggingConfig,
        "paths": PathsConfig,
    }
    problems = []
    for group, schema in groups.items():
        files = sorted((REPO / "deepwriter" / "conf" / group).glob("*.yaml"))
        assert files, group
        for f in files:
            doc = yaml.safe_load(f.read_text()) or {}
            doc.pop("defaults", None)
            problems += _yaml_keys_match_schema(doc, schema, str(f.relative_to(REPO)), group)
    assert not problems, "\n".join(problems)


def test_run_id_is_shared_by_all_ranks(monkeypatch):
    for var in ("DEEPWRITER_RUN_ID", "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DEEPWRITER_RUN_ID", "abc")
    assert _resolve_run_id() == "abc"
    monkeypatch.delenv("DEEPWRITER_RUN_ID")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "rdzv-7")
    assert _resolve_run_id() == "rdzv-7"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="run_id"):
        _resolve_run_id()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert len(_resolve_run_id()) == len("20260101-000000")


RUN_ID_VARS = ("DEEPWRITER_RUN_ID", "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID", "WORLD_SIZE")


def test_slurm_job_id_is_the_run_id_of_every_rank(monkeypatch, tmp_path):
    """README: the run id is decided once per launch (DEEPWRITER_RUN_ID, SLURM's job id or torchrun's
    rendezvous id). Under SLURM every rank of a multi-process job composes the same run folder."""
    for var in RUN_ID_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("WORLD_SIZE", "16")  # many ranks: no error, the job id is shared
    assert _resolve_run_id() == "4242"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "rdzv-9")
    assert _resolve_run_id() == "4242"  # SLURM's job id comes before torchrun's rendezvous id
    ranks = [compose_typed("+recipe=demo", f"paths.runs_dir={tmp_path}") for _ in range(2)]
    assert [c.run_id for c in ranks] == ["4242", "4242"]
    monkeypatch.setenv("DEEPWRITER_RUN_ID", "mine")
    assert _resolve_run_id() == "mine"  # the id deepwriter.train hands its own ranks wins
    assert compose_typed("+recipe=demo", "run_id=explicit").run_id == "explicit"  # and the command line wins all


def test_explicit_run_id_and_paths_reach_the_typed_config(tmp_path):
    cfg = compose_typed("+recipe=demo", "run_id=r1", f"paths.runs_dir={tmp_path}")
    assert cfg.run_id == "r1"
    assert cfg.paths.stage_store == f"{tmp_path}/_stages"


def test_a_benchmark_kinds_own_keys_belong_to_its_entries_only():
    """HelloBench's subsets and groups are keys of an entry of kind hellobench (typed HelloBenchConfig) and
    are set from the command line as before, without `+`; on an entry of another kind they stop with one
    line naming the key."""
    from deepwriter.config.eval import BenchmarkConfig, HelloBenchConfig

    cfg = compose_typed(
        "eval=shared",
        "eval.benchmarks.hellobench.subsets=[chat]",
        "eval.benchmarks.hellobench.groups={A:[chat]}",
        "+eval.benchmarks.mine={kind: hellobench, subsets: [chat, summarization]}",
    )
    hb, mine = cfg.eval.benchmarks["hellobench"], cfg.eval.benchmarks["mine"]
    assert type(hb) is HelloBenchConfig and hb.subsets == ["chat"] and hb.groups == {"A": ["chat"]}
    assert type(mine) is HelloBenchConfig and mine.subsets_to_load() == ["chat", "summarization"]
    assert type(cfg.eval.benchmarks["writingbench"]) is BenchmarkConfig
    assert cfg.eval.benchmarks["writingbench"].subsets_to_load() == []
    with pytest.raises(ConfigError, match=r"^eval\.benchmarks\.writingbench\.subsets: Key 'subsets' not in"):
        compose_typed("eval=shared", "eval.benchmarks.writingbench.subsets=[chat]")


def test_a_misspelt_benchmark_entry_stops_naming_it():
    with pytest.raises(ConfigError, match=r"^eval\.benchmarks\.dmeo\.kind: not set, and 'dmeo' is no benchmark"):
        compose_typed("+recipe=demo", "eval.benchmarks.dmeo.limit=1")

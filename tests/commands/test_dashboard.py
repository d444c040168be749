"""The W&B dashboard layout: every panel belongs to a pipeline stage and names metrics that the
stages really log (checked against the keys of real offline W&B runs of every stage, and for the SFT
curves against the real metrics callback). No network: --dry-run, or layout files when
wandb-workspaces is not installed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List

import pytest


def _dry_run(capsys, *args: str) -> Dict:
    from deepwriter.commands.dashboard import main

    assert main(["--dry-run", "--project", "P", *args]) == 0
    return json.loads(capsys.readouterr().out)


def _metrics(spec: Dict, job_type: str = None) -> List[str]:
    return [m for s in spec["sections"] if job_type in (None, s["job_type"]) for p in s["panels"] for m in p["metrics"]]


def test_dry_run_has_a_section_per_stage_and_the_documented_panels(capsys, tmp_path):
    from deepwriter.pipeline.runner import STAGES

    spec = _dry_run(capsys, "--out", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    assert sorted(s["job_type"] for s in spec["sections"]) == sorted(STAGES)
    assert spec["project"] == "P" and spec["group_by"] == "group"
    assert set(spec["groups"]) >= {"full", "demo", "ablation-no-search", "ablation-no-synthetic"}
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "train/tokens_per_s", "train/mfu"} <= set(
        _metrics(spec, "sft")
    )
    assert {"synthesize/score_z0", "synthesize/score_final", "synthesize/score_vs_step"} <= set(
        _metrics(spec, "synthesize")
    )
    assert {"eval/longbench_write/items", "eval/plot_headline"} <= set(_metrics(spec, "eval"))
    for s in spec["sections"]:
        for p in s["panels"]:
            assert p["kind"] in {"line", "bar", "image", "table", "histogram", "custom"} and p["metrics"], p
            prefixes = {m.split("/", 1)[0] for m in p["metrics"]}
            assert prefixes <= {s["job_type"], "train" if s["job_type"] == "sft" else s["job_type"]}, (s["job_type"], p)


def test_eval_headline_panel_is_the_papers_columns(capsys):
    from deepwriter.eval.tables import PAPER_COLUMNS

    spec = _dry_run(capsys)  # full recipe: LongBench-Write, HelloBench, WritingBench
    headline = next(p for s in spec["sections"] for p in s["panels"] if p["title"].startswith("headline"))
    assert headline["metrics"] == [f"eval/{c}" for c in PAPER_COLUMNS]
    demo = _dry_run(capsys, "--", "scale=demo")
    assert next(p for s in demo["sections"] for p in s["panels"] if p["title"].startswith("headline"))["metrics"] == [
        "eval/demo"
    ]
    assert "eval/plot_demo_buckets" in _metrics(demo, "eval")


def _served(role: str, url: str, model: str) -> List[str]:
    return [
        f"models.{role}.backend=openai",
        f"models.{role}.endpoint.base_urls=[{url}]",
        f"models.{role}.endpoint.model={model}",
        f"models.{role}.endpoint.api_key_env=null",
        f"models.{role}.endpoint.max_retries=1",
        f"models.{role}.endpoint.backoff_s=0.01",
    ]


@pytest.mark.slow  # the four stages for real on the tiny model, in this process: ~1 min on 2 busy cores
def test_every_metric_is_logged_by_the_stages(tmp_path, model_cache, tiny_model, monkeypatch):
    """Each section's metric names against the keys (history and summary) of a real offline W&B run of
    its stage: the demo pipeline on the tiny model, its generator a plan writer and its judge a
    scripted one, both served over HTTP (so every stage has figures to log), with LongBench-Write,
    HelloBench and WritingBench fixtures in the eval. A dashboard name no stage logs fails."""
    import torch

    from deepwriter.commands.dashboard import layout
    from deepwriter.config.eval import BenchmarkConfig, HelloBenchConfig
    from deepwriter.llm.hf import TransformersScorer
    from deepwriter.pipeline.runner import run_pipeline
    from deepwriter.testing.judges import ScriptedJudge
    from deepwriter.testing.loopback import start_server
    from deepwriter.testing.repo import FIXTURES, compose_typed
    from deepwriter.testing.synthesis import PlanWriter
    from deepwriter.testing.wandb_offline import read_wandb_offline
    from deepwriter.tracking.runs import stage_tracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    model, tok = tiny_model
    fixtures = FIXTURES / "bench"
    with (
        start_server(PlanWriter("tiny-qwen3"), TransformersScorer(model, tok, "tiny-qwen3")) as writer,
        start_server(ScriptedJudge()) as judge,
    ):
        cfg = compose_typed(
            "+recipe=demo",
            "run_id=d",
            f"paths.runs_dir={tmp_path}/runs",
            f"paths.cache_dir={model_cache}",
            *(f"model@models.{r}=tiny-qwen3" for r in ("generator", "scorer", "student", "judge")),
            *_served("generator", writer.url, "tiny-qwen3"),
            *_served("scorer", writer.url, "tiny-qwen3"),
            *_served("judge", judge.url, "scripted-judge"),
            "eval.judge.constrained_http=false",  # the scripted judge writes each benchmark's own shape
            "synthesis.limit=2",
            "synthesis.max_steps=1",
            "synthesis.initial.max_new_tokens=24",
            "synthesis.refine.max_new_tokens=16",
            "synthesis.filters.min_think_tokens=40",
            "synthesis.refine_analysis=false",
            "sft.max_steps=2",
            "sft.save_steps=1",
            "sft.logging_steps=1",
            "sft.max_length=256",
        )
        gen = dict(max_new_tokens=8, temperature=0.8, top_p=0.95)
        cfg.eval.benchmarks = {
            "longbench_write": BenchmarkConfig(path=str(fixtures / "longbench_write.jsonl"), limit=1, **gen),
            "hellobench": HelloBenchConfig(
                path=str(fixtures / "hellobench"),
                limit=1,
                groups={"HB-A": ["chat"], "HB-B": ["heuristic_text_generation"]},  # the fixture's subsets
                **gen,
            ),
            "writingbench": BenchmarkConfig(path=str(fixtures / "writingbench.jsonl"), limit=2, **gen),
        }
        manifest = run_pipeline(cfg, stage_tracker)
    run_dir = Path(manifest["run_dir"])
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    # what no run of this configuration logs: GPU memory on a CPU, headline scores without a value
    # (None: no score, never a zero) and those of the WritingBench domains the fixtures give no item
    from deepwriter.eval.benchmarks.writingbench import DOMAINS

    covered = summary["benchmarks"]["writingbench"]["summary"]["domains"]
    absent = {f"eval/{k}" for k, v in summary["headline"].items() if v is None}
    absent |= {f"eval/WB-{d}" for d in DOMAINS if d not in covered}
    assert {"LB", "HB-A", "HB-B", "WB-A", "WB-D"} <= {k for k, v in summary["headline"].items() if v is not None}
    assert sorted(covered) == ["A", "D"], covered
    if not torch.cuda.is_available():
        absent.add("train/mem/gpu_max_allocated_gb")
    sections = layout(cfg)
    assert sorted(s.job_type for s in sections) == sorted(manifest["stages"])
    for section in sections:
        (path,) = (run_dir / section.job_type / "wandb").glob("offline-run-*/run-*.wandb")
        run = read_wandb_offline(path)
        assert (run["job_type"], run["group"]) == (section.job_type, "demo")
        logged = set(run["summary"]) | {k for row in run["history"] for k in row}
        wanted = {m for p in section.panels for m in p.metrics}
        assert wanted - logged == wanted & absent, (section.job_type, sorted(wanted - logged), sorted(logged))


def test_train_panels_match_the_sft_metrics_callback(capsys, tmp_path):
    from transformers import TrainerState

    from deepwriter.sft.trainer import make_metrics_callback

    logged: Dict[str, float] = {}

    class Recorder:
        def log(self, data, step=None):
            logged.update(data)

    cb = make_metrics_callback(
        tmp_path / "log.jsonl", Recorder(), flops_per_token=6000.0, peak_tflops=1.0, world_size=1
    )
    state = TrainerState(global_step=1, is_world_process_zero=True)
    cb.on_train_begin(None, state, None)
    for step, tokens in ((1, 100.0), (2, 300.0)):
        state.global_step = step
        cb.on_log(
            None, state, None, logs={"loss": 2.0 / step, "grad_norm": 1.5, "learning_rate": 2e-5, "num_tokens": tokens}
        )
    spec = _dry_run(capsys)
    lines = [
        m
        for s in spec["sections"]
        if s["job_type"] == "sft"
        for p in s["panels"]
        if p["kind"] == "line"
        for m in p["metrics"]
    ]
    gpu_only = {"train/mem/gpu_max_allocated_gb"}  # on this CPU the callback logs cpu memory instead
    assert set(lines) - gpu_only <= set(logged), sorted(set(lines) - gpu_only - set(logged))
    assert logged["train/loss"] == 1.0 and logged["train/mfu"] > 0


def test_layout_files_when_the_workspace_api_is_missing(tmp_path, capsys, monkeypatch):
    import deepwriter.commands.dashboard as dash

    monkeypatch.setattr(dash, "_workspaces_available", lambda: False)
    assert "wandb sync" in dash.__doc__
    assert dash.main(["--project", "P", "--entity", "E", "--out", str(tmp_path)]) == 0
    spec = json.loads((tmp_path / "dashboard.json").read_text())
    md = (tmp_path / "dashboard.md").read_text()
    assert spec["entity"] == "E" and md.startswith("# W&B dashboard: E/P")
    assert all(f"`{m}`" in md for m in _metrics(spec))
    assert "wandb-workspaces is not installed" in capsys.readouterr().err


class _FakeWandbApi:
    """Stands for wandb.Api, the only part that talks to the network (its constructor verifies the
    login): it answers the workspace mutation and records what was sent. Everything else is the
    real wandb-workspaces library."""

    sent: List[Dict] = []
    entity = "alice"

    def __init__(self, *args, **kwargs):
        if self.entity is None:
            raise RuntimeError("api_key not configured (no-tty)")
        self._service_api = self  # wandb_workspaces' GraphQL helper sends through this

    @property
    def default_entity(self):
        return self.entity

    app_url = "https://wandb.example"

    def execute_graphql(self, query, variables):
        self.sent.append({"query": query, "variables": variables})
        return {"upsertView": {"view": {"id": "VIEW1", "name": variables["name"]}, "inserted": True}}


@pytest.fixture
def fake_wandb_api(monkeypatch):
    import wandb
    import wandb_workspaces  # noqa: F401  (the dev extra installs it: missing, these tests fail)

    _FakeWandbApi.sent, _FakeWandbApi.entity = [], "alice"
    monkeypatch.setattr(wandb, "Api", _FakeWandbApi)
    return _FakeWandbApi


def test_the_workspace_builds_with_the_real_library(capsys):
    from wandb_workspaces.workspaces import Workspace

    from deepwriter.commands.dashboard import build_workspace

    spec = _dry_run(capsys, "--entity", "team")
    ws = build_workspace(spec)
    assert isinstance(ws, Workspace) and (ws.entity, ws.project) == ("team", "P")
    assert [sec.name for sec in ws.sections] == [sec["name"] for sec in spec["sections"]]
    for sec, want in zip(ws.sections, spec["sections"]):
        drawn = [p for p in want["panels"] if p["kind"] != "histogram"]  # no histogram panel in the library
        assert len(sec.panels) == len(drawn)
        for panel, p in zip(sec.panels, drawn):
            if p["kind"] == "line":
                assert (panel.title, list(panel.y)) == (p["title"], p["metrics"])
    # the model the API would receive validates, and carries every metric of the line panels
    body = ws._to_model().spec.model_dump_json(by_alias=True, exclude_none=True)
    lines = [m for sec in spec["sections"] for p in sec["panels"] if p["kind"] == "line" for m in p["metrics"]]
    assert lines and all(json.dumps(m)[1:-1] in body for m in lines)


def test_main_saves_the_workspace_under_the_logged_in_users_entity(capsys, fake_wandb_api):
    from deepwriter.commands.dashboard import main

    assert main(["--project", "P"]) == 0
    (call,) = fake_wandb_api.sent
    assert "upsertView" in call["query"]
    v = call["variables"]
    assert (v["entityName"], v["projectName"], v["type"]) == ("alice", "P", "project-view")
    assert "train/loss" in v["spec"] and "eval/" in v["spec"]
    out = capsys.readouterr().out
    assert re.search(r"dashboard saved: https://wandb\.example/alice/P\?nw=\S+", out), out
    # an entity given on the command line wins over the login's
    assert main(["--project", "P", "--entity", "team"]) == 0
    assert fake_wandb_api.sent[-1]["variables"]["entityName"] == "team"


def test_no_entity_and_no_login_stops_with_one_line(capsys, fake_wandb_api):
    from deepwriter.commands.dashboard import main

    fake_wandb_api.entity = None
    assert main(["--project", "P"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--entity" in err and "wandb login" in err
    assert fake_wandb_api.sent == []

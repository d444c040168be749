"""The whole pipeline, for real, with the embedded SmolLM2 model: a reduced `demo` through the
command line, then a second run that must reuse every stage."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deepwriter.testing.repo import REPO

STAGES = ("synthesize", "mix", "sft", "eval")
REDUCED = [
    "synthesis.limit=3",
    "synthesis.max_steps=1",
    # four steps: the loss falls well within them (2.5 -> 1.4 at lr 2e-4); one checkpoint, at the end
    # (each is 1.6 GB of weights and Adam state: the run wrote two, and eight steps took most of its time)
    "sft.max_steps=4",
    # z0 (<= 192 tokens) + one rewrite (<= 96) + the request and a demo answer fit whole: the kept
    # trajectories must reach the SFT data, not be dropped as too long
    "sft.max_length=768",
    "sft.learning_rate=2e-4",
    "sft.save_steps=4",
    "eval.benchmarks.demo.limit=2",
    "eval.benchmarks.demo.max_new_tokens=48",
]


def _train(tmp_path: Path, run_id: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "deepwriter.train",
        "+recipe=demo",
        f"paths.runs_dir={tmp_path}/runs",
        f"run_id={run_id}",
        *REDUCED,
    ]
    return subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env={**os.environ, "WANDB_MODE": "offline"}
    )


def _files(folder: Path) -> dict:
    """Every file under `folder` with its size and modification time: what a re-run must not touch."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


@pytest.mark.slow
@pytest.mark.timeout(2400)  # the run alone takes 3-15 min on 2 cores, depending on what else runs there
def test_demo_runs_every_stage_for_real_then_reuses_them(tmp_path):
    out = _train(tmp_path, "first")
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

    # dtype auto was resolved once, before the stage keys, and the choice was logged: every in-process
    # role runs, and is recorded with, the dtype the run's own probe picked (not re-probed here: on a
    # loaded machine a second probe may measure differently)
    log = out.stdout + out.stderr
    picked = dict(re.findall(r"models\.(\w+)\.dtype: auto -> (\w+) \(", log))
    assert {"generator", "scorer", "judge"} <= set(picked), picked
    assert len(set(picked.values())) == 1 and set(picked.values()) <= {"bfloat16", "float32"}
    config = json.loads((run_dir / "config.json").read_text())
    assert {r: config["models"][r]["dtype"] for r in picked} == picked

    # synthesis: every pair got a z0; those the reference's own rules keep (>= 100 generated tokens, two
    # segments or more) were scored and searched, the others were discarded before any scoring
    from deepwriter.synthesis import filters

    records = [json.loads(line) for f in (run_dir / "synthesize" / "shards").glob("*.jsonl") for line in open(f)]
    assert len(records) == 3
    for r in records:
        assert r["z0"] and r["z0"].strip()
        if r["verdict"]["reason"] in filters.BEFORE_SEARCH:
            assert r["scores"] == [] and r["steps"] == []
            continue
        assert r["num_segments"] >= 2 and len(r["steps"]) == 1
        assert r["scores"] and all(math.isfinite(s) and 0 <= s <= 2 for s in r["scores"])
        assert r["scores"][-1] <= r["scores"][0]  # the search only accepts strictly better rewrites
        assert r["models"]["generator"] == "smollm2-135m"

    # mix: a chat dataset with <think> blocks: the 8 public samples and every kept trajectory
    import datasets

    kept = {r["id"]: r for r in records if r["verdict"]["kept"]}
    assert kept, "the demo's search kept no trajectory: the mix would hold public data only"
    ds = datasets.load_from_disk(str(run_dir / "mix" / "dataset"))
    assistant = [m[-1]["content"] for m in ds["messages"]]
    assert all(a.startswith("<think>\n") and "\n</think>\n\n" in a for a in assistant)
    synthetic = {row["id"]: row for row in ds if row["source"] == "synthetic"}
    assert set(synthetic) == set(kept) and len(ds) == len(kept) + 8
    assert list(ds["source"]).count("demo-reasoning") == 8  # the public samples, by their source's name
    for rid, row in synthetic.items():
        turn = row["messages"][-1]["content"]
        assert row["messages"][0]["content"] == kept[rid]["x"]
        assert kept[rid]["z_final"].strip() in turn and turn.rstrip().endswith(kept[rid]["y"].strip())
    assert (run_dir / "mix" / "DATA_CARD.md").exists()

    # sft: finite losses, lower at the end, an exported model
    sft = _manifest(run_dir / "sft")
    first, last = sft["metrics"]["first_loss"], sft["metrics"]["last_loss"]
    assert math.isfinite(first) and math.isfinite(last) and last < first
    assert sft["counts"]["steps"] == 4
    assert (run_dir / "sft" / "model" / "model.safetensors").exists()
    # the SFT data holds the synthesized trajectories: counted by source, and each one's opening words
    # are in a decoded training sample
    (prepared_file,) = (run_dir / "sft" / "tokenized").glob("*/prepare.json")  # one folder per data key
    prepared = json.loads(prepared_file.read_text())
    assert prepared["sources"] == {"synthetic": len(kept), "demo-reasoning": 8}, prepared["sources"]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(run_dir / "sft" / "model"))
    rows = datasets.load_from_disk(str(prepared_file.parent / "data"))
    texts = [tok.decode(ids) for ids in rows["input_ids"]]
    first_words = {rid: " ".join(r["z_final"].split()[:12]) for rid, r in kept.items()}
    assert all(any(words in " ".join(t.split()) for t in texts) for words in first_words.values())

    # eval: judge scores in range, summary written
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    items = [json.loads(line) for line in open(run_dir / "eval" / "items" / "demo.jsonl")]
    assert len(items) == 2
    judged = [v for it in items for j in it["judge"].values() if j["ok"] for v in j["values"].values()]
    assert judged and all(1 <= v <= 5 for v in judged)
    assert all(v is None or 0 <= v <= 100 for v in summary["headline"].values())
    assert "deepwriter: recipe demo" in out.stdout  # the closing summary
    # ... and the run's report, whose path is the last line printed
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("report: ")
    assert Path(last.removeprefix("report: ")).resolve() == (run_dir / "report.html").resolve()
    assert (run_dir / "report.html").stat().st_size > 10_000

    # a second run of the same recipe reuses every finished stage: it runs none and writes nothing
    # into their folders (counted, not timed)
    store = tmp_path / "runs" / "_stages"
    before = _files(store)
    again = _train(tmp_path, "second", timeout=300)  # reuses every stage: within the test's 2400 s
    assert again.returncode == 0, again.stderr[-3000:]
    second = _manifest(tmp_path / "runs" / "demo" / "second")
    assert [second["stages"][s]["status"] for s in STAGES] == ["reused"] * 4
    assert all(second["stages"][s]["key"] == run["stages"][s]["key"] for s in STAGES)
    assert _files(store) == before
    assert not re.search(r"stage \w+\s+(running|resuming)", again.stdout + again.stderr)

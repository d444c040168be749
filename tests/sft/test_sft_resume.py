"""A tiny-model SFT killed after a checkpoint resumes and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from deepwriter.testing.repo import REPO
from deepwriter.testing.synthetic_data import write_mix_dataset

MAX_STEPS, SAVE_STEPS = 8, 3

SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from deepwriter.core.contract import StageContext
    from deepwriter.sft import stage, trainer as tr
    from deepwriter.tracking.runs import Tracker
    from deepwriter.testing.repo import compose_typed

    # --stall: once the step after the first checkpoint is in the train log, the next step never
    # ends (on_step_end runs before that step is logged), so the parent's kill lands after a logged
    # step that no checkpoint holds, however fast or slow this machine is.
    if sys.argv[3:] == ["--stall"]:
        make = tr.make_metrics_callback
        def stalling(*a, **k):
            cb = make(*a, **k)
            def on_step_end(args, state, control, **kw):
                if state.global_step == {save_steps} + 2:
                    time.sleep(3600)
            cb.on_step_end = on_step_end
            return cb
        tr.make_metrics_callback = stalling

    work, cache = Path(sys.argv[1]), sys.argv[2]
    cfg = compose_typed("model@models.student=tiny-qwen3", "+recipe=demo", f"paths.cache_dir={{cache}}",
                        "sft.max_length=96", "sft.max_steps={max_steps}", "sft.save_steps={save_steps}",
                        "sft.global_batch_size=2", "sft.per_device_batch_size=1", "sft.packing=false")
    ctx = StageContext(name="sft", out_dir=work / "sft", inputs={{"mix": work / "mix"}}, run_dir=work,
                       tracker=Tracker(None), key="resume-test")
    r = stage.run(cfg, ctx)
    print("RESULT", r.counts["steps"], r.counts["resumed_from_step"], flush=True)
""")


def _script(tmp_path: Path) -> Path:
    path = tmp_path / "train.py"
    path.write_text(SCRIPT.format(repo=str(REPO), max_steps=MAX_STEPS, save_steps=SAVE_STEPS))
    return path


def _env():
    return {
        **os.environ,
        "WANDB_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def _losses(work: Path):
    rows = [json.loads(line) for line in (work / "sft" / "train_log.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows], [r["loss"] for r in rows]


@pytest.mark.slow  # three fresh interpreters importing torch + transformers + trl
def test_killed_run_resumes_to_the_same_losses(tmp_path, model_cache):
    from deepwriter.llm import models
    from deepwriter.testing.repo import compose_typed

    # Build the tiny model once here: two runs building it into one cache at once would race.
    models.resolve(compose_typed("model@models.student=tiny-qwen3").models.student, model_cache)
    for name in ("straight", "killed"):
        write_mix_dataset(tmp_path / name / "mix", n=20, seed=3, median_words=25)
    script = _script(tmp_path)

    # The reference run and the run to be killed go side by side (two cores) to keep the test short.
    straight = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "straight"), str(model_cache)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    work = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(work), str(model_cache), "--stall"],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "killed.log", "w"),
        start_new_session=True,
    )
    ckpt = work / "sft" / "checkpoints" / f"checkpoint-{SAVE_STEPS}" / "trainer_state.json"
    log = work / "sft" / "train_log.jsonl"

    def logged_steps() -> list:
        return [json.loads(line)["step"] for line in log.read_text().splitlines()] if log.exists() else []

    # Wait for the step after the checkpoint to be logged (the run then stalls), not for a time.
    deadline = time.time() + 300
    while SAVE_STEPS + 1 not in logged_steps() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    alive = proc.poll() is None
    if alive:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert alive, "the run ended before it could be killed: " + (tmp_path / "killed.log").read_text()[-3000:]
    assert ckpt.exists(), "the run did not reach its first checkpoint: " + (tmp_path / "killed.log").read_text()[-3000:]
    # killed after logging a step that only a redo can bring back, before the next checkpoint
    assert logged_steps() == list(range(1, SAVE_STEPS + 2))
    assert sorted(p.name for p in (work / "sft" / "checkpoints").glob("checkpoint-*")) == [f"checkpoint-{SAVE_STEPS}"]
    out, err = straight.communicate(timeout=120)
    assert straight.returncode == 0, err[-3000:]
    assert f"RESULT {MAX_STEPS} 0" in out

    resumed = subprocess.run(
        [sys.executable, str(script), str(work), str(model_cache)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    line = [l for l in resumed.stdout.splitlines() if l.startswith("RESULT")][0]
    steps, resumed_from = map(int, line.split()[1:])
    assert steps == MAX_STEPS and resumed_from == SAVE_STEPS

    ref_steps, ref_losses = _losses(tmp_path / "straight")
    got_steps, got_losses = _losses(work)
    # step SAVE_STEPS + 1 was logged, cut from the log and trained again: each step once, same losses
    assert got_steps == ref_steps == list(range(1, MAX_STEPS + 1))
    assert got_losses == pytest.approx(ref_losses, rel=1e-4)
    assert got_losses[0] != pytest.approx(got_losses[-1], rel=1e-3)  # the comparison is not between constants

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

from deepwriter.sft.synthetic import write_mix_dataset
from tests.conftest import REPO

MAX_STEPS, SAVE_STEPS = 8, 3

SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from deepwriter.contract import StageContext
    from deepwriter.sft import stage, trainer as tr
    from deepwriter.tracking import Tracker
    from tests.conftest import compose_typed

    # Slow each step a little so the parent can kill the run between two checkpoints.
    make = tr.make_metrics_callback
    def slowed(*a, **k):
        cb = make(*a, **k)
        def on_step_end(args, state, control, **kw):
            time.sleep(float({delay!r}))
        cb.on_step_end = on_step_end
        return cb
    tr.make_metrics_callback = slowed

    work, cache = Path(sys.argv[1]), sys.argv[2]
    cfg = compose_typed("model@models.student=tiny-qwen3", "+recipe=demo", f"paths.cache_dir={{cache}}",
                        "sft.max_length=96", "sft.max_steps={max_steps}", "sft.save_steps={save_steps}",
                        "sft.global_batch_size=2", "sft.per_device_batch_size=1", "sft.packing=false")
    ctx = StageContext(name="sft", out_dir=work / "sft", inputs={{"mix": work / "mix"}}, run_dir=work,
                       tracker=Tracker(None), key="resume-test")
    r = stage.run(cfg, ctx)
    print("RESULT", r.counts["steps"], r.counts["resumed_from_step"], flush=True)
""")


def _script(tmp_path: Path, delay: float) -> Path:
    path = tmp_path / f"train_{int(delay * 1000)}.py"
    path.write_text(SCRIPT.format(repo=str(REPO), delay=delay, max_steps=MAX_STEPS, save_steps=SAVE_STEPS))
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


def test_killed_run_resumes_to_the_same_losses(tmp_path, model_cache):
    from deepwriter import models
    from tests.conftest import compose_typed

    # Build the tiny model once here: two runs building it into one cache at once would race.
    models.resolve(compose_typed("model@models.student=tiny-qwen3").models.student, model_cache)
    for name in ("straight", "killed"):
        write_mix_dataset(tmp_path / name / "mix", n=20, seed=3, median_words=25)

    # The reference run and the run to be killed go side by side (two cores) to keep the test short.
    straight = subprocess.Popen(
        [sys.executable, str(_script(tmp_path, 0.0)), str(tmp_path / "straight"), str(model_cache)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    work = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(_script(tmp_path, 0.4)), str(work), str(model_cache)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "killed.log", "w"),
        start_new_session=True,
    )
    ckpt = work / "sft" / "checkpoints" / f"checkpoint-{SAVE_STEPS}" / "trainer_state.json"
    deadline = time.time() + 90
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # let it log a step past the checkpoint, which the resumed run must redo
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "the run did not reach its first checkpoint: " + (tmp_path / "killed.log").read_text()[-3000:]
    out, err = straight.communicate(timeout=120)
    assert straight.returncode == 0, err[-3000:]
    assert f"RESULT {MAX_STEPS} 0" in out
    steps_before, _ = _losses(work)
    assert SAVE_STEPS <= max(steps_before) < MAX_STEPS

    resumed = subprocess.run(
        [sys.executable, str(_script(tmp_path, 0.0)), str(work), str(model_cache)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    line = [l for l in resumed.stdout.splitlines() if l.startswith("RESULT")][0]
    steps, resumed_from = map(int, line.split()[1:])
    assert steps == MAX_STEPS and resumed_from >= SAVE_STEPS

    ref_steps, ref_losses = _losses(tmp_path / "straight")
    got_steps, got_losses = _losses(work)
    assert got_steps == ref_steps == list(range(1, MAX_STEPS + 1))
    assert got_losses == pytest.approx(ref_losses, rel=1e-4)
    assert got_losses[0] != pytest.approx(got_losses[-1], rel=1e-3)  # the comparison is not between constants

"""A tiny-model SFT killed after a checkpoint, or told to stop by a signal, resumes and ends where an
uninterrupted run ends; a torn checkpoint is never the one resumed."""

from __future__ import annotations

import json
import os
import shutil
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
    from deepwriter.core.errors import UnfinishedError
    from deepwriter.sft import stage, trainer as tr
    from deepwriter.tracking.runs import Tracker
    from deepwriter.testing.repo import compose_typed

    # --stall N: step N does not end (on_step_end runs before that step is logged) until a stop
    # signal has been caught, so the parent's SIGKILL or SIGUSR1 lands after step N - 1 is logged and
    # before step N is, however fast or slow this machine is.
    if sys.argv[3:4] == ["--stall"]:
        stall_at = int(sys.argv[4])
        requests = []
        class Recorded(stage.StopRequest):
            def __init__(self):
                super().__init__()
                requests.append(self)
        stage.StopRequest = Recorded
        make = tr.make_metrics_callback
        def stalling(*a, **k):
            cb = make(*a, **k)
            def on_step_end(args, state, control, **kw):
                t0 = time.time()
                while state.global_step == stall_at and not requests[-1].signal_name and time.time() - t0 < 3600:
                    time.sleep(0.02)
            cb.on_step_end = on_step_end
            return cb
        tr.make_metrics_callback = stalling

    work, cache = Path(sys.argv[1]), sys.argv[2]
    cfg = compose_typed("model@models.student=tiny-qwen3", "+recipe=demo", f"paths.cache_dir={{cache}}",
                        "sft.max_length=96", "sft.max_steps={max_steps}", "sft.save_steps={save_steps}",
                        "sft.global_batch_size=2", "sft.per_device_batch_size=1", "sft.packing=false")
    ctx = StageContext(name="sft", out_dir=work / "sft", inputs={{"mix": work / "mix"}}, run_dir=work,
                       tracker=Tracker(None), key="resume-test")
    try:
        r = stage.run(cfg, ctx)
    except UnfinishedError as exc:  # as deepwriter.train ends a stage stopped by the scheduler
        print("UNFINISHED", exc, flush=True)
        sys.exit(3)
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


def _logged_steps(work: Path) -> list:
    log = work / "sft" / "train_log.jsonl"
    return [json.loads(line)["step"] for line in log.read_text().splitlines()] if log.exists() else []


def _stalled_run(script: Path, work: Path, cache: Path, stall_at: int, sig: int, errlog: Path) -> subprocess.Popen:
    """Start a run that stalls in step `stall_at`, wait until step `stall_at - 1` is logged (a step, not
    a time), send `sig`, and return the process."""
    proc = subprocess.Popen(
        [sys.executable, str(script), str(work), str(cache), "--stall", str(stall_at)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=open(errlog, "w"),
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while stall_at - 1 not in _logged_steps(work) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    alive = proc.poll() is None
    if alive:
        proc.send_signal(sig)
    assert alive, f"the run ended before step {stall_at}: " + errlog.read_text()[-3000:]
    return proc


@pytest.mark.slow  # four fresh interpreters importing torch + transformers + trl
def test_killed_and_signalled_run_resumes_to_the_same_losses(tmp_path, model_cache):
    """Killed without warning (SIGKILL) after checkpoint 3: resumes from 3, past a torn checkpoint-8.
    Then told to stop (SIGUSR1, as SLURM's --signal=USR1@s): saves the step it is in, exits 3 (unfinished),
    and the next run resumes from that checkpoint. Every step's loss is the uninterrupted run's."""
    from deepwriter.llm import models
    from deepwriter.sft.preemption import COMPLETE
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
    ckpts = work / "sft" / "checkpoints"
    killed = _stalled_run(script, work, model_cache, SAVE_STEPS + 2, signal.SIGKILL, tmp_path / "killed.log")
    killed.wait()
    # killed after logging a step that only a redo can bring back, before the next checkpoint
    assert _logged_steps(work) == list(range(1, SAVE_STEPS + 2))
    assert sorted(p.name for p in ckpts.glob("checkpoint-*")) == [f"checkpoint-{SAVE_STEPS}"]
    assert (ckpts / f"checkpoint-{SAVE_STEPS}" / COMPLETE).exists()
    out, err = straight.communicate(timeout=120)
    assert straight.returncode == 0, err[-3000:]
    assert f"RESULT {MAX_STEPS} 0" in out

    # A save the scheduler cut short: every file of a checkpoint (trainer_state.json included) but
    # the marker, at the last step (taken for a finished training, it would be exported). Never resumed.
    torn = ckpts / f"checkpoint-{MAX_STEPS}"
    shutil.copytree(ckpts / f"checkpoint-{SAVE_STEPS}", torn)
    (torn / COMPLETE).unlink()

    signalled_at = SAVE_STEPS + 4  # not a save_steps step: only the signal saves it
    signalled = _stalled_run(script, work, model_cache, signalled_at, signal.SIGUSR1, tmp_path / "signalled.log")
    out, _ = signalled.communicate(timeout=120)
    assert signalled.returncode == 3, (out + (tmp_path / "signalled.log").read_text())[-3000:]
    assert f"stopped by SIGUSR1 after step {signalled_at} of {MAX_STEPS}" in out
    assert not torn.exists()  # removed before training, not left to count against save_total_limit
    assert (ckpts / f"checkpoint-{signalled_at}" / COMPLETE).exists()
    assert not (work / "sft" / "model").exists()  # no export from a half-trained model
    assert _logged_steps(work) == list(range(1, signalled_at + 1))

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
    assert steps == MAX_STEPS and resumed_from == signalled_at

    ref_steps, ref_losses = _losses(tmp_path / "straight")
    got_steps, got_losses = _losses(work)
    print("losses uninterrupted:", ref_losses)
    print("losses killed at 5, signalled at 7, resumed:", got_losses)
    # step SAVE_STEPS + 1 was logged, cut from the log and trained again: each step once, same losses
    assert got_steps == ref_steps == list(range(1, MAX_STEPS + 1))
    assert got_losses == pytest.approx(ref_losses, rel=1e-4)
    assert got_losses[0] != pytest.approx(got_losses[-1], rel=1e-3)  # the comparison is not between constants

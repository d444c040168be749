"""SFT that saves when told to: on a wall-clock interval (`sft.save_every_min`) and on the signal a
scheduler sends before it ends a job (SLURM's `--signal=USR1@<s>`, submitit's USR2, SIGTERM on
preemption or `scancel`), then stops; a checkpoint counts only once it is whole.

Whole: HF's Trainer writes `checkpoint-N/` file by file, in place, so a job killed mid-save leaves a
folder that looks like any other (even its trainer_state.json may be half written). After every save
the ranks meet, rank 0 flushes the folder's files to disk and renames a marker (`COMPLETE`) into it;
only a folder with the marker is ever resumed (trainer.last_checkpoint), so a torn one cannot be picked.

Told: the signal only sets a flag (a handler must not do work); at the end of the optimizer step the
ranks agree (all-reduce, max) on whether any of them was signalled or is past the interval, so every
rank saves the same step (ZeRO would hang otherwise). A signalled run then stops and the stage ends
unfinished (StoppedBySignal, exit 3); the requeued job resumes from that checkpoint with the same data
order (the Trainer skips the batches already trained and restores the RNG states).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional

from deepwriter.core.errors import UnfinishedError

log = logging.getLogger("deepwriter.sft")

COMPLETE = "deepwriter_complete.json"
# what a scheduler sends before it ends a job: SLURM's --signal (USR1 here, USR2 from submitit), SIGTERM
STOP_SIGNALS = ("SIGUSR1", "SIGUSR2", "SIGTERM")


class StoppedBySignal(UnfinishedError):
    """Training stopped early because the scheduler is ending the job; its checkpoint is saved and the
    same command (the requeued job) resumes from it."""

    def __init__(self, signal_name: str, step: int, max_steps: int, checkpoint: Optional[Path]):
        self.stage, self.what, self.unfinished, self.total = "sft", "steps", max_steps - step, max_steps
        self.last_error = f"stopped by {signal_name}"
        Exception.__init__(
            self,
            f"sft: stopped by {signal_name} after step {step} of {max_steps}; saved {checkpoint}; "
            "the same command (a requeued job) resumes from it",
        )


class StopRequest:
    """The stop signals of this process, caught while training runs (the previous handlers come back
    afterwards). `signal_name` is the first one received, or None."""

    def __init__(self) -> None:
        self.signal_name: Optional[str] = None
        self._previous: Dict[int, Any] = {}

    def _caught(self, signum: int, frame: Any) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers (a stage run from a thread: no stop on signal)
        for name in STOP_SIGNALS:
            sig = getattr(signal, name)
            self._previous[sig] = signal.signal(sig, self._caught)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def mark_complete(checkpoint: Path, step: int) -> None:
    """Flush the checkpoint's files to disk, then rename the marker into the folder: a folder with the
    marker holds a whole save even after a crash of the node."""
    for path in sorted(checkpoint.rglob("*")):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    tmp = checkpoint / (COMPLETE + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"step": step, "saved_at": time.time()}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, checkpoint / COMPLETE)
    dir_fd = os.open(checkpoint, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def is_complete(checkpoint: Path) -> bool:
    return (checkpoint / COMPLETE).is_file()


def _agree(flags: list, device: Any) -> list:
    """Every rank's flags, max over the ranks (each rank's own where training runs alone)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flags
    import torch

    t = torch.tensor(flags, dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [int(x) for x in t.tolist()]


def make_save_callback(save_every_min: Optional[float], stop: StopRequest):
    """A TrainerCallback that saves a checkpoint every `save_every_min` minutes of training (None: only
    on `save_steps`) and on a stop signal (then stops training), and marks every save whole."""
    from transformers import TrainerCallback

    class SaveWhenTold(TrainerCallback):
        def __init__(self) -> None:
            self.last_save = time.monotonic()
            self.stopped_at: Optional[int] = None  # the step a stop signal ended training at

        def on_train_begin(self, args, state, control, **kwargs):
            self.last_save = time.monotonic()
            stop.install()

        def on_train_end(self, args, state, control, **kwargs):
            stop.restore()

        def on_step_end(self, args, state, control, **kwargs):
            due = save_every_min is not None and time.monotonic() - self.last_save >= save_every_min * 60
            due, signalled = _agree([int(due), int(stop.signal_name is not None)], args.device)
            if signalled:
                stop.signal_name = stop.signal_name or "a stop signal (on another rank)"
                step = state.global_step
                log.warning("sft: %s at step %d: saving a checkpoint, then stopping", stop.signal_name, step)
                self.stopped_at = state.global_step
                control.should_save = True
                control.should_training_stop = True
            elif due:
                log.info("sft: %.1f min since the last checkpoint: saving step %d", save_every_min, state.global_step)
                control.should_save = True
            return control

        def on_save(self, args, state, control, **kwargs):
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.barrier()  # every rank's shards are written before rank 0 calls the folder whole
            if state.is_world_process_zero:
                mark_complete(Path(args.output_dir) / f"checkpoint-{state.global_step}", state.global_step)
            if dist.is_available() and dist.is_initialized():
                dist.barrier()
            self.last_save = time.monotonic()

    return SaveWhenTold()

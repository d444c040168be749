"""The save-when-told callback without a training: what it asks the Trainer for at the end of a step
(a stop signal: save, then stop; the interval passed: save), and the marker it puts on a save."""

from __future__ import annotations

import os
import signal
import time
from types import SimpleNamespace

import pytest

from deepwriter.sft import trainer as tr
from deepwriter.sft.preemption import COMPLETE, StopRequest, is_complete, make_save_callback


def _step_end(cb, step: int):
    from transformers import TrainerControl

    args = SimpleNamespace(device="cpu")
    return cb.on_step_end(args, SimpleNamespace(global_step=step), TrainerControl())


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM], ids=lambda s: s.name)
def test_a_stop_signal_saves_the_step_and_stops(sig):
    stop = StopRequest()
    cb = make_save_callback(None, stop)
    before = signal.getsignal(sig)
    cb.on_train_begin(None, None, None)
    try:
        control = _step_end(cb, 5)
        assert not control.should_save and not control.should_training_stop
        os.kill(os.getpid(), sig)  # caught: the process goes on
        control = _step_end(cb, 6)
        assert control.should_save and control.should_training_stop
        assert cb.stopped_at == 6 and stop.signal_name == signal.Signals(sig).name
    finally:
        cb.on_train_end(None, None, None)
    assert signal.getsignal(sig) == before  # the handler is training's only


def test_the_interval_saves_without_stopping(tmp_path):
    stop = StopRequest()
    cb = make_save_callback(0.5 / 60, stop)  # half a second
    cb.on_train_begin(None, None, None)
    try:
        assert not _step_end(cb, 1).should_save
        time.sleep(0.6)
        control = _step_end(cb, 2)
        assert control.should_save and not control.should_training_stop and cb.stopped_at is None
        # the save resets the clock and marks the folder whole
        (tmp_path / "checkpoint-2").mkdir()
        (tmp_path / "checkpoint-2" / "model.safetensors").write_bytes(b"weights")
        args = SimpleNamespace(output_dir=str(tmp_path))
        cb.on_save(args, SimpleNamespace(global_step=2, is_world_process_zero=True), control)
        assert is_complete(tmp_path / "checkpoint-2") and not (tmp_path / (COMPLETE + ".tmp")).exists()
        assert not _step_end(cb, 3).should_save
    finally:
        cb.on_train_end(None, None, None)
    assert tr.last_checkpoint(tmp_path) == tmp_path / "checkpoint-2"

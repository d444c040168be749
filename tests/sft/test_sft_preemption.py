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


def _rank(rank: int, out: str) -> None:
    """One of two gloo ranks: rank 1 alone is signalled after step 2; both must save and stop at step 3."""
    import json

    import torch.distributed as dist

    # a rendezvous file, not a port: no other process on the machine can take it between pick and bind
    dist.init_process_group("gloo", init_method=f"file://{out}.rendezvous", rank=rank, world_size=2)
    try:
        stop = StopRequest()
        cb = make_save_callback(None, stop)
        cb.on_train_begin(None, None, None)
        seen = []
        for step in (1, 2, 3):
            if rank == 1 and step == 3:
                os.kill(os.getpid(), signal.SIGUSR1)
            control = _step_end(cb, step)
            seen.append([control.should_save, control.should_training_stop])
        cb.on_train_end(None, None, None)
        with open(f"{out}.{rank}", "w") as f:
            json.dump({"seen": seen, "signal": stop.signal_name}, f)
        # both ranks leave gloo together: a rank that tears its group down while the other still talks
        # to it can abort the process ("terminate called without an active exception"), 1 run in 3 here
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes importing torch + transformers: ~35-45 s on 2 shared cores
def test_ranks_agree_on_the_step_one_of_them_was_signalled_at(tmp_path):
    """A rank that saves while another trains on would hang ZeRO: the decision is all-reduced."""
    import json

    import torch.multiprocessing as mp

    mp.spawn(_rank, args=(str(tmp_path / "rank"),), nprocs=2, join=True)
    got = [json.loads((tmp_path / f"rank.{r}").read_text()) for r in (0, 1)]
    assert [g["seen"] for g in got] == [[[False, False], [False, False], [True, True]]] * 2
    assert got[1]["signal"] == "SIGUSR1" and got[0]["signal"] == "a stop signal (on another rank)"

"""The stage job's side of a scheduler's stop signal, without a scheduler: submitit's checkpoint (the
requeue) waits until the stage process has saved and exited, and leaves it for the job to reap."""

from __future__ import annotations

import subprocess
import sys
import time

from deepwriter.cluster.launcher import StageJob

# a stage that takes 1 s to save once told (SIGUSR1), then exits 3 (unfinished), as SFT does
SAVING_STAGE = """
import signal, sys, time
told = []
signal.signal(signal.SIGUSR1, lambda *a: told.append(time.time()))
print("ready", flush=True)
while not told:
    time.sleep(0.01)
time.sleep(1.0)
sys.exit(3)
"""


def test_the_requeue_waits_for_the_stage_to_save_and_exit():
    job = StageJob("sft", [], "r", ".", 1)
    job._child = subprocess.Popen([sys.executable, "-c", SAVING_STAGE], stdout=subprocess.PIPE, text=True)
    assert job._child.stdout.readline().strip() == "ready"
    t0 = time.time()
    delayed = job.checkpoint()  # what submitit calls on the scheduler's signal, before it requeues
    waited = time.time() - t0
    assert 0.9 <= waited < 30, waited
    assert delayed.function is job and "_child" not in job.__getstate__()  # pickled for the requeue without it
    assert job._child.wait(timeout=5) == 3  # not reaped by the wait: the job still reads the stage's exit code

"""Supervised fine-tuning of the student on the mixed dataset (TRL SFTTrainer, DeepSpeed ZeRO, PEFT).

Modules: stage.py (the stage function), trainer.py (arguments, batch geometry, resume, metrics),
preemption.py (saves on an interval and on a scheduler's stop signal; whole-checkpoint markers),
data.py (validation and tokenisation with assistant-only labels), templates.py (the training chat
template), plan.py (per-GPU memory planner), export.py (model folder and card), launch.py (starting
ranks), synthetic.py (long-tailed synthetic data for tests and benchmarks).

Running on several GPUs:
- one node: `python -m deepwriter.train +recipe=full sft.num_processes=8` — the stage starts 8 ranks
  through torchrun and waits for them;
- several nodes with a hostfile (`host slots=8`, one line per node, passwordless ssh, same checkout
  and a shared filesystem): `... sft.num_processes=8 sft.num_nodes=2 sft.launcher=deepspeed
  sft.hostfile=/path/hostfile`;
- under SLURM: `python -m deepwriter.train +recipe=full launcher=slurm sft.num_processes=8 sft.num_nodes=2`
  submits the sft stage as one job of 16 tasks, one per rank (deepwriter.cluster.launcher).
"""

"""Typed config of the SFT stage (defaults in conf/sft/*.yaml and conf/deepspeed/*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from deepwriter.core.schema import SEED_MAX, bounded, one_of, operational

LR_SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "cosine_with_min_lr",
    "polynomial",
    "inverse_sqrt",
    "warmup_stable_decay",
)
# How SFT computes attention over packed rows (deepwriter.llm.attention.training_attention): auto takes
# the fastest kernel that skips the masked pairs where one runs (flash-attention varlen, FlexAttention),
# else SDPA.
ATTENTION_CHOICES = ("auto", "flash_attention_2", "flex_attention", "sdpa", "eager")


@dataclass
class DeepSpeedConfig:
    enabled: bool = False
    # The DeepSpeed JSON config as a mapping; "auto" values are filled in by transformers.
    config: Dict[str, Any] = field(default_factory=dict)


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = bounded(16, ge=1, le=65_536)
    alpha: int = bounded(32, ge=1, le=1_000_000)
    dropout: float = bounded(0.05, ge=0.0, lt=1.0)
    target_modules: str = "all-linear"
    merge_on_export: bool = True  # false: model/ holds the adapter only (plus tokenizer and card)


@dataclass
class SFTConfig:
    epochs: float = bounded(3.0, gt=0.0, le=1000.0)
    max_steps: int = bounded(-1, ge=-1, le=10_000_000)  # >0 overrides epochs; -1: epochs decide (0 is refused)
    learning_rate: float = bounded(2e-5, gt=0.0, le=1.0)
    lr_scheduler: str = one_of("constant", *LR_SCHEDULERS)
    warmup_ratio: float = bounded(0.0, ge=0.0, lt=1.0)
    # Global batch = per-device batch x gradient accumulation x world size. Give the global batch
    # (accumulation is derived) or the accumulation (global batch is derived); both must agree.
    global_batch_size: Optional[int] = bounded(96, ge=1, le=1_000_000)
    per_device_batch_size: int = bounded(1, ge=1, le=65_536)
    gradient_accumulation_steps: Optional[int] = bounded(None, ge=1, le=65_536)
    max_length: int = bounded(16384, ge=1, le=10_000_000)
    # samples over max_length: truncate | drop (counted either way)
    overlong: str = one_of("truncate", "truncate", "drop")
    strict: bool = True  # a malformed row fails the stage (false: counted skip with the reason)
    packing: bool = True  # TRL best-fit-decreasing packing, padding-free (position ids reset per sample)
    gradient_checkpointing: bool = True
    attention: str = one_of("auto", *ATTENTION_CHOICES, operational=True)  # the same loss whichever runs
    bf16: bool = True
    optim: str = "adamw_torch"
    weight_decay: float = bounded(0.0, ge=0.0, le=10.0)
    max_grad_norm: float = bounded(1.0, ge=0.0, le=1_000_000.0)
    # auto (when liger-kernel is installed and a GPU is there) | true | false
    liger: str = one_of("auto", "auto", "true", "false", operational=True)
    logging_steps: int = bounded(1, ge=1, le=10_000_000, operational=True)
    save_steps: int = bounded(500, ge=1, le=10_000_000, operational=True)
    save_total_limit: int = bounded(2, ge=1, le=1000, operational=True)
    # also save every this many minutes of training (null: on save_steps only), so a job that the
    # scheduler kills without warning loses at most this much; a stop signal (SLURM's --signal=USR1@s,
    # SIGTERM) saves at once and stops (deepwriter.sft.preemption)
    save_every_min: Optional[float] = bounded(30.0, gt=0.0, le=1_000_000.0, operational=True)
    seed: int = bounded(0, ge=0, le=SEED_MAX)
    use_cpu: bool = False
    # ranks per node; >1: the stage starts them itself (see deepwriter.sft.launch)
    num_processes: int = bounded(1, ge=1, le=1024, operational=True)
    num_nodes: int = bounded(1, ge=1, le=100_000, operational=True)
    # torchrun | deepspeed (deepspeed + hostfile for several nodes)
    launcher: str = one_of("torchrun", "torchrun", "deepspeed", operational=True)
    hostfile: Optional[str] = operational(None)
    # the planner refuses a plan that needs more per GPU; 0 turns the check off
    gpu_memory_gb: float = bounded(80.0, ge=0.0, le=100_000.0, operational=True)
    # per-GPU dense bf16 peak for the MFU estimate (H100 SXM); a CPU run uses its measured matmul rate
    peak_tflops: float = bounded(989.0, gt=0.0, le=1_000_000.0, operational=True)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    chat_template: Optional[str] = None  # null: the project's training template (see sft/templates.py)

"""Typed config of the SFT stage (defaults in conf/sft/*.yaml and conf/deepspeed/*.yaml)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional


@dataclass
class DeepSpeedConfig:
    enabled: bool = False
    # The DeepSpeed JSON config as a mapping; "auto" values are filled in by transformers.
    config: Dict[str, Any] = field(default_factory=dict)


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str = "all-linear"
    merge_on_export: bool = True  # false: model/ holds the adapter only (plus tokenizer and card)


@dataclass
class SFTConfig:
    epochs: float = 3.0
    max_steps: int = -1  # >0 overrides epochs
    learning_rate: float = 2e-5
    lr_scheduler: str = "constant"
    warmup_ratio: float = 0.0
    # Global batch = per-device batch x gradient accumulation x world size. Give the global batch
    # (accumulation is derived) or the accumulation (global batch is derived); both must agree.
    global_batch_size: Optional[int] = 96
    per_device_batch_size: int = 1
    gradient_accumulation_steps: Optional[int] = None
    max_length: int = 16384
    overlong: str = "truncate"  # samples over max_length: truncate | drop (counted either way)
    strict: bool = True  # a malformed row fails the stage (false: counted skip with the reason)
    packing: bool = True  # TRL best-fit-decreasing packing, padding-free (position ids reset per sample)
    gradient_checkpointing: bool = True
    bf16: bool = True
    optim: str = "adamw_torch"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    liger: str = "auto"  # auto (when liger-kernel is installed and a GPU is there) | true | false
    logging_steps: int = 1
    save_steps: int = 500
    save_total_limit: int = 2
    seed: int = 0
    use_cpu: bool = False
    num_processes: int = 1  # ranks per node; >1: the stage starts them itself (see deepwriter.sft.launch)
    num_nodes: int = 1
    launcher: str = "torchrun"  # torchrun | deepspeed (deepspeed + hostfile for several nodes)
    hostfile: Optional[str] = None
    gpu_memory_gb: float = 80.0  # the planner refuses a plan that needs more per GPU; 0 turns the check off
    peak_tflops: float = 989.0  # per-device dense bf16 peak for the MFU estimate (H100 SXM)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    chat_template: Optional[str] = None  # null: the project's training template (see sft/templates.py)

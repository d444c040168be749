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
    merge_on_export: bool = True


@dataclass
class SFTConfig:
    epochs: float = 3.0
    max_steps: int = -1  # >0 overrides epochs
    learning_rate: float = 2e-5
    lr_scheduler: str = "constant"
    warmup_ratio: float = 0.0
    global_batch_size: int = 96
    per_device_batch_size: int = 1
    max_length: int = 16384
    packing: bool = True
    gradient_checkpointing: bool = True
    bf16: bool = True
    optim: str = "adamw_torch"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    logging_steps: int = 1
    save_steps: int = 500
    seed: int = 0
    use_cpu: bool = False
    num_processes: int = 1  # >1: deepwriter.train starts that many ranks through torchrun
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    chat_template: Optional[str] = None  # null: the project's training template

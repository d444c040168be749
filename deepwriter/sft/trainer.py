"""TRL's SFTTrainer configured from our typed config: batch geometry, DeepSpeed, LoRA, metrics,
checkpoints that a killed run resumes from, and the final export.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import resource
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from deepwriter.config.root import ConfigError, RootConfig, stable_hash
from deepwriter.config.sft import SFTConfig
from deepwriter.core.errors import DeepwriterError
from deepwriter.core.schema import key_slice
from deepwriter.llm import precision
from deepwriter.sft.preemption import is_complete

log = logging.getLogger("deepwriter.sft")

FINGERPRINT = "run_fingerprint.json"
TRAIN_LOG = "train_log.jsonl"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class ResumeError(DeepwriterError, RuntimeError):
    """A checkpoint that belongs to a different training configuration."""


@dataclass(frozen=True)
class BatchGeometry:
    per_device: int
    grad_accum: int
    world_size: int

    @property
    def global_batch(self) -> int:
        return self.per_device * self.grad_accum * self.world_size


def world_size_for(sft_cfg: SFTConfig) -> int:
    """Ranks of this training: the launcher's WORLD_SIZE inside a launch, else what the config asks for."""
    if os.environ.get("WORLD_SIZE"):
        return int(os.environ["WORLD_SIZE"])
    return max(1, sft_cfg.num_processes) * max(1, sft_cfg.num_nodes)


def batch_geometry(sft_cfg: SFTConfig, world_size: int) -> BatchGeometry:
    """Per-device batch x accumulation x world size = global batch, from whichever two are given."""
    per, accum, glob = sft_cfg.per_device_batch_size, sft_cfg.gradient_accumulation_steps, sft_cfg.global_batch_size
    if per < 1:
        raise ConfigError(f"sft.per_device_batch_size: got {per}; expected >= 1")
    if glob is None and accum is None:
        raise ConfigError("sft.global_batch_size: give global_batch_size or gradient_accumulation_steps")
    if glob is None:
        return BatchGeometry(per, accum, world_size)
    per_step = per * world_size
    if glob < per_step or glob % per_step:
        raise ConfigError(
            f"sft.global_batch_size: {glob} is not a multiple of per_device_batch_size x world size = "
            f"{per} x {world_size} = {per_step}; choose a global batch of {max(per_step, glob // per_step * per_step)} "
            f"or {(glob // per_step + 1) * per_step}, or change per_device_batch_size / the number of processes"
        )
    derived = glob // per_step
    if accum is not None and accum != derived:
        raise ConfigError(
            f"sft.gradient_accumulation_steps: {accum} disagrees with global_batch_size {glob} = "
            f"{per} (per device) x {derived} (accumulation) x {world_size} (world size); set one of them to null"
        )
    return BatchGeometry(per, derived, world_size)


def preflight(cfg: RootConfig) -> None:
    """Before any stage runs: the global batch must split over the ranks this training will have."""
    batch_geometry(cfg.sft, world_size_for(cfg.sft))


def use_liger(setting: str) -> bool:
    setting = str(setting).lower()
    if setting in ("false", "off", "no"):
        return False
    installed = importlib.util.find_spec("liger_kernel") is not None
    if setting in ("true", "on", "yes"):
        if not installed:
            raise ConfigError("sft.liger: true, but liger-kernel is not installed (pip install liger-kernel)")
        return True
    import torch

    return installed and torch.cuda.is_available()


def export_dtype(sft_cfg: SFTConfig):
    import torch

    return torch.bfloat16 if sft_cfg.bf16 else torch.float32


def training_arguments(sft_cfg: SFTConfig, out_dir: Path, geometry: BatchGeometry):
    """The TRL SFTConfig for our config (TrainingArguments underneath)."""
    from trl import SFTConfig as TRLSFTConfig

    if not 0.0 <= sft_cfg.warmup_ratio < 1.0:
        raise ConfigError(f"sft.warmup_ratio: got {sft_cfg.warmup_ratio}; expected a fraction in [0, 1)")
    ds = sft_cfg.deepspeed.config if sft_cfg.deepspeed.enabled else None
    return TRLSFTConfig(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=sft_cfg.epochs,
        max_steps=sft_cfg.max_steps,
        learning_rate=sft_cfg.learning_rate,
        lr_scheduler_type=sft_cfg.lr_scheduler,
        warmup_steps=sft_cfg.warmup_ratio,  # a float below 1 is a fraction of the steps
        per_device_train_batch_size=geometry.per_device,
        gradient_accumulation_steps=geometry.grad_accum,
        optim=sft_cfg.optim,
        weight_decay=sft_cfg.weight_decay,
        max_grad_norm=sft_cfg.max_grad_norm,
        max_length=sft_cfg.max_length,
        packing=sft_cfg.packing,
        packing_strategy="bfd",  # keeps samples whole; padding-free with position ids reset per sample
        assistant_only_loss=False,  # the labels are built before TRL sees the data (see sft/data.py)
        gradient_checkpointing=sft_cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if sft_cfg.gradient_checkpointing else None,
        bf16=sft_cfg.bf16,
        fp16=False,
        use_cpu=sft_cfg.use_cpu,
        use_liger_kernel=use_liger(sft_cfg.liger),
        deepspeed=ds,
        logging_steps=sft_cfg.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=sft_cfg.save_steps,
        save_total_limit=sft_cfg.save_total_limit,
        seed=sft_cfg.seed,
        data_seed=sft_cfg.seed,
        report_to="none",  # metrics go through deepwriter's tracker (MetricsCallback)
        dataloader_num_workers=0,
        dataset_num_proc=None,
        disable_tqdm=False,
    )


# --- resume ------------------------------------------------------------------------------------


def run_fingerprint(cfg: RootConfig, geometry: BatchGeometry) -> Dict[str, Any]:
    """What must be equal for a checkpoint to continue this run: the stage key's view of the config (its
    operational fields — where and how often it saves, how ranks start — left out) and the batch geometry."""
    return {"student": key_slice(cfg.models.student), "sft": key_slice(cfg.sft), "geometry": asdict(geometry)}


def _diff(a: Any, b: Any, path: str = "") -> List[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if a == b else [f"{path}: checkpoint {a!r}, now {b!r}"]


def _checkpoints(ckpt_dir: Path) -> List[Path]:
    """The checkpoint folders, newest step first."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True)]


def last_checkpoint(ckpt_dir: Path) -> Optional[Path]:
    """The newest whole checkpoint: one whose save finished and was marked (a save killed half-way,
    even one with a trainer_state.json, has no marker; see sft/preemption.py)."""
    return next((p for p in _checkpoints(ckpt_dir) if is_complete(p)), None)


def remove_torn(ckpt_dir: Path) -> List[str]:
    """Delete the checkpoint folders whose save never finished (rank 0, before training): they are
    never resumed, and left in place they would count towards save_total_limit."""
    torn = [p for p in _checkpoints(ckpt_dir) if not is_complete(p)]
    for path in torn:
        shutil.rmtree(path, ignore_errors=True)
    return [p.name for p in torn]


def checkpoint_step(path: Path) -> int:
    return int(_CHECKPOINT.match(path.name).group(1))


def checkpoint_finished(path: Path) -> bool:
    """Whether the run had reached its last step when this checkpoint was saved."""
    state = json.loads((path / "trainer_state.json").read_text())
    return state.get("max_steps", 0) > 0 and state.get("global_step", 0) >= state["max_steps"]


def check_resume(ckpt_dir: Path, fingerprint: Dict[str, Any], is_main: bool) -> Optional[Path]:
    """The checkpoint to resume from (None: a fresh start). Refuses checkpoints of another config."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    fp_file = ckpt_dir / FINGERPRINT
    last = last_checkpoint(ckpt_dir)
    if fp_file.exists():
        saved = json.loads(fp_file.read_text())
        if stable_hash(saved) != stable_hash(fingerprint):
            diffs = _diff(saved, fingerprint)
            if last is not None:
                raise ResumeError(
                    f"{ckpt_dir}: the checkpoints here come from a different training configuration ("
                    + "; ".join(diffs[:5])
                    + "); restore that configuration to resume, or delete the folder to start over"
                )
    if is_main:
        torn = remove_torn(ckpt_dir)
        if torn:
            log.warning("%s: removed %s, saved only in part (a job ended mid-save)", ckpt_dir, ", ".join(torn))
    if is_main and (last is None or not fp_file.exists()):
        fp_file.write_text(json.dumps(fingerprint, indent=2, sort_keys=True, default=str))
    return last


def trim_log(log_path: Path, upto_step: int) -> None:
    """Drop the log lines a killed run wrote after its last checkpoint: those steps are redone."""
    if not log_path.exists():
        return
    keep = [
        line for line in log_path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= upto_step
    ]
    log_path.write_text("".join(line + "\n" for line in keep))


def read_log(log_path: Path) -> List[Dict[str, Any]]:
    if not log_path.exists():
        return []
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]


# --- metrics -----------------------------------------------------------------------------------


def _memory_gb() -> Dict[str, float]:
    import torch

    if torch.cuda.is_available():
        return {
            "mem/gpu_max_allocated_gb": torch.cuda.max_memory_allocated() / 1024**3,
            "mem/gpu_reserved_gb": torch.cuda.memory_reserved() / 1024**3,
        }
    return {"mem/cpu_max_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}


def training_device(sft_cfg: SFTConfig) -> str:
    import torch

    return "cpu" if sft_cfg.use_cpu or not torch.cuda.is_available() else "cuda"


def compute_dtype(bf16_autocast: bool, model: Any) -> str:
    """The dtype the model's matmuls run in: bf16 under the trainer's bf16 mode (autocast, or DeepSpeed's
    bf16 weights), else the weights' own dtype."""
    if bf16_autocast:
        return "bfloat16"
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def mfu_peak(sft_cfg: SFTConfig, dtype: str) -> Tuple[Optional[float], str]:
    """The per-device peak (TFLOP/s) that MFU is measured against, for the dtype the training computes
    in, and where it comes from: on a CPU this CPU's measured matmul rate in that dtype (a GPU's
    datasheet peak would make a CPU's MFU a meaningless 1e-4), on a GPU `sft.peak_tflops`, a bf16
    peak (None for another dtype: its peak is not configured)."""
    if training_device(sft_cfg) == "cpu":
        rate = precision.cpu_peak_rate(dtype)
        return (
            rate / 1e12,
            f"this CPU's measured {dtype} matmul peak, {rate / 1e9:.1f} GFLOP/s ({precision.cpu_description()})",
        )
    if dtype != "bfloat16":
        return None, f"training computes in {dtype}; sft.peak_tflops is a bf16 peak, so MFU is not computed"
    return sft_cfg.peak_tflops, f"sft.peak_tflops = {sft_cfg.peak_tflops:g} TFLOP/s per GPU (dense bf16 datasheet peak)"


def _mfu(flops_per_s: float, peak_tflops: Optional[float], world_size: int) -> Optional[float]:
    """Model FLOPs utilisation, or None (said once in the log) where it cannot be true: above 1 the
    peak is wrong, not the training fast (a sft.peak_tflops below the GPU's own, or a CPU whose peak
    was measured while other work kept it busy)."""
    if not peak_tflops:
        return None
    mfu = flops_per_s / (peak_tflops * 1e12 * world_size)
    if mfu <= 1.0:
        return mfu
    if not _MFU_WARNED:
        _MFU_WARNED.append(True)
        log.warning(
            "MFU %.2f is above 1: its peak (%.4g TFLOP/s per device) is below what this training reached, so the "
            "peak is wrong (sft.peak_tflops below this GPU's, or this CPU's measured while other work kept it "
            "busy); MFU left empty",
            mfu,
            peak_tflops,
        )
    return None


_MFU_WARNED: List[bool] = []  # one warning per process


def make_metrics_callback(
    log_path: Path, tracker: Any, flops_per_token: float, peak_tflops: Optional[float], world_size: int
):
    """A TrainerCallback that adds tokens/s, MFU and memory to TRL's logs, appends every log to
    `log_path` (JSON lines, rank 0) and forwards it to the W&B tracker. `flops_per_token`: a trained
    token's forward and backward FLOPs (ModelShape.training_flops_per_token); `peak_tflops`: the peak of
    one device (`mfu_peak`)."""
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        def __init__(self) -> None:
            self.last_time: Optional[float] = None
            self.last_tokens: Optional[float] = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.last_time = time.time()
            self.last_tokens = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            now = time.time()
            row: Dict[str, Any] = {
                "step": state.global_step,
                **{k: v for k, v in logs.items() if isinstance(v, (int, float))},
            }
            tokens = logs.get("num_tokens")
            if (
                tokens is not None
                and self.last_tokens is not None
                and now > self.last_time
                and tokens > self.last_tokens
            ):
                tps = (tokens - self.last_tokens) / (now - self.last_time)
                row["tokens_per_s"] = tps
                row["mfu"] = _mfu(flops_per_token * tps, peak_tflops, world_size)
            if tokens is not None:
                self.last_tokens, self.last_time = tokens, now
            row.update(_memory_gb())
            with open(log_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            tracker.log(
                {f"train/{k}": v for k, v in row.items() if k != "step" and v is not None}, step=state.global_step
            )

    return MetricsCallback()

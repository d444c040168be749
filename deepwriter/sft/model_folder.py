"""The final model folder: 16-bit (or the training dtype) safetensors, tokenizer with the training
chat template, generation config that stops at the end of an assistant turn, and a model card."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

from deepwriter.config.root import RootConfig, to_plain

log = logging.getLogger("deepwriter.sft")


def set_stop_tokens(model: Any, tokenizer: Any) -> None:
    """Generation must end at the template's end-of-turn token as well as the model's own eos."""
    gen = getattr(model, "generation_config", None)
    if gen is None or tokenizer.eos_token_id is None:
        return
    ids = gen.eos_token_id
    ids = [] if ids is None else ([ids] if isinstance(ids, int) else list(ids))
    if tokenizer.eos_token_id not in ids:
        gen.eos_token_id = [tokenizer.eos_token_id, *ids] if ids else tokenizer.eos_token_id
    if gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id


def merge_lora(base_where: str, base_kwargs: dict, adapter_dir: Path, dest: Path, tokenizer: Any, dtype: Any) -> None:
    """Load the base weights on CPU, apply the trained adapter and save the merged model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_where, dtype=dtype, **base_kwargs)
    if base.get_input_embeddings().weight.shape[0] != len(tokenizer):
        base.resize_token_embeddings(len(tokenizer))
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    set_stop_tokens(merged, tokenizer)
    merged.save_pretrained(str(dest))


def finalize(partial: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(partial, dest)


def write_model_card(
    dest: Path,
    cfg: RootConfig,
    counts: Dict[str, Any],
    metrics: Dict[str, Any],
    sources: Dict[str, int],
    dataset_dir: Path,
) -> None:
    sft = to_plain(cfg.sft)
    lines = [
        "---",
        "library_name: transformers",
        "tags: [deepwriter, reer, sft, trl]",
        f"base_model: {cfg.models.student.path or cfg.models.student.name}",
        "---",
        f"# {cfg.recipe.name} SFT of {cfg.models.student.name}",
        "",
        "Fine-tuned by deepwriter (REER: reverse-engineered reasoning for open-ended writing). Assistant turns are "
        "`<think>\\nreasoning\\n</think>\\n\\nanswer` in a ChatML template; the loss covers assistant tokens only.",
        "",
        "## Data",
        f"- dataset: `{dataset_dir}`",
        f"- rows {counts.get('rows')}, trained samples {counts.get('samples')}, skipped {counts.get('skipped')}, "
        f"over max_length {counts.get('overlong')} "
        f"(truncated {counts.get('truncated')}, dropped {counts.get('dropped_overlong')})",
        f"- tokens {counts.get('tokens')}, of which with loss {counts.get('loss_tokens')}",
    ]
    lines += [f"- source `{k}`: {v} samples" for k, v in sorted(sources.items())]
    lines += ["", "## Training", "", "| setting | value |", "|---|---|"]
    for key in (
        "epochs",
        "max_steps",
        "learning_rate",
        "lr_scheduler",
        "warmup_ratio",
        "global_batch_size",
        "per_device_batch_size",
        "max_length",
        "packing",
        "gradient_checkpointing",
        "bf16",
        "optim",
        "weight_decay",
        "max_grad_norm",
        "seed",
    ):
        lines.append(f"| {key} | {sft.get(key)} |")
    lines.append(f"| gradient accumulation x world size | {counts.get('grad_accum')} x {counts.get('world_size')} |")
    lines.append(f"| deepspeed | {json.dumps(sft['deepspeed']['config']) if sft['deepspeed']['enabled'] else 'off'} |")
    lines.append(f"| lora | {json.dumps(sft['lora']) if sft['lora']['enabled'] else 'off'} |")
    lines += ["", "## Results", ""]
    lines += [f"- {k}: {v}" for k, v in metrics.items()]
    (dest / "README.md").write_text("\n".join(lines) + "\n")


def plot_loss(rows: list, path: Path) -> Optional[Path]:
    pts = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 60 else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title("SFT loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

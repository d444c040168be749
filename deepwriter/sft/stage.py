"""The SFT stage: mix dataset -> tokenised rows -> TRL SFTTrainer (DeepSpeed / LoRA as configured) ->
`model/` (safetensors, tokenizer, chat template, README.md model card), with the loss curve in
plots/ and every log line in train_log.jsonl.

Several ranks: when `sft.num_processes x sft.num_nodes > 1` and this process was not itself started by
a launcher, the stage starts the ranks (deepwriter.sft.launch) and waits; when the whole train command
runs under torchrun (WORLD_SIZE set), every rank runs this function and trains directly.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from deepwriter.config.root import ConfigError, RootConfig
from deepwriter.core.contract import StageContext, StageResult, StageSpec, rank
from deepwriter.llm import models
from deepwriter.sft import data as sft_data
from deepwriter.sft import model_folder as export
from deepwriter.sft import trainer as tr
from deepwriter.sft.data import attention_pairs_per_token
from deepwriter.sft.launch import launch
from deepwriter.sft.memory import ModelShape, check_fits, plan_from_config
from deepwriter.sft.preemption import StoppedBySignal, StopRequest, make_save_callback
from deepwriter.sft.templates import apply_training_template

log = logging.getLogger("deepwriter.sft")
RESULT = "result.json"


def print_plan(cfg: RootConfig, geometry: tr.BatchGeometry) -> None:
    """Print the memory plan and refuse one that cannot fit (GPU runs only)."""
    from transformers import AutoConfig

    where, kwargs = models.resolve(cfg.models.student, cfg.paths.cache_dir)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    shape = ModelShape.from_hf_config(AutoConfig.from_pretrained(where, **kwargs))
    plan = plan_from_config(cfg.sft, shape, geometry.world_size, geometry.grad_accum)
    print(plan.describe(0 if cfg.sft.use_cpu else cfg.sft.gpu_memory_gb), flush=True)
    if not cfg.sft.use_cpu:
        check_fits(plan, cfg.sft.gpu_memory_gb)


def run(cfg: RootConfig, ctx: StageContext) -> StageResult:
    if "mix" not in ctx.inputs:
        raise ConfigError("sft: needs the mix stage's output (ctx.inputs['mix'])")
    world = tr.world_size_for(cfg.sft)
    geometry = tr.batch_geometry(cfg.sft, world)  # an indivisible batch fails here, before any launch
    launching = world > 1 and not os.environ.get("WORLD_SIZE")
    if rank() == 0:
        print_plan(cfg, geometry)
    if launching:
        launch(cfg, ctx)
        return load_result(ctx.out_dir)
    return train(cfg, ctx.out_dir, ctx.inputs["mix"], ctx.tracker, ctx.run_dir, geometry)


def load_result(out_dir: Path) -> StageResult:
    path = out_dir / RESULT
    if not path.exists():
        raise RuntimeError(f"{path}: the training ranks finished without writing their result")
    data = json.loads(path.read_text())
    return StageResult(counts=data["counts"], metrics=data["metrics"], artifacts=data["artifacts"])


def train(
    cfg: RootConfig, out_dir: Path, mix_dir: Path, tracker: Any, run_dir: Optional[Path], geometry: tr.BatchGeometry
) -> StageResult:
    """Train on this process (one rank of a launch, or alone) and export the model."""

    is_main = rank() == 0
    out_dir.mkdir(parents=True, exist_ok=True)
    student = cfg.models.student
    tokenizer = models.load_tokenizer(student, cfg.paths.cache_dir)
    tokenizer, added = apply_training_template(tokenizer, cfg.sft.chat_template)
    prepared = sft_data.prepare(
        Path(mix_dir) / "dataset",
        tokenizer,
        cfg.sft.max_length,
        cfg.sft.overlong,
        cfg.sft.strict,
        out_dir / "tokenized",
        is_main=is_main,
    )
    log_path = out_dir / tr.TRAIN_LOG
    resume = tr.check_resume(out_dir / "checkpoints", tr.run_fingerprint(cfg, geometry), is_main)
    if resume is not None:
        log.info("resuming from %s", resume)
        if is_main:
            tr.trim_log(log_path, tr.checkpoint_step(resume))
    elif is_main and log_path.exists():
        log_path.unlink()

    partial = out_dir / "model.partial"
    if is_main and partial.exists():
        shutil.rmtree(partial)
    run = _train_and_save(cfg, out_dir, partial, prepared.path, tokenizer, added, tracker, geometry, resume)
    if not is_main:
        return StageResult()
    tokenizer.save_pretrained(str(partial))
    return _finish(cfg, out_dir, partial, Path(mix_dir), prepared, geometry, resume, run, tracker)


@dataclass
class _TrainingRun:
    """What a training run measured: its last step, wall and CPU seconds, TRL's final token count."""

    global_step: int
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    final_tokens: Optional[int] = None  # TRL's count at the end (its last step need not be a logged one)
    mfu_peak_tflops: Optional[float] = None  # the per-device peak MFU was measured against (tr.mfu_peak)
    mfu_peak: Optional[str] = None  # and what it is
    flops_per_token: Optional[float] = None  # a trained token's FLOPs, MFU's numerator over tokens/s
    attention: Optional[str] = None  # the attention implementation that trained (training_attention)
    compute_dtype: Optional[str] = None  # the dtype the matmuls ran in (the peak's dtype)


def _train_and_save(
    cfg: RootConfig,
    out_dir: Path,
    partial: Path,
    dataset_path: Path,
    tokenizer: Any,
    added: bool,
    tracker: Any,
    geometry: tr.BatchGeometry,
    resume: Optional[Path],
) -> _TrainingRun:
    """Train (or find training finished at the last checkpoint) and save the weights into `partial`.
    Every rank takes part (ZeRO-3 gathers the 16-bit weights on save); rank 0 alone writes files."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    from deepwriter.llm.attention import training_attention  # torch: only where training runs

    is_main = rank() == 0
    where, kwargs = models.resolve(cfg.models.student, cfg.paths.cache_dir)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    dtype = tr.export_dtype(cfg.sft)
    if resume is not None and tr.checkpoint_finished(resume):
        # Killed after the last save but before the export: the trainer would take one extra step on
        # resume, so export straight from the final checkpoint (it holds whole weights or the adapter).
        log.info("training already finished at %s; exporting from it", resume)
        if is_main and cfg.sft.lora.enabled:
            _export_lora(cfg, where, kwargs, resume, partial, tokenizer, dtype)
        elif is_main:
            final = AutoModelForCausalLM.from_pretrained(str(resume), dtype=dtype)
            export.set_stop_tokens(final, tokenizer)
            final.save_pretrained(str(partial))
        return _TrainingRun(global_step=tr.checkpoint_step(resume))

    # The arguments come before the model: under ZeRO-3 they make from_pretrained shard on load.
    args = tr.training_arguments(cfg.sft, out_dir, geometry)
    load_dtype = dtype if cfg.sft.deepspeed.enabled else torch.float32
    attention, why = training_attention(cfg.sft.attention, tr.training_device(cfg.sft))
    log.info("sft: attention %s", why)
    model = AutoModelForCausalLM.from_pretrained(where, dtype=load_dtype, attn_implementation=attention, **kwargs)
    if added:
        model.resize_token_embeddings(len(tokenizer))
    export.set_stop_tokens(model, tokenizer)
    shape = ModelShape.from_hf_config(model.config)
    pairs = attention_pairs_per_token(dataset_path)
    flops_per_token = shape.training_flops_per_token(pairs)
    ran_in = tr.compute_dtype(args.bf16, model)
    peak_tflops, peak_source = tr.mfu_peak(cfg.sft, ran_in)
    log.info(
        "sft: MFU = %.4g FLOPs per token (6 x %.1fM matmul params + causal attention, %.0f pairs per token) x "
        "tokens/s against %s",
        flops_per_token,
        shape.matmul_params() / 1e6,
        pairs,
        peak_source,
    )
    callback = tr.make_metrics_callback(
        out_dir / tr.TRAIN_LOG, tracker, flops_per_token, peak_tflops, geometry.world_size
    )
    stop = StopRequest()
    saver = make_save_callback(cfg.sft.save_every_min, stop)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=datasets.load_from_disk(str(dataset_path)),
        processing_class=tokenizer,
        peft_config=_lora_config(cfg, added),
        callbacks=[callback, saver],
    )
    t0, c0 = time.time(), time.process_time()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if saver.stopped_at is not None:  # the scheduler is ending the job: no export from a half-trained model
        raise StoppedBySignal(
            stop.signal_name, saver.stopped_at, trainer.state.max_steps, tr.last_checkpoint(Path(args.output_dir))
        )
    run = _TrainingRun(
        global_step=trainer.state.global_step,
        seconds=time.time() - t0,
        # CPU seconds of this process: a throughput figure that holds on a shared machine (CPU runs)
        cpu_seconds=time.process_time() - c0,
        final_tokens=next((h["num_tokens"] for h in reversed(trainer.state.log_history) if "num_tokens" in h), None),
        mfu_peak_tflops=peak_tflops,
        mfu_peak=peak_source,
        flops_per_token=flops_per_token,
        attention=attention,
        compute_dtype=ran_in,
    )
    if cfg.sft.lora.enabled:
        adapter_dir = out_dir / "adapter"
        trainer.save_model(str(adapter_dir))
        if is_main:
            _export_lora(cfg, where, kwargs, adapter_dir, partial, tokenizer, dtype)
    else:
        if not cfg.sft.deepspeed.enabled:
            trainer.model.to(dtype)
        trainer.save_model(str(partial))
    return run


def _lora_config(cfg: RootConfig, added_tokens: bool) -> Any:
    """PEFT's LoraConfig for sft.lora, or None for full fine-tuning."""
    if not cfg.sft.lora.enabled:
        return None
    from peft import LoraConfig

    lc = cfg.sft.lora
    return LoraConfig(
        r=lc.r,
        lora_alpha=lc.alpha,
        lora_dropout=lc.dropout,
        target_modules=lc.target_modules,
        task_type="CAUSAL_LM",
        modules_to_save=["embed_tokens", "lm_head"] if added_tokens else None,
    )


def _finish(
    cfg: RootConfig,
    out_dir: Path,
    partial: Path,
    mix_dir: Path,
    prepared: Any,
    geometry: tr.BatchGeometry,
    resume: Optional[Path],
    run: _TrainingRun,
    tracker: Any,
) -> StageResult:
    """Rank 0: the counts and metrics, the model card, the final model folder, the loss plot."""

    rows = tr.read_log(out_dir / tr.TRAIN_LOG)
    logged_tokens = rows[-1].get("num_tokens", 0) if rows else 0  # a finished run exported from its checkpoint
    losses = [r["loss"] for r in rows if "loss" in r]
    rates = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s")]
    mfus = [r["mfu"] for r in rows if r.get("mfu")]
    counts: Dict[str, Any] = {
        **prepared.counts,
        "steps": run.global_step,
        "grad_accum": geometry.grad_accum,
        "world_size": geometry.world_size,
        "global_batch": geometry.global_batch,
        "trained_tokens": int(run.final_tokens if run.final_tokens is not None else logged_tokens),
        "resumed_from_step": tr.checkpoint_step(resume) if resume else 0,
    }
    metrics: Dict[str, Any] = {
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "train_seconds": round(run.seconds, 3),
        "train_cpu_seconds": round(run.cpu_seconds, 3),
        "tokens_per_s": round(sum(rates) / len(rates), 1) if rates else None,
        "mfu": sum(mfus) / len(mfus) if mfus else None,
    }
    if run.mfu_peak is not None:
        metrics.update(mfu_peak_tflops=run.mfu_peak_tflops, mfu_peak=run.mfu_peak)
    if run.flops_per_token is not None:
        metrics.update(flops_per_token=run.flops_per_token, attention=run.attention, compute_dtype=run.compute_dtype)
    # Only what this stage's key covers goes into the card: eval results belong to the eval stage's output.
    export.write_model_card(partial, cfg, counts, metrics, prepared.sources, mix_dir / "dataset")
    export.finalize(partial, out_dir / "model")
    artifacts = {"model": "model", "train_log": tr.TRAIN_LOG, "checkpoints": "checkpoints"}
    plot = export.plot_loss(rows, out_dir / "plots" / "loss.png")
    if plot is not None:
        artifacts["loss_plot"] = "plots/loss.png"
        tracker.image("sft/loss_curve", plot)
    if cfg.sft.lora.enabled and (out_dir / "adapter").exists():
        artifacts["adapter"] = "adapter"
    tracker.summary({f"sft/{k}": v for k, v in metrics.items() if v is not None})
    (out_dir / RESULT).write_text(json.dumps({"counts": counts, "metrics": metrics, "artifacts": artifacts}, indent=2))
    return StageResult(counts=counts, metrics=metrics, artifacts=artifacts)


def _export_lora(
    cfg: RootConfig, base_where: str, base_kwargs: dict, adapter_dir: Path, dest: Path, tokenizer: Any, dtype: Any
) -> None:

    if cfg.sft.lora.merge_on_export:
        export.merge_lora(base_where, base_kwargs, adapter_dir, dest, tokenizer, dtype)
    else:
        shutil.copytree(
            adapter_dir,
            dest,
            ignore=shutil.ignore_patterns(
                "optimizer.pt", "scheduler.pt", "rng_state*", "global_step*", "trainer_state.json"
            ),
        )


STAGE = StageSpec(
    "sft",
    run,
    ("models.student", "sft"),
    needs=lambda cfg: ["mix"],
    distributed=True,
    preflight=tr.preflight,
)

"""The SFT stage end to end on a tiny model: training, export, model card, plots, metrics, LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepwriter.core.contract import StageContext
from deepwriter.sft import stage
from deepwriter.sft.templates import TRAINING_TEMPLATE
from deepwriter.testing.repo import compose_typed
from deepwriter.testing.synthetic_data import write_mix_dataset
from deepwriter.tracking.runs import Tracker


class RecordingRun:
    """Stands in for a wandb Run: keeps what the stage logs."""

    def __init__(self):
        self.logged, self.summary = [], {}

    def log(self, data, step=None):
        self.logged.append((step, data))


def _run(tmp_path: Path, model_cache: Path, *overrides: str):
    mix = tmp_path / "mix"
    if not (mix / "dataset").exists():
        write_mix_dataset(mix, n=16, seed=1, median_words=30)
    cfg = compose_typed(
        "model@models.student=tiny-qwen3",
        "+recipe=demo",
        f"paths.cache_dir={model_cache}",
        "sft.max_length=128",
        "sft.max_steps=3",
        "sft.save_steps=100",
        *overrides,
    )
    run = RecordingRun()
    ctx = StageContext(
        name="sft", out_dir=tmp_path / "sft", inputs={"mix": mix}, run_dir=tmp_path, tracker=Tracker(run), key="test"
    )
    return cfg, ctx, run, stage.run(cfg, ctx)


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


# Stand-ins for this CPU's measured matmul peaks, one per dtype, so that MFU's denominator is known to
# the test and the peak of the wrong dtype shows.
PLANTED_PEAKS = {"float32": 2.0e12, "bfloat16": 5.0e12}


def test_full_finetune_exports_a_loadable_model(tmp_path, model_cache, monkeypatch):
    from deepwriter.llm import precision

    monkeypatch.setattr(precision, "cpu_peak_rate", lambda dtype="float32": PLANTED_PEAKS[dtype])
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from deepwriter.config.llm import ModelConfig
    from deepwriter.llm import models

    cfg, ctx, run, result = _run(tmp_path, model_cache, "sft.global_batch_size=4", "sft.per_device_batch_size=2")
    out = ctx.out_dir
    assert result.counts["steps"] == 3 and result.counts["grad_accum"] == 2 and result.counts["samples"] == 16
    assert result.counts["trained_tokens"] > 0 and result.metrics["train_seconds"] > 0
    assert result.metrics["first_loss"] > 0 and result.metrics["last_loss"] > 0
    assert set(result.artifacts) >= {"model", "train_log", "loss_plot"}
    assert (out / "plots" / "loss.png").stat().st_size > 1000

    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["loss"] > 0 and "grad_norm" in r and "learning_rate" in r for r in rows)
    assert all(r["learning_rate"] == pytest.approx(5e-5) for r in rows)  # constant schedule, no warm-up
    assert all("tokens_per_s" in r and "mfu" in r for r in rows[1:])
    # MFU on this CPU: each step's model FLOPs over its time, against the peak of the dtype that ran (fp32
    # here: bf16 is off). The FLOPs are counted here from the loaded model's own matmul layers (input
    # embedding excluded: a lookup) and the tokenised samples' causal attention pairs; the peak is the
    # one the test planted for float32 (bf16's differs).
    import numpy as np
    from datasets import load_from_disk

    model = AutoModelForCausalLM.from_pretrained(models.resolve(cfg.models.student, model_cache)[0])
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    c = model.config
    (data_dir,) = (out / "tokenized").glob("*/data")
    lengths = np.array([len(ids) for ids in load_from_disk(str(data_dir))["input_ids"]], dtype=np.float64)
    pairs_per_token = (lengths * (lengths + 1) / 2).sum() / lengths.sum()
    flops_per_token = 6 * linear + 12 * c.num_hidden_layers * c.num_attention_heads * c.head_dim * pairs_per_token
    assert result.metrics["compute_dtype"] == "float32" and result.metrics["attention"] == "sdpa"
    assert result.metrics["mfu_peak_tflops"] * 1e12 == PLANTED_PEAKS["float32"]
    for r in rows[1:]:
        assert 0 < r["mfu"] <= 1
        assert r["mfu"] == pytest.approx(flops_per_token * r["tokens_per_s"] / PLANTED_PEAKS["float32"], rel=1e-9)
    assert "CPU's measured float32 matmul peak" in result.metrics["mfu_peak"]
    assert result.metrics["mfu"] == pytest.approx(sum(r["mfu"] for r in rows[1:]) / len(rows[1:]))
    logged = {k for _, d in run.logged for k in d}
    assert {"train/loss", "train/grad_norm", "train/learning_rate", "train/tokens_per_s", "train/mfu"} <= logged
    assert any(k.startswith("train/mem/") for k in logged)
    assert run.summary["sft/last_loss"] == result.metrics["last_loss"]

    model_dir = out / "model"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.dtype == torch.float32  # bf16 is off on CPU: the export keeps the training dtype
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert tok.chat_template == TRAINING_TEMPLATE and tok.eos_token == "<|im_end|>"
    assert tok.convert_tokens_to_ids("<|im_end|>") in (
        [model.generation_config.eos_token_id]
        if isinstance(model.generation_config.eos_token_id, int)
        else model.generation_config.eos_token_id
    )
    card = (model_dir / "README.md").read_text()
    assert "learning_rate | 5e-05" in card and "rows 16" in card and "last_loss" in card
    # trained weights differ from the starting point
    start = models.resolve(cfg.models.student, model_cache)[0]
    before, after = _weights(start), _weights(model_dir)
    assert any(not torch.equal(before[k], after[k]) for k in after)
    loaded = models.load_model(
        ModelConfig(name="sft", source="local", path=str(model_dir), dtype="float32"), model_cache
    )
    assert loaded.config.num_hidden_layers == 2
    # a finished output re-run trains nothing more: resumes from the final checkpoint
    again = stage.run(cfg, ctx)
    assert again.counts["resumed_from_step"] == 3 and again.counts["steps"] == 3


def test_lora_exports_merged_weights(tmp_path, model_cache):
    import torch
    from transformers import AutoModelForCausalLM

    from deepwriter.llm import models

    cfg, ctx, _, result = _run(
        tmp_path,
        model_cache,
        "sft=lora",
        "sft.max_length=128",
        "sft.max_steps=3",
        "sft.save_steps=100",
        "sft.global_batch_size=2",
        "sft.bf16=false",
        "sft.use_cpu=true",
        "sft.gradient_checkpointing=false",
        "sft.learning_rate=1e-2",
    )
    assert cfg.sft.lora.enabled and result.artifacts["adapter"] == "adapter"
    assert (ctx.out_dir / "adapter" / "adapter_config.json").exists()
    merged = _weights(ctx.out_dir / "model")
    assert not any("lora" in k for k in merged)
    base = _weights(models.resolve(cfg.models.student, model_cache)[0])
    changed = [k for k in merged if k in base and not torch.equal(base[k], merged[k])]
    assert any("q_proj" in k for k in changed)
    assert not any("norm" in k for k in changed)  # LoRA leaves what it does not adapt untouched
    AutoModelForCausalLM.from_pretrained(ctx.out_dir / "model")


def test_indivisible_batch_fails_before_training(tmp_path, model_cache):
    from deepwriter.config.root import ConfigError

    with pytest.raises(ConfigError, match="global_batch_size: 5"):
        _run(tmp_path, model_cache, "sft.global_batch_size=5", "sft.per_device_batch_size=2")
    assert not (tmp_path / "sft" / "checkpoints").exists()


def test_an_mfu_above_one_is_left_empty_and_said_once(tmp_path, caplog, monkeypatch):
    """MFU above 1 is a wrong peak (a CPU measured while busy, a GPU's peak set too low), not a fast
    run: the row has no MFU and the log says why, once."""
    import logging

    from transformers import TrainerState

    from deepwriter.sft import trainer
    from deepwriter.sft.trainer import make_metrics_callback

    monkeypatch.setattr(trainer, "_MFU_WARNED", [])  # said once per process: this test's own process state
    logged = []

    class Recorder:
        def log(self, data, step=None):
            logged.append(data)

    rows = []
    for peak_tflops in (1e-6, 1.0):  # 6,000 FLOPs per token x 200 tokens/s = 1.2 MFLOP/s: above and below 1
        log_path = tmp_path / f"log-{peak_tflops}.jsonl"
        cb = make_metrics_callback(log_path, Recorder(), flops_per_token=6000.0, peak_tflops=peak_tflops, world_size=1)
        state = TrainerState(global_step=1, is_world_process_zero=True)
        with caplog.at_level(logging.WARNING, logger="deepwriter.sft"):
            cb.on_train_begin(None, state, None)
            for step, tokens in ((1, 100.0), (2, 300.0), (3, 500.0)):
                state.global_step = step
                cb.last_time -= 1.0  # a second per step: 200 tokens/s
                cb.on_log(None, state, None, logs={"loss": 1.0, "num_tokens": tokens})
        rows.append([json.loads(x) for x in log_path.read_text().splitlines()])
    above, below = rows
    assert [r.get("mfu") for r in above[1:]] == [None, None] and all(r["tokens_per_s"] > 0 for r in above[1:])
    assert all(0 < r["mfu"] < 1 for r in below[1:])
    warned = [r.getMessage() for r in caplog.records if "above 1" in r.getMessage()]
    assert len(warned) == 1 and "MFU left empty" in warned[0]


def test_the_mfu_peak_is_the_one_of_the_dtype_that_ran(monkeypatch):
    """bf16 weights train in bf16 even with sft.bf16 off (no autocast): the peak is bf16's; fp32
    weights under the trainer's bf16 mode compute in bf16 too; fp32 alone is fp32. On a GPU only a
    bf16 run has a configured peak."""
    import torch

    from deepwriter.llm import precision
    from deepwriter.sft import trainer as tr

    monkeypatch.setattr(precision, "cpu_peak_rate", lambda dtype="float32": PLANTED_PEAKS[dtype])
    cfg = compose_typed("+recipe=demo").sft
    assert cfg.use_cpu
    cases = ((False, torch.bfloat16, "bfloat16"), (True, torch.float32, "bfloat16"), (False, torch.float32, "float32"))
    for autocast, weights, ran in cases:
        dtype = tr.compute_dtype(autocast, torch.nn.Linear(4, 4, dtype=weights))
        peak, why = tr.mfu_peak(cfg, dtype)
        assert dtype == ran and peak * 1e12 == PLANTED_PEAKS[ran] and f"measured {ran} matmul peak" in why
    monkeypatch.setattr(tr, "training_device", lambda sft_cfg: "cuda")
    assert tr.mfu_peak(cfg, "bfloat16")[0] == cfg.peak_tflops
    peak, why = tr.mfu_peak(cfg, "float32")
    assert peak is None and "bf16 peak" in why

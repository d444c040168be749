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


def test_full_finetune_exports_a_loadable_model(tmp_path, model_cache):
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
    # MFU on this CPU: against its measured float32 matmul rate (training computes in fp32 here), not a
    # GPU's datasheet peak; 6 N FLOPs per token
    from transformers import AutoConfig

    from deepwriter.llm.precision import cpu_peak_rate
    from deepwriter.sft.memory import ModelShape

    peak = cpu_peak_rate("float32")
    n = ModelShape.from_hf_config(
        AutoConfig.from_pretrained(models.resolve(cfg.models.student, model_cache)[0])
    ).params()
    for r in rows[1:]:
        assert r["mfu"] == pytest.approx(6 * n * r["tokens_per_s"] / peak, rel=1e-9)
    assert result.metrics["mfu_peak_tflops"] * 1e12 == pytest.approx(peak, rel=1e-12)
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
    for peak_tflops in (1e-6, 1.0):  # 6 x 1000 params x 200 tokens/s = 1.2 MFLOP/s: above and below 1
        log_path = tmp_path / f"log-{peak_tflops}.jsonl"
        cb = make_metrics_callback(log_path, Recorder(), n_params=1000, peak_tflops=peak_tflops, world_size=1)
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

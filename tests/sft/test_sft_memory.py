"""The memory planner, with Qwen3-8B's shape (the paper's student)."""

from __future__ import annotations

import pytest

from deepwriter.sft.memory import QWEN3_8B, GiB, ModelShape, PlanError, check_fits, plan_from_config, plan_memory


def test_qwen3_8b_parameter_count():
    # Qwen3-8B-Base has 8.19B parameters (untied embeddings).
    assert QWEN3_8B.params() == pytest.approx(8.19e9, rel=0.005)


def test_shape_from_hf_config():
    from transformers import Qwen3Config

    cfg = Qwen3Config(
        num_hidden_layers=36,
        hidden_size=4096,
        intermediate_size=12288,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=151936,
        head_dim=128,
        tie_word_embeddings=False,
    )
    assert ModelShape.from_hf_config(cfg) == QWEN3_8B


def _plan(world, stage, offload=False, **kw):
    args = dict(
        world_size=world,
        zero_stage=stage,
        per_device_batch=1,
        max_length=16384,
        offload_optimizer=offload,
        offload_param=offload,
    )
    args.update(kw)
    return plan_memory(QWEN3_8B, **args)


def test_full_finetune_zero3_on_8x80gb_fits():
    plan = _plan(8, 3)
    check_fits(plan, 80)
    n = QWEN3_8B.params()
    assert plan.weights == pytest.approx(2 * n / 8)
    assert plan.gradients == pytest.approx(2 * n / 8)
    assert plan.optimizer == pytest.approx(12 * n / 8)
    assert plan.tokens_per_step == 16384 * 8
    assert 30 * GiB < plan.total < 80 * GiB
    assert "ZeRO-3" in plan.describe(80) and "tokens per micro-batch 16,384" in plan.describe(80)


def test_full_finetune_on_one_gpu_without_offload_is_refused_with_advice():
    with pytest.raises(PlanError) as err:
        check_fits(_plan(1, 3), 80)
    msg = str(err.value)
    assert "sft.gpu_memory_gb is 80" in msg
    assert "zero3-offload" in msg and "more GPUs" in msg and "LoRA" in msg


def test_offload_or_lora_make_one_gpu_fit():
    check_fits(_plan(1, 3, offload=True), 80)
    lora = _plan(1, 0, lora_r=16)
    assert lora.trainable_params < QWEN3_8B.params() / 100
    check_fits(lora, 80)


def test_offload_moves_the_states_to_cpu_memory():
    n = QWEN3_8B.params()
    # 16-bit weights, fp32 master weights, two Adam moments and fp32 gradients: DeepSpeed's 18 B/param
    one = _plan(1, 3, offload=True)
    assert one.host == pytest.approx(18 * n) and one.weights == one.optimizer == one.gradients == 0
    assert _plan(8, 3, offload=True).host == pytest.approx(18 * n / 8)  # each rank keeps its shard
    assert _plan(1, 3).host == 0 and "CPU memory" not in _plan(1, 3).describe()
    assert f"CPU memory   {18 * n / 1024**3:7.1f} GiB" in one.describe(80)
    # an 8B model's offloaded states do not fit a 128 GiB machine: the GPU fits, the host does not
    assert one.total < 80 * 1024**3 < 128 * 1024**3 < one.host


def test_zero_stages_shard_progressively():
    totals = [_plan(8, s).weights + _plan(8, s).gradients + _plan(8, s).optimizer for s in (0, 1, 2, 3)]
    assert totals == sorted(totals, reverse=True) and totals[0] > 3 * totals[3]


def test_checkpointing_and_length_drive_activations():
    assert _plan(8, 3, gradient_checkpointing=False).activations > 2 * _plan(8, 3).activations
    assert _plan(8, 3, max_length=4096).activations == pytest.approx(_plan(8, 3).activations / 4)
    with pytest.raises(PlanError, match="max_length"):
        check_fits(_plan(8, 3, per_device_batch=8), 80)


def test_plan_from_typed_config():
    from deepwriter.testing.repo import compose_typed

    cfg = compose_typed("+recipe=full")
    plan = plan_from_config(cfg.sft, QWEN3_8B, world_size=8, grad_accum=12)
    assert plan.zero_stage == 3 and not plan.offload_optimizer
    assert plan.tokens_per_step == 16384 * 12 * 8
    cfg = compose_typed("+recipe=full", "deepspeed@sft.deepspeed=zero3-offload")
    assert plan_from_config(cfg.sft, QWEN3_8B, 1, 96).offload_optimizer


def test_stage_prints_the_plan_and_refuses_before_training(tmp_path, model_cache, capsys):
    from deepwriter.core.contract import StageContext
    from deepwriter.sft import stage
    from deepwriter.testing.repo import compose_typed
    from deepwriter.tracking.runs import Tracker

    cfg = compose_typed(
        "model@models.student=tiny-qwen3",
        f"paths.cache_dir={model_cache}",
        "sft.use_cpu=false",
        "sft.gpu_memory_gb=0.001",
        "sft.global_batch_size=1",
    )
    ctx = StageContext(
        name="sft",
        out_dir=tmp_path / "sft",
        inputs={"mix": tmp_path / "mix"},
        run_dir=tmp_path,
        tracker=Tracker(None),
        key="plan",
    )
    with pytest.raises(PlanError, match="sft.gpu_memory_gb is 0.001"):
        stage.run(cfg, ctx)
    printed = capsys.readouterr().out
    assert "SFT memory plan" in printed and "tokens per micro-batch 16,384" in printed
    assert not (tmp_path / "sft").exists()  # refused before any output


@pytest.mark.parametrize("tied", [True, False])
def test_matmul_params_are_the_models_linear_layers(tied):
    """MFU's parameter count is what multiplies activations: every nn.Linear of the built model (the
    output head once, tied or not), not the input table (a lookup) nor the norms."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "qwen3",
        vocab_size=1000,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=24,
        tie_word_embeddings=tied,
    )
    model = AutoModelForCausalLM.from_config(config)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    shape = ModelShape.from_hf_config(config)
    assert shape.matmul_params() == linear
    # and the whole count is the model's own: what is not a matmul is the input table (untied) and norms
    assert shape.params() - shape.matmul_params() == sum(p.numel() for p in model.parameters()) - linear


def test_training_flops_count_causal_attention():
    # one causal sequence of L tokens: 6 per matmul parameter plus 6 x layers x heads x head_dim x (L + 1)
    # per token (the pairs a causal row computes, forward and backward), the usual causal correction
    length = 16384
    per_token = QWEN3_8B.training_flops_per_token((length + 1) / 2)
    attention = 6 * 36 * 32 * 128 * (length + 1)
    assert per_token == 6 * QWEN3_8B.matmul_params() + attention
    # at 16K the attention is about a quarter of the 8B's FLOPs, and the input table is not counted
    assert 0.2 < attention / per_token < 0.3
    assert QWEN3_8B.params() - QWEN3_8B.matmul_params() > 151936 * 4096

"""Lower-right causal attention for a suffix on a cached prefix: equal to the masked reference, on
both code paths, and switched on only while a scorer runs."""

from __future__ import annotations

import types

import pytest
import torch

from deepwriter.llm import attention


def reference(q, k, v, groups):
    """SDPA with the explicit lower-right causal mask (what transformers does today)."""
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    q_len, kv_len = q.shape[2], k.shape[2]
    mask = torch.ones(q_len, kv_len, dtype=torch.bool).tril(kv_len - q_len)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)


@pytest.mark.parametrize("path", ["lse", "chunked"])
@pytest.mark.parametrize("q_len,kv_len", [(7, 7), (1, 9), (5, 40), (70, 83), (300, 301)])
def test_equals_the_masked_reference(monkeypatch, path, q_len, kv_len):
    if path == "chunked":
        monkeypatch.setattr(attention, "_CPU_FLASH", None)
        monkeypatch.setattr(attention, "CHUNK", 16)  # several chunks, a ragged last one
    else:  # the pinned torch has it; without it the "lse" path would be untested, not skipped
        assert attention._CPU_FLASH is not None, "this torch has no CPU flash op with log-sum-exp"
    torch.manual_seed(q_len * 1000 + kv_len)
    groups = 3  # grouped-query attention: 6 query heads over 2 key/value heads
    module = types.SimpleNamespace(is_causal=True, num_key_value_groups=groups)
    q = torch.randn(2, 6, q_len, 16)
    k, v = torch.randn(2, 2, kv_len, 16), torch.randn(2, 2, kv_len, 16)
    out, weights = attention.lower_right_causal_sdpa(module, q, k, v, None)
    assert weights is None and out.shape == (2, q_len, 6, 16)
    assert torch.allclose(out, reference(q, k, v, groups), atol=1e-5)


def test_an_explicit_mask_goes_to_the_stock_implementation(monkeypatch):
    calls = []
    import transformers.integrations.sdpa_attention as stock

    monkeypatch.setattr(stock, "sdpa_attention_forward", lambda *a, **k: calls.append(a) or ("stock", None))
    module = types.SimpleNamespace(is_causal=True, num_key_value_groups=1)
    q, k = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 5, 8)
    assert attention.lower_right_causal_sdpa(module, q, k, k, torch.ones(1, 1, 3, 5, dtype=torch.bool))[0] == "stock"
    assert len(calls) == 1


def test_switched_on_only_inside_the_block_and_restored_after_errors(tiny_model):
    model, _ = tiny_model
    assert model.config._attn_implementation == "sdpa"
    with attention.scoring_attention(model) as on:
        assert on and model.config._attn_implementation == attention.NAME
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(RuntimeError):
        with attention.scoring_attention(model):
            raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"
    eager = types.SimpleNamespace(config=types.SimpleNamespace(_attn_implementation="eager"))
    with attention.scoring_attention(eager) as on:
        assert not on and eager.config._attn_implementation == "eager"


def test_the_prefix_scorer_runs_its_suffixes_through_it(tiny_model, monkeypatch):
    """The scorer really takes the new path (and the plain scorer's values still match: see
    test_synthesis_prefix_scorer.py)."""
    from deepwriter.llm.base import ScoreRequest
    from deepwriter.llm.hf import TransformersScorer
    from deepwriter.llm.hf_prefix import PrefixCachingScorer

    model, tok = tiny_model
    seen = []
    real = attention.lower_right_causal_sdpa

    def spy(module, q, k, *a, **kw):
        seen.append((q.shape[2], k.shape[2]))
        return real(module, q, k, *a, **kw)

    monkeypatch.setattr(attention, "lower_right_causal_sdpa", spy)
    monkeypatch.setitem(__import__("transformers").AttentionInterface._global_mapping, attention.NAME, spy)
    msg = [{"role": "user", "content": "Write a note to a neighbour about a lost cat, in a warm tone."}]
    reqs = [
        ScoreRequest(msg, f"<think>\nI plan the note first. Variant {j} of the middle.\n</think>\n\n", "Dear Ana, ...")
        for j in range(3)
    ]
    cached = PrefixCachingScorer(model, tok, "tiny", min_prefix_tokens=4)
    got, want = cached.score(reqs), TransformersScorer(model, tok, "tiny").score(reqs)
    assert any(q < kv for q, kv in seen)  # suffix passes on a cached prefix
    for a, b in zip(got, want):
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-4
    assert model.config._attn_implementation == "sdpa"


def test_sft_takes_the_kernel_that_skips_masked_pairs_where_one_runs(monkeypatch):
    from deepwriter.config.root import ConfigError

    assert attention.training_attention("auto", "cpu")[0] == "sdpa"  # FlexAttention has no CPU backward
    monkeypatch.setattr(attention, "_flash_attn_installed", lambda: False)
    name, why = attention.training_attention("auto", "cuda:0")
    assert name == "flex_attention" and "skipped" in why
    monkeypatch.setattr(attention, "_flash_attn_installed", lambda: True)
    assert attention.training_attention("auto", "cuda")[0] == "flash_attention_2"
    assert attention.training_attention("sdpa", "cuda")[0] == "sdpa"
    with pytest.raises(ConfigError, match="sft.attention: flex_attention does not train on cpu"):
        attention.training_attention("flex_attention", "cpu")
    monkeypatch.setattr(attention, "_flash_attn_installed", lambda: False)
    with pytest.raises(ConfigError, match="sft.attention: flash_attention_2 is not installed"):
        attention.training_attention("flash_attention_2", "cuda")


@pytest.mark.slow  # ~5 s of forward passes (the imports of dynamo and the model's code apart)
def test_packed_rows_give_the_same_loss_with_the_block_mask_and_the_full_mask(monkeypatch):
    """A packed row of three samples (position ids restart per sample): FlexAttention's block mask
    (what SFT trains with on a GPU) and SDPA's explicit mask give the loss of each sample run alone.
    FlexAttention has no backward on a CPU, so the forward's loss is compared, run eagerly: the kernel,
    transformers' wrapper of it and the building of its block mask are not compiled (compiling them for
    the CPU, even dynamo's "eager" tracing, took 35 s of the test's 40 s on a busy machine). What is
    checked is the block mask built from the packed positions; it is the same mask however it runs."""
    from torch.nn.attention import flex_attention as torch_flex
    from transformers import AutoConfig, AutoModelForCausalLM, masking_utils
    from transformers.integrations import flex_attention as hf_flex

    monkeypatch.setattr(hf_flex.WrappedFlexAttention, "__init__", lambda self, training: None)
    monkeypatch.setattr(hf_flex.WrappedFlexAttention, "__call__", lambda self: hf_flex.flex_attention)
    monkeypatch.setattr(torch_flex, "_FLEX_ATTENTION_DISABLE_COMPILE_DEBUG", True)  # torch's eager path, no dynamo
    build = masking_utils.create_block_mask
    monkeypatch.setattr(masking_utils, "create_block_mask", lambda *a, **kw: build(*a, **{**kw, "_compile": False}))

    config = AutoConfig.for_model(
        "qwen3",
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
    )
    lengths = (150, 40, 66)  # not multiples of the 128-token block: blocks are partly masked
    torch.manual_seed(0)
    ids = torch.randint(0, 256, (1, sum(lengths)))
    pos = torch.cat([torch.arange(n) for n in lengths])[None]
    labels = ids.clone()
    labels[0, torch.cumsum(torch.tensor((0,) + lengths[:-1]), 0)] = -100  # no sample predicts across a boundary
    losses = {}
    with torch.no_grad():
        for impl in ("sdpa", "flex_attention"):
            torch.manual_seed(1)
            model = AutoModelForCausalLM.from_config(config, attn_implementation=impl, dtype=torch.float32).eval()
            # no cache, as in training (TRL turns it off): with one, transformers does not look for packing
            losses[impl] = model(input_ids=ids, position_ids=pos, labels=labels, use_cache=False).loss.item()
            # positions that run on past a boundary let samples see each other: a different loss
            leaked = model(
                input_ids=ids, position_ids=torch.arange(ids.shape[1])[None], labels=labels, use_cache=False
            ).loss.item()
        # the reference: each sample alone, the token-weighted mean of their losses
        total, count, start = 0.0, 0, 0
        for n in lengths:
            piece = ids[:, start : start + n]
            total += model(input_ids=piece, labels=piece).loss.item() * (n - 1)
            count, start = count + n - 1, start + n
    alone = total / count
    assert losses["sdpa"] == pytest.approx(alone, abs=1e-5)
    assert losses["flex_attention"] == pytest.approx(alone, abs=1e-5)
    assert abs(leaked - alone) > 1e-3

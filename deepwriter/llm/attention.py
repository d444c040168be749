"""Causal attention for queries that continue a cached prefix, without wasted work.

When a scorer runs a candidate's suffix (q tokens) on top of a cached prefix (p tokens), each query
sees the whole prefix and the suffix up to itself: a causal mask aligned to the lower right. SDPA's
fast `is_causal` path only knows the upper-left alignment, so transformers passes an explicit mask
instead, and with a mask the kernel computes every (query, key) pair, visible or not: q x (p + q)
pairs where q x p + q^2 / 2 are needed. For the REER step (q ~ 70% of the sequence) attention then
costs ~1.5x what it should, which ate most of the prefix cache's saving.

`lower_right_causal_sdpa` does it without the waste. On CPU it runs two mask-free passes of the
flash kernel, the queries over the prefix and over themselves (square causal), and merges them with
their log-sum-exps. Elsewhere it cuts the queries into chunks; chunk [s, e) attends only to the keys
it can see (the first p + e), with a mask over just that block, so the waste is one small triangle
per chunk. It is registered with transformers' AttentionInterface and switched on only around a
scorer's forward passes (`scoring_attention`): generation, with its padded batches and masks, keeps
the model's own implementation.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Tuple

import torch

from deepwriter.config.root import ConfigError
from deepwriter.config.sft import ATTENTION_CHOICES

NAME = "deepwriter_lower_right_sdpa"
# PyTorch's CPU flash-attention kernel, which also returns each query's log-sum-exp (a private op of
# the pinned torch; without it the chunked path below is used).
_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
CHUNK = 256  # queries per block; the wasted triangle per block is CHUNK^2 / 2 pairs


def lower_right_causal_sdpa(
    module,
    query,
    key,
    value,
    attention_mask: Optional[torch.Tensor],
    dropout: float = 0.0,
    scaling: Optional[float] = None,
    is_causal: Optional[bool] = None,
    **kwargs,
):
    """An AttentionInterface function: (batch, heads, q, d) inputs -> (batch, q, heads, d), None."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    q_len, kv_len = query.shape[2], key.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if attention_mask is not None or not causal or q_len == 1 or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    offset = kv_len - q_len  # cached tokens before the first query
    sdpa = torch.nn.functional.scaled_dot_product_attention
    if offset == 0:
        out = sdpa(query, key, value, dropout_p=dropout, scale=scaling, is_causal=True)
    elif query.device.type == "cpu" and dropout == 0.0 and _CPU_FLASH is not None:
        # Two mask-free passes on the fast kernel, merged by their log-sum-exps: every query over
        # the whole prefix, and the suffix over itself with the square causal mask.
        pre, lse_pre = _CPU_FLASH(query, key[:, :, :offset], value[:, :, :offset], 0.0, False, scale=scaling)
        own, lse_own = _CPU_FLASH(query, key[:, :, offset:], value[:, :, offset:], 0.0, True, scale=scaling)
        lse = torch.logaddexp(lse_pre, lse_own)
        out = (
            pre.float() * torch.exp(lse_pre - lse)[..., None] + own.float() * torch.exp(lse_own - lse)[..., None]
        ).to(query.dtype)
    else:
        parts = []
        for start in range(0, q_len, CHUNK):
            end = min(q_len, start + CHUNK)
            visible = offset + end
            # row r (absolute position offset + start + r) sees keys 0 .. offset + start + r
            mask = torch.ones(end - start, visible, dtype=torch.bool, device=query.device).tril(offset + start)
            parts.append(
                sdpa(
                    query[:, :, start:end],
                    key[:, :, :visible],
                    value[:, :, :visible],
                    attn_mask=mask,
                    dropout_p=dropout,
                    scale=scaling,
                )
            )
        out = torch.cat(parts, dim=2)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface

    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, lower_right_causal_sdpa)


@contextlib.contextmanager
def scoring_attention(model) -> Iterator[bool]:
    """Within the block, the model's SDPA attention uses `lower_right_causal_sdpa` (yields True);
    other implementations (eager, flash-attention, which aligns causal masks to the lower right
    already) are left alone (yields False). The model's attention masks are then not built: callers
    must pass unpadded single sequences, as the scorers do."""
    config = model.config
    if getattr(config, "_attn_implementation", None) != "sdpa":
        yield False
        return
    _register()
    # The property's setter re-validates the whole model; the internal field is what forward reads.
    config._attn_implementation_internal = NAME
    try:
        yield True
    finally:
        config._attn_implementation_internal = "sdpa"


# --- attention for packed training rows ----------------------------------------------------------
#
# A packed row holds several samples, each attending only to itself (position ids restart per sample).
# With SDPA transformers must pass that as an explicit block-diagonal mask, and the kernel then computes
# every (query, key) pair of the row: a 16K-token row costs 16K x 16K scores where its samples need
# a fraction. Kernels that take the sample boundaries skip the masked work: flash-attention's varlen
# path (boundaries from the position ids) and FlexAttention (a block mask: blocks outside every sample
# are never computed). Preferred in this order where they run; SDPA is what remains.


def _flash_attn_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("flash_attn") is not None


def _flex_available() -> bool:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


# name, devices it trains on, whether this install has it, what it does with a packed row
PACKED_KERNELS = (
    ("flash_attention_2", ("cuda",), lambda: _flash_attn_installed(), "varlen: each sample attends to itself only"),
    ("flex_attention", ("cuda",), lambda: _flex_available(), "block mask: blocks outside every sample are skipped"),
    ("sdpa", ("cuda", "cpu"), lambda: True, "explicit mask: every pair of the row is computed"),
)


def training_attention(setting: str, device: str) -> Tuple[str, str]:
    """The attention implementation SFT trains with on `device` ('cuda' or 'cpu'), and why: `auto`
    takes the first of PACKED_KERNELS that runs there; a named one is checked to run there."""
    kind = "cuda" if device.startswith("cuda") else "cpu"
    if setting == "eager":
        return "eager", "sft.attention = eager"
    for name, devices, installed, what in PACKED_KERNELS:
        if setting not in ("auto", name):
            continue
        if kind in devices and installed():
            return name, f"{'auto: ' if setting == 'auto' else ''}{name} on {kind} ({what})"
        if setting == name:
            where = "is not installed" if kind in devices else f"does not train on {kind} (no backward there)"
            raise ConfigError(f"sft.attention: {name} {where}; use auto, sdpa or eager")
    raise ConfigError(f"sft.attention: got {setting!r}; expected one of {list(ATTENTION_CHOICES)}")

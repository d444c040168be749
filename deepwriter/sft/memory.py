"""Pre-launch memory planner: what one GPU must hold for a given model, ZeRO stage and batch, and a
refusal (naming what to change) when that exceeds the GPU.

The figures are estimates in the usual mixed-precision accounting (16-bit weights and gradients,
fp32 master weights plus two Adam moments = 12 bytes per trained parameter), sharded over the data-
parallel ranks as ZeRO does. Activations assume a memory-efficient attention kernel (no s² term):
with checkpointing, every layer keeps its 16-bit input and one layer is recomputed at a time; the
logits and their gradient are kept in fp32 for the loss. ZeRO-Offload moves states to CPU memory
instead: `host` is what each rank's share of them takes there (DeepSpeed's own estimate for parameter
and optimizer offload is the same 18 bytes per parameter), so a plan can be checked against the
machine's RAM as well as the GPU's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from deepwriter.config.sft import SFTConfig
from deepwriter.core.errors import DeepwriterError

GiB = 1024**3
# CUDA context, allocator fragmentation, NCCL buffers, ZeRO-3 gather/prefetch buffers.
RUNTIME_OVERHEAD_BYTES = 4 * GiB
# Bytes of saved activations per token and hidden unit for one transformer layer without
# checkpointing (attention and MLP intermediates in 16-bit, flash attention).
LAYER_ACTIVATION_BYTES_PER_TOKEN_HIDDEN = 34


class PlanError(DeepwriterError, ValueError):
    """A plan that does not fit; the message says what to change."""


@dataclass(frozen=True)
class ModelShape:
    num_layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    head_dim: Optional[int] = None
    tied_embeddings: bool = False

    @classmethod
    def from_hf_config(cls, config: Any) -> "ModelShape":
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = text.num_attention_heads
        return cls(
            num_layers=text.num_hidden_layers,
            hidden=text.hidden_size,
            intermediate=text.intermediate_size,
            heads=heads,
            kv_heads=getattr(text, "num_key_value_heads", None) or heads,
            vocab=text.vocab_size,
            head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
            tied_embeddings=bool(getattr(text, "tie_word_embeddings", False)),
        )

    def params(self) -> int:
        hd = self.head_dim or self.hidden // self.heads
        attn = self.hidden * hd * (2 * self.heads + 2 * self.kv_heads)  # q, o and k, v
        mlp = 3 * self.hidden * self.intermediate  # gate, up, down
        norms = 2 * self.hidden + 2 * hd
        embed = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.num_layers * (attn + mlp + norms) + embed + self.hidden

    def matmul_params(self) -> int:
        """The parameters that multiply each token's activations: the blocks' projections and the
        output head (counted once whether or not it shares the input table, which is a lookup and does
        no matmul). Norm scales are left out: their work is elementwise."""
        hd = self.head_dim or self.hidden // self.heads
        attn = self.hidden * hd * (2 * self.heads + 2 * self.kv_heads)
        return self.num_layers * (attn + 3 * self.hidden * self.intermediate) + self.vocab * self.hidden

    def training_flops_per_token(self, attention_pairs_per_token: float) -> float:
        """FLOPs of one trained token, forward and backward (backward = 2 x forward): 6 per matmul
        parameter, plus the attention scores and their weighted sum (two matmuls of heads x head_dim
        per visible (query, key) pair and layer: 4 FLOPs x 3 passes = 12). `attention_pairs_per_token`
        is the visible pairs over the tokens: (L + 1) / 2 for one causal sequence of L tokens, the
        same per sample when samples are packed (each sees only itself)."""
        hd = self.head_dim or self.hidden // self.heads
        attention = 12 * self.num_layers * self.heads * hd * attention_pairs_per_token
        return 6 * self.matmul_params() + attention

    def lora_params(self, r: int) -> int:
        """LoRA on every linear layer of the blocks (PEFT's "all-linear")."""
        hd = self.head_dim or self.hidden // self.heads
        pairs = [
            (self.hidden, self.heads * hd),
            (self.hidden, self.kv_heads * hd),
            (self.hidden, self.kv_heads * hd),
            (self.heads * hd, self.hidden),
            (self.hidden, self.intermediate),
            (self.hidden, self.intermediate),
            (self.intermediate, self.hidden),
        ]
        return self.num_layers * sum(r * (a + b) for a, b in pairs)


QWEN3_8B = ModelShape(num_layers=36, hidden=4096, intermediate=12288, heads=32, kv_heads=8, vocab=151936, head_dim=128)


@dataclass
class MemoryPlan:
    world_size: int
    zero_stage: int
    offload_optimizer: bool
    offload_param: bool
    params: int
    trainable_params: int
    weights: float  # bytes per GPU
    gradients: float
    optimizer: float
    activations: float
    overhead: float
    tokens_per_micro_batch: int
    tokens_per_step: int
    notes: List[str] = field(default_factory=list)
    host: float = 0.0  # bytes of CPU memory per rank for offloaded states (0 without offload)

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.overhead

    def describe(self, gpu_memory_gb: float = 0.0) -> str:
        gb = lambda b: f"{b / GiB:7.1f} GiB"
        off = "+".join(n for n, on in (("optimizer", self.offload_optimizer), ("params", self.offload_param)) if on)
        lines = [
            f"SFT memory plan: {self.params / 1e9:.2f}B params ({self.trainable_params / 1e6:.1f}M trained), "
            f"{self.world_size} GPU(s), ZeRO-{self.zero_stage}{' offload ' + off if off else ''}",
            f"  weights      {gb(self.weights)}",
            f"  gradients    {gb(self.gradients)}",
            f"  optimizer    {gb(self.optimizer)}",
            f"  activations  {gb(self.activations)}",
            f"  runtime      {gb(self.overhead)}",
            f"  total / GPU  {gb(self.total)}" + (f"  (of {gpu_memory_gb:.0f} GiB)" if gpu_memory_gb else ""),
            f"  tokens per micro-batch {self.tokens_per_micro_batch:,}, per optimizer step {self.tokens_per_step:,}",
        ]
        if self.host:
            lines.append(f"  CPU memory   {gb(self.host)}  (offloaded states, per rank)")
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


def plan_memory(
    shape: ModelShape,
    *,
    world_size: int,
    zero_stage: int,
    per_device_batch: int,
    max_length: int,
    grad_accum: int = 1,
    gradient_checkpointing: bool = True,
    offload_optimizer: bool = False,
    offload_param: bool = False,
    lora_r: int = 0,
    weight_bytes: int = 2,
) -> MemoryPlan:
    """Per-GPU memory of one training configuration. zero_stage 0 means plain data parallelism."""
    if zero_stage not in (0, 1, 2, 3):
        raise PlanError(f"sft.deepspeed.config.zero_optimization.stage: got {zero_stage}; expected 0-3")
    n = shape.params()
    trained = shape.lora_params(lora_r) if lora_r else n
    shard = lambda stage_at_least: world_size if zero_stage >= stage_at_least else 1
    notes: List[str] = []

    weights = n * weight_bytes / shard(3)
    host_weights = 0.0
    if offload_param:
        if zero_stage < 3:
            notes.append("offload_param needs ZeRO-3; ignored")
        else:
            host_weights, weights = weights, 0.0
    if lora_r:
        weights += trained * weight_bytes
    grads = trained * weight_bytes / (shard(2) if not lora_r else 1)
    optimizer = trained * 12 / (shard(1) if not lora_r else 1)
    host = host_weights
    if offload_optimizer:
        # fp32 master weights and both Adam moments, and the fp32 gradient partition they are updated from
        host += optimizer + trained * 4 / (shard(1) if not lora_r else 1)
        optimizer = 0.0
        if not lora_r:
            grads = 0.0 if zero_stage >= 2 else grads  # ZeRO-Offload moves the gradient partition to CPU too

    tokens = per_device_batch * max_length
    per_layer_input = tokens * shape.hidden * weight_bytes
    full_layer = tokens * shape.hidden * LAYER_ACTIVATION_BYTES_PER_TOKEN_HIDDEN
    if gradient_checkpointing:
        activations = shape.num_layers * per_layer_input + full_layer
    else:
        activations = shape.num_layers * full_layer
    activations += tokens * shape.vocab * (4 + 4)  # fp32 logits and their gradient
    return MemoryPlan(
        world_size=world_size,
        zero_stage=zero_stage,
        offload_optimizer=offload_optimizer,
        offload_param=offload_param,
        params=n,
        trainable_params=trained,
        weights=weights,
        gradients=grads,
        optimizer=optimizer,
        activations=activations,
        overhead=RUNTIME_OVERHEAD_BYTES,
        tokens_per_micro_batch=tokens,
        tokens_per_step=tokens * grad_accum * world_size,
        notes=notes,
        host=host,
    )


def check_fits(plan: MemoryPlan, gpu_memory_gb: float) -> None:
    """Raise PlanError naming what to change when the plan needs more than `gpu_memory_gb` per GPU."""
    if not gpu_memory_gb or plan.total <= gpu_memory_gb * GiB:
        return
    states = plan.weights + plan.gradients + plan.optimizer
    advice: List[str] = []
    if plan.zero_stage < 3 and states > plan.activations:
        advice.append("a higher ZeRO stage (sft/deepspeed=zero3)")
    if not plan.offload_optimizer and plan.optimizer > 0:
        advice.append("CPU offload (deepspeed@sft.deepspeed=zero3-offload)")
    if plan.zero_stage >= 1 and states > plan.activations:
        advice.append(f"more GPUs (sft.num_processes / sft.num_nodes; now {plan.world_size})")
    if plan.trainable_params == plan.params:
        advice.append("LoRA (sft=lora)")
    if plan.activations > states or plan.activations > gpu_memory_gb * GiB / 4:
        advice.append("a shorter sft.max_length or sft.per_device_batch_size (raise gradient accumulation instead)")
    raise PlanError(
        f"sft: the plan needs {plan.total / GiB:.1f} GiB per GPU but sft.gpu_memory_gb is {gpu_memory_gb:g} "
        f"(weights {plan.weights / GiB:.1f}, gradients {plan.gradients / GiB:.1f}, optimizer "
        f"{plan.optimizer / GiB:.1f}, activations {plan.activations / GiB:.1f} GiB); try " + "; or ".join(advice)
    )


def plan_from_config(sft_cfg: SFTConfig, shape: ModelShape, world_size: int, grad_accum: int) -> MemoryPlan:
    """The plan of a typed `SFTConfig` (deepwriter.config.sft)."""
    ds: Dict[str, Any] = sft_cfg.deepspeed.config if sft_cfg.deepspeed.enabled else {}
    zero = ds.get("zero_optimization", {}) or {}
    device = lambda key: (zero.get(key) or {}).get("device", "none") not in ("none", None)
    return plan_memory(
        shape,
        world_size=world_size,
        zero_stage=int(zero.get("stage", 0)),
        per_device_batch=sft_cfg.per_device_batch_size,
        max_length=sft_cfg.max_length,
        grad_accum=grad_accum,
        gradient_checkpointing=sft_cfg.gradient_checkpointing,
        offload_optimizer=device("offload_optimizer"),
        offload_param=device("offload_param"),
        lora_r=sft_cfg.lora.r if sft_cfg.lora.enabled else 0,
        weight_bytes=2 if sft_cfg.bf16 else 4,
    )

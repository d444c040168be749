"""GPU acceptance check: the paper's SFT stage, the in-process scorer and batched generation on one GPU.

One command, eight minutes on one lent H100 or H200 that reaches no package index, the carried wheels'
install included (`make gpu-wheels` fetches them beforehand into .whl/; see bench/_gpu_wheels.py;
`make gpu-check-device` prints the device call, its carry list and size):

1. SFT: the project's SFT stage (deepwriter.sft.stage: TRL SFTTrainer, DeepSpeed ZeRO-3, bf16, packing,
   assistant-only loss, the packed attention the stage picks) trains a randomly initialised Qwen3 of a
   real shape for a few optimizer steps on long synthetic thinking+answer samples packed into
   `sft.max_length=16384`. The shape is the largest of Qwen3-8B, -4B, -1.7B that the project's memory
   planner (deepwriter.sft.memory) says fits this GPU, first without offload, then with ZeRO-Offload
   (`deepspeed@sft.deepspeed=zero3-offload`), whose offloaded states must also fit this machine's RAM and
   whose CPU Adam needs a compiler. Reported: step time, tokens/s, MFU (the stage's: matmul parameters and
   causal attention, README "SFT's MFU", over the dense bf16 peak, `PEAK_BF16_TFLOPS`) and the peak GPU
   memory beside the planner's estimate. Should an offloaded plan fail, the largest plan without offload
   is tried next while the budget allows.
   Width: Qwen3-8B's layer shape cut to the most layers the planner fits without offload, trained the
   same way: the MFU of the paper's matrix shapes (the goal's).
2. Scorer: the in-process scorer on the same shape at the REER step's real lengths (request x ~500,
   answer y ~3,000, thinking z ~2,000 tokens; K=2 rewrites of z's middle segment, scored as the search
   scores them): the prefix-reusing scorer (deepwriter.llm.hf_prefix) against naive re-scoring
   (deepwriter.llm.hf), their speed, scored tokens/s and their agreement (max |difference| of the
   clipped mean NLL, the search's score). As in a search, z itself was scored before the step, so its
   prefix is warm. Attention over a packed row: the full block mask against kernels that skip it.
3. Generation: the in-process generator (deepwriter.llm.hf), greedy, tokens/s at batch 1 and 32.

Everything goes to one JSON (`--out`; under $OUT when set); the last line printed is
`sft MFU M%, peak P GiB (planner E GiB), scorer prefix/naive R×`.

`--tiny` rehearses every path on the CPU with a tiny Qwen3 (the test suite runs it, so this script
cannot rot unnoticed): the planner refusing Qwen3-8B, ZeRO-Offload with DeepSpeed's CPU Adam, ZeRO-3
(gloo) without it in the width part, two packed rows per optimizer step, the same scorers and
generator, and the goals judged on the measured report. There the peak is the training process's RSS
and MFU is against this CPU's matmul peak in the dtype that ran.

    make gpu-wheels                  # where PyPI is reachable: the wheels the GPU machine lacks -> .whl/
    python -m bench.gpu_check        # on the GPU machine (make gpu-check); --help for the options
    python -m bench.gpu_check --tiny # on a CPU, a few minutes

Each part runs in its own process under the time budget (`--budget-s`), so a part that fails or runs
out of time leaves the others' figures; the JSON says which failed and why, and the exit code is 1.
Only the standard library is imported before the wheels are installed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
GiB = 1024**3
SITE_ENV = "DEEPWRITER_GPU_CHECK_SITE"  # set once the carried wheels are installed (the re-executed run)
START_ENV = "DEEPWRITER_GPU_CHECK_START"  # wall time the check started, kept across the re-execution
INSTALL_ENV = "DEEPWRITER_GPU_CHECK_INSTALL"  # what the install did, for the JSON
HOST_SHARE = 0.8  # an offloaded plan may take this share of the RAM available when the check starts
MIN_FALLBACK_S = 150  # a fallback SFT attempt is started only with this much budget left

# Dense bf16 tensor-core peaks (without sparsity) by device name, for MFU. torch names the H100 SXM
# "NVIDIA H100 80GB HBM3"; the first entry whose words are all in the name applies.
PEAK_BF16_TFLOPS: Tuple[Tuple[Tuple[str, ...], float, str], ...] = (
    (("H200",), 989.0, "NVIDIA H200 datasheet: 989 TFLOP/s dense BF16 (1,979 with sparsity), the H100 SXM's"),
    (("H100", "PCIe"), 756.0, "NVIDIA H100 PCIe datasheet: 756 TFLOP/s dense BF16 (1,513 with sparsity)"),
    (("H100", "SXM"), 989.0, "NVIDIA H100 SXM datasheet: 989 TFLOP/s dense BF16 (1,979 with sparsity)"),
    (("H100", "HBM3"), 989.0, "NVIDIA H100 SXM datasheet: 989 TFLOP/s dense BF16 (1,979 with sparsity)"),
)


def peak_bf16(device_name: str) -> Tuple[Optional[float], str]:
    for words, tflops, source in PEAK_BF16_TFLOPS:
        if all(w.lower() in device_name.lower() for w in words):
            return tflops, source
    return None, f"no dense bf16 peak known for {device_name!r} (give --peak-tflops); MFU not computed"


@dataclass(frozen=True)
class Sizes:
    """How much each part does: the GPU's real lengths, or the tiny rehearsal's."""

    max_length: int  # sft.max_length: tokens per packed row
    steps: int  # optimizer steps; the first is a warm-up, the figures are medians over the rest
    grad_accum: int  # micro-batches (packed rows) per optimizer step
    x_tokens: int  # scorer: request
    y_tokens: int  # scorer: answer
    z_tokens: int  # scorer: thinking trajectory
    k: int  # scorer: candidate rewrites of the middle segment
    repeats: int  # scorer: timed repetitions (median)
    gen_batches: Tuple[int, ...]
    gen_prompt_tokens: int
    gen_new_tokens: int
    budget_s: float  # the whole check, wheel install included


# 480 s: the whole check in 8 of a device command's 10 minutes, leaving time to rerun a failed part
GPU_SIZES = Sizes(16384, 3, 4, 500, 3000, 2000, 2, 3, (1, 32), 100, 128, 480.0)
# grad_accum 2: the optimizer step accumulates over packed rows, as the GPU's 4 do
# 420 s: room for DeepSpeed's first CPU Adam build (~1 minute, more on a busy machine; cached after)
TINY_SIZES = Sizes(256, 3, 2, 40, 240, 160, 2, 1, (1, 32), 24, 8, 420.0)


def family() -> Dict[str, Any]:
    """The Qwen3 shapes the check may train, largest first (the figures of each model's config.json)."""
    from deepwriter.sft.memory import QWEN3_8B, ModelShape

    return {
        "qwen3-8b": QWEN3_8B,
        "qwen3-4b": ModelShape(36, 2560, 9728, 32, 8, 151936, head_dim=128, tied_embeddings=True),
        "qwen3-1.7b": ModelShape(28, 2048, 6144, 16, 8, 151936, head_dim=128, tied_embeddings=True),
    }


def tiny_shape():
    """The tests' tiny Qwen3 (conf/model/tiny-qwen3.yaml) with room for `check_tokenizer`'s ids."""
    from deepwriter.sft.memory import ModelShape

    return ModelShape(2, 64, 128, 4, 2, 8192, head_dim=16, tied_embeddings=True)


# --- the carried wheels --------------------------------------------------------------------------


def ensure_wheels(wheels: Path, site: Path, argv: List[str]) -> dict:
    """Install the carried wheels when this environment lacks them, then re-execute this command on
    top of them. Returns what was done (for the JSON)."""
    from bench import _gpu_wheels as gw

    if os.environ.get(SITE_ENV):
        return json.loads(os.environ.get(INSTALL_ENV, "{}"))
    manifest = gw.load_manifest(wheels)
    info: Dict[str, Any] = {"dir": str(wheels), "installed": False}
    if manifest is None:
        missing = [m for m in ("trl", "deepspeed", "hydra", "datasets") if not _importable(m)]
        if missing:
            raise SetupError(
                f"{missing} are not installed and {wheels} holds no wheels: run `make gpu-wheels` where PyPI "
                f"is reachable and carry .whl/ with the working tree"
            )
        return info
    info.update(packages=len(manifest["packages"]), carried_mib=round(gw.carried_bytes(wheels) / 2**20, 1))
    need = gw.outdated(manifest)
    if not need:
        return info
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if manifest.get("python_version") != here:
        raise SetupError(
            f"{wheels} holds wheels for Python {manifest.get('python_version')}, this is Python {here}: "
            f"run `make gpu-wheels GPU_PYTHON_VERSION={here}`"
        )
    print(f"installing {len(manifest['packages'])} carried wheels into {site}: {'; '.join(need)}", flush=True)
    t0 = time.perf_counter()
    shutil.rmtree(site, ignore_errors=True)
    gw.install(wheels, site)
    info.update(installed=True, site=str(site), install_s=round(time.perf_counter() - t0, 1), replaced=need)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env[SITE_ENV] = str(site)
    env[INSTALL_ENV] = json.dumps(info)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "bench.gpu_check", *argv], env)
    raise AssertionError("unreachable")


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


class SetupError(Exception):
    """The check cannot start here (no GPU, no wheels); exit 2 with one line."""


# --- choosing what to train ----------------------------------------------------------------------


def sft_overrides(
    ds: str, shape_name: str, model_dir: Path, work: Path, sizes: Sizes, tiny: bool, memory_gib: float, peak: float
) -> List[str]:
    """The paper's recipe (+recipe=full: sft=full, ZeRO-3, bf16, packing, checkpointing) with the check's
    model, length, steps and batch."""
    return [
        "+recipe=full",
        f"deepspeed@sft.deepspeed={ds}",
        "models.student.source=local",
        f"models.student.path={model_dir}",
        f"models.student.name=gpu-check-{shape_name}",
        "models.student.dtype=bfloat16",
        f"paths.cache_dir={work / 'cache'}",
        f"sft.max_length={sizes.max_length}",
        f"sft.max_steps={sizes.steps}",
        "sft.per_device_batch_size=1",
        f"sft.global_batch_size={sizes.grad_accum}",
        "sft.gradient_accumulation_steps=null",
        "sft.warmup_ratio=0.0",
        "sft.logging_steps=1",
        "sft.save_steps=100000",
        f"sft.use_cpu={str(tiny).lower()}",
        f"sft.gpu_memory_gb={memory_gib:.2f}",
        f"sft.peak_tflops={peak}",
    ]


def compose_typed(overrides: List[str]):
    from deepwriter.config.compose import compose
    from deepwriter.config.root import to_typed

    return to_typed(compose(overrides))


def host_available_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def jit_toolchain_problem() -> Optional[str]:
    """ZeRO-Offload's optimizer is DeepSpeed's CPU Adam, compiled on first use: it needs a C++ compiler,
    ninja and Python's headers. What this machine lacks of them, or None."""
    import sysconfig

    missing = [
        what
        for what, ok in (
            ("a C++ compiler", shutil.which("c++") or shutil.which("g++")),
            ("ninja", shutil.which("ninja")),
            ("Python's headers (Python.h)", (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file()),
        )
        if not ok
    ]
    if not missing:
        return None
    return "ZeRO-Offload compiles DeepSpeed's CPU Adam on first use; this machine lacks " + ", ".join(missing)


def plan_candidates(
    shapes: Dict[str, Any],
    ds_options: List[str],
    make_overrides: Callable[[str, str], List[str]],
    memory_gib: float,
    host_bytes: Optional[float] = None,
) -> List[dict]:
    """Every (shape, DeepSpeed config) the planner was asked about, in order of preference, with its
    verdict. `host_bytes`: the RAM offloaded states may take a share of (default: what is available now)."""
    from deepwriter.sft.memory import PlanError, check_fits, plan_from_config

    host_limit = HOST_SHARE * (host_available_bytes() if host_bytes is None else host_bytes)
    toolchain = jit_toolchain_problem()
    # the plan reads sft.* only, the same for every shape: one composition per DeepSpeed config
    sft_cfgs = {ds: compose_typed(make_overrides(ds, next(iter(shapes)))).sft for ds in ds_options}
    rows = []
    for name, shape in shapes.items():
        for ds in ds_options:
            sft = sft_cfgs[ds]
            plan = plan_from_config(sft, shape, world_size=1, grad_accum=sft.global_batch_size)
            try:
                check_fits(plan, memory_gib)
                refusal = None
            except PlanError as exc:
                refusal = str(exc)
            offload = plan.offload_optimizer or plan.offload_param
            if refusal is None and plan.host > host_limit:
                refusal = (
                    f"the offloaded states need {plan.host / GiB:.1f} GiB of RAM; {HOST_SHARE:.0%} of the "
                    f"available is {host_limit / GiB:.1f} GiB"
                )
            if refusal is None and offload and toolchain:
                refusal = toolchain
            rows.append(
                {
                    "shape": name,
                    "deepspeed": ds,
                    "params": plan.params,
                    "planner_gib": round(plan.total / GiB, 2),
                    "planner_host_gib": round(plan.host / GiB, 2),
                    "offload": offload,
                    "fits": refusal is None,
                    "why_not": refusal,
                    "describe": plan.describe(memory_gib),
                    "shape_fields": asdict(shape),
                }
            )
    return rows


def width_candidate(
    full: Any, make_overrides: Callable[[str, str], List[str]], memory_gib: float, name: str = "qwen3-8b-width"
) -> Tuple[Optional[dict], List[dict]]:
    """The model's real layer shape (hidden size, heads, vocabulary) cut to the most layers the planner
    fits on this device without offload: the MFU of the real matrix shapes without the whole model.
    Returns the chosen plan (None: not even one layer fits) and every cut's verdict."""
    import dataclasses

    cuts = {f"{name}-{n}": dataclasses.replace(full, num_layers=n) for n in range(1, full.num_layers + 1)}
    rows = plan_candidates(cuts, ["zero3"], lambda ds, _: make_overrides(ds, name), memory_gib)
    fitting = [r for r in rows if r["fits"]]
    if not fitting:
        return None, rows
    return {**fitting[-1], "shape": name}, rows


# --- the parts (each runs in its own process) ----------------------------------------------------


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(device: str, fn: Callable[[], Any]) -> Tuple[float, Any]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def check_tokenizer():
    """A byte-level BPE trained on the text this check feeds the model: the scorer's prompts, the thinking
    sentences of bench.synthesis_scoring and the words of the synthetic SFT samples. It gives about one
    token per word, as a real tokenizer does on English prose, so the prompt's share of a scorer request
    is realistic (the tests' tiny tokenizer spells unseen words letter by letter). Its ids are below any
    real vocabulary's size."""
    from bench.synthesis_scoring import _SENTENCES
    from deepwriter.config.synthesis import SynthesisConfig
    from deepwriter.llm.models import TINY_CORPUS, build_tiny_tokenizer
    from deepwriter.synthesis.search import TrajectoryScorer
    from deepwriter.testing.synthetic_data import WORDS

    req = TrajectoryScorer("Write an essay.", "An answer.\n\nIn two paragraphs.", SynthesisConfig()).request("z")
    prompts = [m["content"] for m in req.messages] + [req.assistant_prefix]
    lines = TINY_CORPUS.splitlines() + list(_SENTENCES) + [" ".join(WORDS)] + "\n".join(prompts).splitlines()
    return build_tiny_tokenizer(8192, corpus=[line for line in lines if line.strip()] * 4)


def build_model(shape_fields: dict, device: str, dtype_name: str, dest: Optional[Path]):
    """A randomly initialised Qwen3 of the given shape on `device` (and `check_tokenizer`), saved to
    `dest` for the SFT stage."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from deepwriter.sft.memory import ModelShape

    shape = ModelShape(**shape_fields)
    tok = check_tokenizer()
    if len(tok) > shape.vocab:
        raise RuntimeError(f"the check's tokenizer has {len(tok)} ids, more than the model's vocabulary {shape.vocab}")
    config = AutoConfig.for_model(
        "qwen3",
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        head_dim=shape.head_dim,
        tie_word_embeddings=shape.tied_embeddings,
        max_position_embeddings=32768,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype_name))
    model.eval()
    if ModelShape.from_hf_config(model.config) != shape:
        raise RuntimeError(f"built {ModelShape.from_hf_config(model.config)}, asked for {shape}")
    if dest is not None:
        tmp = dest.parent / (dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    return model, tok


def text_of(tok, tokens: int, rng: random.Random, paragraphs: int, lead: str = "") -> str:
    """Thinking-like English text of about `tokens` tokens under `tok`, in `paragraphs` paragraphs."""
    from bench.synthesis_scoring import synthetic_trajectory

    words = max(paragraphs, tokens // 2)
    text = ""
    for _ in range(4):  # rescale the word count by the measured tokens per word
        text = lead + synthetic_trajectory(words, random.Random(rng.random()), paragraphs)
        have = len(tok(text, add_special_tokens=False)["input_ids"])
        if abs(have - tokens) <= 0.03 * tokens:
            break
        words = max(paragraphs, round(words * tokens / have))
    return text


def measure_scorer(model, tok, sizes: Sizes, device: str) -> dict:
    from bench.synthesis_scoring import synthetic_trajectory
    from deepwriter.config.synthesis import SynthesisConfig
    from deepwriter.llm.hf import TransformersScorer
    from deepwriter.llm.hf_prefix import PrefixCachingScorer
    from deepwriter.synthesis import segments
    from deepwriter.synthesis.search import TrajectoryScorer

    rng = random.Random(0)
    count = lambda s: len(tok(s, add_special_tokens=False)["input_ids"])
    x = text_of(tok, sizes.x_tokens, rng, 2, lead="Write a persuasive essay for a sceptical reader. ")
    y = text_of(tok, sizes.y_tokens, rng, max(3, min(12, sizes.y_tokens // 40)))
    z = text_of(tok, sizes.z_tokens, rng, max(3, min(10, sizes.z_tokens // 40)))  # segments of >= 100 chars
    segs = segments.split(z, 100)
    mid = len(segs) // 2
    judge = TrajectoryScorer(x, y, SynthesisConfig())
    naive = TransformersScorer(model, tok, "gpu-check")
    prefix = PrefixCachingScorer(model, tok, "gpu-check")
    base = judge.request(z)
    words = len(segs[mid].split())
    candidates = [
        judge.request(
            segments.join(segs[:mid] + [f"Variant {j}: " + synthetic_trajectory(words, rng, 1)] + segs[mid + 1 :])
        )
        for j in range(sizes.k)
    ]
    encoded = [naive.encode(r) for r in candidates]
    naive_tokens = sum(len(c) + len(t) for c, t in encoded)
    target_tokens = sum(len(t) for _, t in encoded)
    timed(device, lambda: naive.score([base]))  # warm-up: kernels, allocator
    naive_s, prefix_s, computed = [], [], []
    for _ in range(sizes.repeats):
        s, naive_out = timed(device, lambda: naive.score(candidates))
        naive_s.append(s)
        prefix.clear()
        prefix.score([base])  # the search scored z before this step: its prefix is warm, as in a search
        before = prefix.stats["tokens_computed"]
        s, prefix_out = timed(device, lambda: prefix.score(candidates))
        prefix_s.append(s)
        computed.append(prefix.stats["tokens_computed"] - before)
    a, b = judge.scores(naive_out), judge.scores(prefix_out)
    t_naive, t_prefix = statistics.median(naive_s), statistics.median(prefix_s)
    logprob_gap = max(abs(u - v) for p, q in zip(naive_out, prefix_out) for u, v in zip(p.logprobs, q.logprobs))
    return {
        "x_tokens": count(x),
        "y_tokens": count(y),
        "z_tokens": count(z),
        "z_segments": len(segs),
        "rewritten_segment": mid,
        "k": sizes.k,
        "tokens_per_candidate": [len(c) + len(t) for c, t in encoded],
        "scored_tokens_per_candidate": [len(t) for _, t in encoded],
        "naive_s": round(t_naive, 4),
        "prefix_s": round(t_prefix, 4),
        "speedup": round(t_naive / t_prefix, 3),
        "naive_scored_tokens_per_s": round(target_tokens / t_naive, 1),
        "prefix_scored_tokens_per_s": round(target_tokens / t_prefix, 1),
        "naive_tokens_per_s": round(naive_tokens / t_naive, 1),
        "tokens_run_share": round(statistics.median(computed) / naive_tokens, 4),
        "token_bound": round(naive_tokens / statistics.median(computed), 3),
        "scores_naive": a,
        "scores_prefix": b,
        "max_abs_delta_clipped_mean": max(abs(u - v) for u, v in zip(a, b)),
        "max_abs_delta_logprob": logprob_gap,
        "best_agrees": min(range(len(a)), key=a.__getitem__) == min(range(len(b)), key=b.__getitem__),
        "repeats": sizes.repeats,
    }


def measure_generation(model, tok, sizes: Sizes, device: str) -> dict:
    from deepwriter.llm.base import Sampling
    from deepwriter.llm.hf import TransformersGenerator

    rng = random.Random(1)
    top = max(sizes.gen_batches)
    prompts = [
        [{"role": "user", "content": text_of(tok, sizes.gen_prompt_tokens, rng, 1, lead=f"Request {i}. ")}]
        for i in range(top)
    ]
    gen = TransformersGenerator(model, tok, "gpu-check", batch_size=top)
    greedy = Sampling(temperature=0.0, max_new_tokens=sizes.gen_new_tokens)
    timed(device, lambda: gen.generate(prompts[:2], Sampling(temperature=0.0, max_new_tokens=4)))  # warm-up
    rows = []
    for batch in sizes.gen_batches:
        secs, out = timed(device, lambda b=batch: gen.generate(prompts[:b], greedy))
        tokens = sum(g[0].completion_tokens for g in out)
        rows.append(
            {
                "batch": batch,
                "seconds": round(secs, 3),
                "new_tokens": tokens,
                "prompt_tokens": sum(g[0].prompt_tokens for g in out),
                "tokens_per_s": round(tokens / secs, 1),
            }
        )
    return {"max_new_tokens": sizes.gen_new_tokens, "rows": rows}


def measure_attention(shape_fields: dict, device: str, length: int, sample_tokens: int, repeats: int) -> dict:
    """One layer's attention, forward and backward, over a packed row of `length` tokens holding samples
    of `sample_tokens`: SDPA given the row's block-diagonal causal mask (what SDPA training does: every pair
    computed), against kernels that skip the masked pairs: SDPA per sample (causal, what a varlen kernel
    does) and, on a GPU, FlexAttention's block mask (what SFT trains with there)."""
    import torch
    import torch.nn.functional as F

    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    heads, head_dim = shape_fields["heads"], shape_fields["head_dim"]
    bounds = list(range(0, length, sample_tokens)) + [length]
    spans = list(zip(bounds, bounds[1:]))
    doc = torch.cat([torch.full((e - s,), i, device=device) for i, (s, e) in enumerate(spans)])
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (
        torch.randn(1, heads, length, head_dim, device=device, dtype=dtype, generator=gen).requires_grad_()
        for _ in range(3)
    )
    mask = (doc[:, None] == doc[None, :]) & torch.ones(length, length, dtype=torch.bool, device=device).tril()
    grad = torch.randn(1, heads, length, head_dim, device=device, dtype=dtype, generator=gen)

    def full():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    def per_sample():
        parts = [F.scaled_dot_product_attention(*(t[:, :, s:e] for t in (q, k, v)), is_causal=True) for s, e in spans]
        return torch.cat(parts, dim=2)

    kernels: Dict[str, Callable[[], Any]] = {"full_mask": full, "per_sample": per_sample}
    if cuda:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        same_sample_causal = lambda b, h, qi, ki: (doc[qi] == doc[ki]) & (qi >= ki)
        block = create_block_mask(same_sample_causal, None, None, length, length, device=device)
        compiled = torch.compile(flex_attention)
        kernels["flex_block_mask"] = lambda: compiled(q, k, v, block_mask=block)
    reference = full().detach()
    out: Dict[str, Any] = {"length": length, "samples": len(spans), "dtype": str(dtype).removeprefix("torch.")}
    out["needed_pair_share"] = round(sum((e - s) * (e - s + 1) / 2 for s, e in spans) / length**2, 4)
    for name, fn in kernels.items():
        try:
            out[f"{name}_max_abs_diff"] = float((fn().detach().float() - reference.float()).abs().max())  # warm-up
            runs = []
            for _ in range(repeats):
                q.grad = k.grad = v.grad = None
                secs, _ = timed(device, lambda fn=fn: fn().backward(grad))
                runs.append(secs)
        except Exception as exc:  # FlexAttention's first GPU run: the SFT parts then train with SDPA
            out[f"{name}_error"] = f"{type(exc).__name__}: {exc}"[:500]
            continue
        out[f"{name}_s"] = round(statistics.median(runs), 5)
    return out


def part_infer(spec: dict) -> dict:
    """Build the model (saved for the SFT part), then the scorer and the generator on it."""
    import torch

    from deepwriter.llm.precision import pick_dtype

    device = spec["device"]
    dtype, why = pick_dtype(device)  # what `dtype: auto` gives on this device
    t0 = time.perf_counter()
    model, tok = build_model(spec["shape_fields"], device, dtype, Path(spec["model_dir"]))
    out: Dict[str, Any] = {"dtype": dtype, "dtype_why": why, "build_s": round(time.perf_counter() - t0, 1)}
    out["params"] = sum(p.numel() for p in model.parameters())
    out["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    sizes = Sizes(**{**spec["sizes"], "gen_batches": tuple(spec["sizes"]["gen_batches"])})
    print(f"model built and saved in {out['build_s']} s ({out['params'] / 1e6:,.1f}M params, {dtype})", flush=True)
    t0 = time.perf_counter()
    out["scorer"] = measure_scorer(model, tok, sizes, device)
    out["scorer"]["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"scorer done in {out['scorer']['seconds']} s", flush=True)
    t0 = time.perf_counter()
    length = 16384 if device.startswith("cuda") else 2048
    out["attention"] = measure_attention(spec["shape_fields"], device, length, 2048 if length > 2048 else 300, 3)
    out["attention"]["seconds"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    out["generation"] = measure_generation(model, tok, sizes, device)
    out["generation"]["seconds"] = round(time.perf_counter() - t0, 1)
    if device.startswith("cuda"):
        out["peak_gib"] = round(torch.cuda.max_memory_reserved() / GiB, 2)
    return out


def mix_rows_for(tokens: int, tok) -> Tuple[int, dict]:
    """How many synthetic samples (deepwriter.testing.synthetic_data) hold about `tokens` tokens, and their shape:
    thinking ~ long-tailed around 1,200 words on the GPU (REER trajectories run to thousands of tokens)."""
    from deepwriter.testing.synthetic_data import WORDS

    per_word = len(tok(" ".join(WORDS), add_special_tokens=False)["input_ids"]) / len(WORDS)
    long = tokens > 20000
    shape = dict(median_words=1200, sigma=0.5, max_words=5000) if long else dict(median_words=30, sigma=0.5)
    mean_words = 1.6 * shape["median_words"] * math.exp(shape["sigma"] ** 2 / 2)  # thinking + 0.6 x answer
    return max(8, math.ceil(tokens / (mean_words * per_word))), shape


def skip_cpu_shm_op() -> None:
    """DeepSpeed's CPU accelerator compiles a shared-memory all-reduce (`deepspeed_shm_comm`) when its
    process group starts: minutes of C++ on a busy 2-core machine, for collectives that one rank never
    runs and that the GPU path (NCCL) never builds. Marked incompatible in DeepSpeed's table of ops (kept
    in the module so that edits persist), the op is not built and gloo serves, as on platforms without it."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def part_sft(spec: dict) -> dict:
    """The SFT stage itself, on this process as its only rank."""
    import torch

    from deepwriter.core.contract import StageContext
    from deepwriter.sft import stage
    from deepwriter.sft import trainer as tr
    from deepwriter.testing.synthetic_data import write_mix_dataset
    from deepwriter.tracking.runs import Tracker

    work, device = Path(spec["work"]), spec["device"]
    if device == "cpu":
        skip_cpu_shm_op()
    model_dir = Path(spec["model_dir"])
    if not (model_dir / "config.json").is_file():  # a fallback shape the infer part did not build
        t0 = time.perf_counter()
        model, _ = build_model(spec["shape_fields"], device, "bfloat16", model_dir)
        del model
        print(f"model built and saved in {time.perf_counter() - t0:.1f} s", flush=True)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    cfg = compose_typed(spec["overrides"])
    from deepwriter.llm import models

    tok = models.load_tokenizer(cfg.models.student, cfg.paths.cache_dir)
    need = int(1.3 * cfg.sft.max_length * cfg.sft.global_batch_size * cfg.sft.max_steps)
    rows, shape = mix_rows_for(need, tok)
    shutil.rmtree(work / "mix", ignore_errors=True)
    write_mix_dataset(work / "mix", n=rows, seed=0, **shape)
    ctx = StageContext(
        name="sft",
        out_dir=work / "sft",
        inputs={"mix": work / "mix"},
        run_dir=work,
        tracker=Tracker(None),
        key="gpu-check",
    )
    t0 = time.perf_counter()
    result = stage.run(cfg, ctx)
    stage_s = time.perf_counter() - t0
    # whether the optimizer that stepped was DeepSpeed's compiled CPU Adam (it counts its instances)
    cpu_adam = sys.modules.get("deepspeed.ops.adam.cpu_adam")
    cpu_adam_instances = cpu_adam.DeepSpeedCPUAdam.optimizer_id if cpu_adam else 0
    log_rows = tr.read_log(work / "sft" / tr.TRAIN_LOG)
    measured, step_s = [], []
    for prev, row in zip(log_rows, log_rows[1:]):
        if row.get("tokens_per_s") and "num_tokens" in row and "num_tokens" in prev:
            measured.append(row)
            step_s.append((row["num_tokens"] - prev["num_tokens"]) / row["tokens_per_s"])
    if device.startswith("cuda"):
        free, total = torch.cuda.mem_get_info()
        outside = max(0, (total - free) - torch.cuda.memory_reserved())  # CUDA context, NCCL, cuBLAS
        peak = torch.cuda.max_memory_reserved() + outside
        peak_kind = "GPU: most memory PyTorch's allocator held, plus what lies outside it (context, NCCL)"
        extra = {
            "max_allocated_gib": round(torch.cuda.max_memory_allocated() / GiB, 2),
            "max_reserved_gib": round(torch.cuda.max_memory_reserved() / GiB, 2),
            "outside_allocator_gib": round(outside / GiB, 2),
        }
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peak_kind = "CPU: the training process's peak RSS"
        extra = {}
    losses = [r["loss"] for r in log_rows if "loss" in r]
    mfus = [r["mfu"] for r in measured if r.get("mfu") is not None]
    return {
        "steps": result.counts["steps"],
        "grad_accum": result.counts["grad_accum"],
        "samples": result.counts["samples"],
        "dataset_tokens": result.counts["tokens"],
        "trained_tokens": result.counts["trained_tokens"],
        "tokens_per_step": round(
            statistics.median([r["num_tokens"] - p["num_tokens"] for p, r in zip(log_rows, log_rows[1:])])
        )
        if len(log_rows) > 1
        else None,
        "losses": losses,
        "step_s": round(statistics.median(step_s), 3) if step_s else None,
        "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in measured), 1) if measured else None,
        "mfu_callback": statistics.median(mfus) if mfus else None,
        **{k: result.metrics.get(k) for k in ("mfu_peak_tflops", "mfu_peak", "flops_per_token", "compute_dtype")},
        "attention": result.metrics.get("attention"),
        "cpu_adam_instances": cpu_adam_instances,
        "measured_steps": len(measured),
        "peak_gib": round(peak / GiB, 2),
        "peak_kind": peak_kind,
        **extra,
        "stage_s": round(stage_s, 1),
        "train_s": result.metrics["train_seconds"],
        "log": log_rows,
    }


PARTS = {"infer": part_infer, "sft": part_sft}


def run_part(part: str, spec_path: Path, result_path: Path) -> int:
    """The body of a part's process: its result or its error goes to `result_path`."""
    spec = json.loads(spec_path.read_text())
    try:
        out = PARTS[part](spec)
        code = 0
    except BaseException as exc:  # the parent reports it; the traceback is in the part's log
        import traceback

        traceback.print_exc()
        out = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        code = 1
    result_path.write_text(json.dumps(out, indent=2, default=str))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no atexit teardown: DeepSpeed and NCCL can hang there, and everything is written


# --- the parent: orchestration and the report ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Budget:
    def __init__(self, start: float, seconds: float):
        self.deadline = start + seconds
        self.start = start

    def left(self) -> float:
        return self.deadline - time.time()

    def elapsed(self) -> float:
        return time.time() - self.start


def spawn(part: str, spec: dict, work: Path, log_path: Path, timeout: float, env_extra: Dict[str, str]) -> dict:
    """Run one part in its own process group, printing a progress line every 30 s; its result or an error."""
    spec_path, result_path = work / f"{part}.spec.json", work / f"{part}.result.json"
    spec_path.write_text(json.dumps(spec, indent=2, default=str))
    result_path.unlink(missing_ok=True)
    env = {**os.environ, **env_extra}
    cmd = [
        sys.executable,
        "-m",
        "bench.gpu_check",
        "--part",
        part,
        "--spec",
        str(spec_path),
        "--result",
        str(result_path),
    ]
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        next_note = t0 + 30
        while proc.poll() is None:
            time.sleep(0.5)
            now = time.time()
            if now - t0 > timeout:
                kill_tree(proc)
                return {"error": f"ran past its {timeout:.0f} s of the budget and was stopped", **_tail(log_path)}
            if now >= next_note:
                next_note = now + 30
                last = _tail(log_path, 1)["log_tail"][-1:] or [""]
                print(
                    f"  {part}: {now - t0:4.0f} s, {timeout - (now - t0):4.0f} s left for it; {last[0][:150]}",
                    flush=True,
                )
    if result_path.is_file():
        out = json.loads(result_path.read_text())
        if "error" in out:
            out.update(_tail(log_path))
        out["process_s"] = round(time.time() - t0, 1)
        return out
    return {"error": f"the process exited with {proc.returncode} and wrote no result", **_tail(log_path)}


def kill_tree(proc: subprocess.Popen) -> None:
    """Stop a part and everything it started: its process group, and the descendants that left it (ninja
    puts each compiler it runs in a group of its own)."""
    import psutil

    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    os.killpg(proc.pid, signal.SIGKILL)
    for p in descendants:
        try:
            p.kill()
        except psutil.Error:
            pass
    proc.wait()


def _tail(path: Path, lines: int = 25) -> dict:
    try:
        text = path.read_text(errors="replace").replace("\r", "\n")
    except OSError:
        return {"log_tail": []}
    return {"log_tail": [line for line in text.splitlines() if line.strip()][-lines:]}


def versions() -> Dict[str, Optional[str]]:
    from bench._gpu_wheels import installed_version

    return {
        n: installed_version(n) for n in ("torch", "transformers", "trl", "deepspeed", "accelerate", "datasets", "peft")
    }


PROBE = (
    "import json, torch\n"
    "ok = torch.cuda.is_available()\n"
    "p = torch.cuda.get_device_properties(0) if ok else None\n"
    "print(json.dumps({'cuda': ok, 'name': p.name if ok else None, 'memory_bytes': p.total_memory if ok else 0,"
    " 'capability': list(torch.cuda.get_device_capability(0)) if ok else None, 'torch_cuda': torch.version.cuda,"
    " 'bf16': bool(ok and torch.cuda.is_bf16_supported())}))\n"
)
# What the driver says of GPU 0 besides torch: memory other processes already hold, the driver.
SMI_QUERY = ["nvidia-smi", "--query-gpu=name,memory.total,memory.used,driver_version", "--format=csv,noheader,nounits"]


def device_from_probe(torch_out: str, smi_out: Optional[str]) -> dict:
    """The device from the probe's output (its last line, JSON) and nvidia-smi's CSV line for GPU 0
    (None where nvidia-smi did not run). The memory the planner may use is the total less what other
    processes hold already."""
    info = json.loads(torch_out.strip().splitlines()[-1])
    if not info["cuda"]:
        raise SetupError("no CUDA device: this check needs a GPU (`--tiny` runs its CPU rehearsal)")
    device = {"kind": "cuda", **info, "memory_total_bytes": info["memory_bytes"]}
    device["probe_out"] = {"torch": torch_out, "nvidia_smi": smi_out}  # as printed: tomorrow's test fixtures
    rows = [line for line in (smi_out or "").strip().splitlines() if line.strip()]
    if rows:
        name, total_mib, used_mib, driver = (field.strip() for field in rows[0].split(","))
        if name != info["name"]:
            raise SetupError(f"nvidia-smi's GPU 0 is {name!r}, torch's is {info['name']!r}: CUDA_VISIBLE_DEVICES?")
        used = int(float(used_mib)) * 2**20
        device.update(driver=driver, smi_total_bytes=int(float(total_mib)) * 2**20, used_by_others_bytes=used)
        device["memory_bytes"] = info["memory_bytes"] - used
    return device


def probe_device(tiny: bool) -> dict:
    """The device, asked in a throw-away process so that this one never holds GPU memory."""
    if tiny:
        return {"kind": "cpu", "name": "cpu", "memory_bytes": host_available_bytes(), "cores": os.cpu_count()}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise SetupError(f"probing the GPU failed: {out.stderr.strip().splitlines()[-1:]}")
    try:
        smi = subprocess.run(SMI_QUERY, capture_output=True, text=True, timeout=60)
        smi_out = smi.stdout if smi.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        smi_out = None
    return device_from_probe(out.stdout, smi_out)


def fmt(v: Optional[float], spec: str, unit: str = "") -> str:
    return "n/a" if v is None else f"{v:{spec}}{unit}"


def pct(share: Optional[float], spec: str = ".1f") -> str:
    return fmt(None if share is None else 100 * share, spec, "%")


def summary_line(report: dict) -> str:
    sft, scorer = report.get("sft") or {}, report.get("scorer") or {}
    mfu_s = pct(sft.get("mfu"))
    planner = (report.get("plan") or {}).get("planner_gib")
    return (
        f"sft MFU {mfu_s}, peak {fmt(sft.get('peak_gib'), '.1f', ' GiB')} (planner {fmt(planner, '.1f', ' GiB')}), "
        f"scorer prefix/naive {fmt(scorer.get('speedup'), '.2f', '×')}"
    )


def goals(report: dict) -> List[str]:
    """The issue's three goals, judged on the measured report. On a CPU (`--tiny`) they are judged all
    the same, so that the judging itself runs; a tiny model on a shared CPU says nothing of the GPU's."""
    sft, scorer, plan = report.get("sft") or {}, report.get("scorer") or {}, report.get("plan") or {}
    verdict = lambda ok: "met" if ok else "NOT met"
    width = report.get("width") or {}
    mfu = width.get("mfu")  # the goal is set at the 8B width
    peak, est = sft.get("peak_gib"), plan.get("planner_gib")
    off = None if not peak or est is None else (est - peak) / peak
    s = scorer.get("speedup")
    return [
        f"MFU >= 40% at the 8B width: {verdict(mfu is not None and mfu >= 0.40)} ({pct(mfu)})",
        f"planner within 15% of the measured peak: {verdict(off is not None and abs(off) <= 0.15)} "
        f"({pct(off, '+.1f')})",
        f"prefix scorer >= 1.3x naive: {verdict(s is not None and s >= 1.3)} ({fmt(s, '.2f', 'x')})",
    ]


def print_failed(part: dict, label: str = "") -> None:
    """A part that failed: its error and the last lines of its log."""
    print(f"  {label}FAILED: {part['error']}")
    for line in part.get("log_tail", [])[-12:]:
        print(f"    | {line[:200]}")


def print_report(report: dict) -> None:
    dev, plan = report["device"], report.get("plan") or {}
    print("\n== device and versions")
    name = dev.get("name")
    print(
        f"  {dev['kind']}: {name}, {dev['memory_bytes'] / GiB:.1f} GiB"
        + (f", CUDA {dev.get('torch_cuda')}" if dev["kind"] == "cuda" else "")
    )
    print(f"  peak: {fmt(report.get('peak_tflops'), '.0f', ' TFLOP/s')} ({report.get('peak_source')})")
    print("  " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    w = report.get("wheels") or {}
    if w.get("packages"):
        print(
            f"  carried wheels: {w['packages']} packages, {w.get('carried_mib')} MiB"
            + (f", installed in {w['install_s']} s" if w.get("installed") else ", already installed")
        )
    for line in report.get("unmet_requirements") or []:
        print(f"  warning: {line}")
    print("\n== planner (sft.max_length, one GPU)")
    for row in report.get("candidates", []):
        print(
            f"  {row['shape']:11s} {row['deepspeed']:14s} {row['planner_gib']:7.1f} GiB GPU "
            f"{row['planner_host_gib']:7.1f} GiB RAM  {'fits' if row['fits'] else 'no: ' + row['why_not'][:160]}"
        )
    if plan:
        print(f"  chosen: {plan['shape']} with {plan['deepspeed']}")
    sft = report.get("sft") or {}
    print("\n== sft (the SFT stage: TRL + DeepSpeed, bf16, packing, assistant-only loss)")
    for a in report.get("sft_attempts", []):
        if "error" in a:
            print_failed(a, f"{a['shape']} {a['deepspeed']}: ")
        else:
            print(
                f"  {a['shape']} {a['deepspeed']}: {a['steps']} steps x {a['grad_accum']} rows, losses "
                f"{', '.join(f'{v:.3f}' for v in a['losses'])}; {fmt(a['tokens_per_s'], ',.0f', ' tokens/s')}, MFU "
                f"{pct(a['mfu'])}, peak {a['peak_gib']:.2f} GiB; process {a['process_s']} s"
            )
    if sft and "error" not in sft:
        print(
            f"  {sft['shape']} {sft['deepspeed']}: {sft['steps']} steps x {sft['grad_accum']} packed rows of "
            f"{report['sizes']['max_length']:,} tokens; losses {', '.join(f'{v:.3f}' for v in sft['losses'])}"
        )
        print(
            f"  step {fmt(sft['step_s'], '.2f', ' s')}, {fmt(sft['tokens_per_s'], ',.0f', ' tokens/s')}, "
            f"MFU {pct(sft['mfu'])} (medians of {sft['measured_steps']} steps after the first)"
        )
        print(
            f"  MFU: {fmt(sft.get('flops_per_token'), ',.4g')} FLOPs per token (6 x matmul params + causal "
            f"attention) x tokens/s over {sft.get('mfu_peak')}; {sft.get('compute_dtype')}, attention "
            f"{sft.get('attention')}"
        )
        print(f"  peak memory {sft['peak_gib']:.2f} GiB ({sft['peak_kind']}); planner {plan.get('planner_gib')} GiB")
        print(f"  stage {sft['stage_s']} s (training {sft['train_s']} s), process {sft.get('process_s')} s")
    width, wplan = report.get("width") or {}, report.get("width_plan") or report.get("width_candidate") or {}
    if width:
        layers = (wplan.get("shape_fields") or {}).get("num_layers")
        print(f"\n== width (the 8B layer shape, cut to {layers} layers by the planner; no offload)")
        if "error" in width:
            print_failed(width)
        else:
            print(
                f"  {wplan.get('params', 0) / 1e9:.2f}B params; {fmt(width['tokens_per_s'], ',.0f', ' tokens/s')}, "
                f"MFU {pct(width['mfu'])}, peak {width['peak_gib']:.2f} GiB (planner {wplan.get('planner_gib')} GiB); "
                f"losses {', '.join(f'{v:.3f}' for v in width['losses'])}; process {width['process_s']} s"
            )
    sc = report.get("scorer") or {}
    print("\n== scorer (prefix reuse vs naive re-scoring, one REER step)")
    if "error" in (report.get("infer") or {}):
        print(f"  FAILED: {report['infer']['error']}")
    elif sc:
        inf = report["infer"]
        print(
            f"  model: {inf['params'] / 1e6:,.1f}M params (planner {plan.get('params', 0) / 1e6:,.1f}M), "
            f"{inf['dtype']}, attention {inf.get('attn_implementation')}; built and saved in {inf['build_s']} s"
        )
        print(
            f"  x {sc['x_tokens']}, y {sc['y_tokens']}, z {sc['z_tokens']} tokens ({sc['z_segments']} segments, "
            f"rewriting {sc['rewritten_segment']}), K={sc['k']}; {sc['tokens_per_candidate']} tokens per candidate, "
            f"{sc['scored_tokens_per_candidate']} scored"
        )
        print(
            f"  naive {sc['naive_s']:.3f} s ({sc['naive_scored_tokens_per_s']:,.0f} scored tokens/s), prefix "
            f"{sc['prefix_s']:.3f} s ({sc['prefix_scored_tokens_per_s']:,.0f} scored tokens/s): {sc['speedup']:.2f}x; "
            f"the prefix scorer ran {sc['tokens_run_share']:.0%} of the tokens (bound {sc['token_bound']:.2f}x)"
        )
        print(
            f"  agreement: max |Δ clipped mean NLL| {sc['max_abs_delta_clipped_mean']:.2e}, max |Δ log-prob| "
            f"{sc['max_abs_delta_logprob']:.2e}, same best candidate: {sc['best_agrees']} ({report['infer']['dtype']})"
        )
    att = report.get("attention") or {}
    if att:
        print(
            f"\n== attention (one layer, forward + backward, a packed row of {att['length']:,} tokens in "
            f"{att['samples']} samples: {att['needed_pair_share']:.0%} of its pairs are needed; {att['dtype']})"
        )
        for name in ("full_mask", "per_sample", "flex_block_mask"):
            if f"{name}_error" in att:
                print(f"  {name:16s} FAILED: {att[f'{name}_error'][:200]} (SFT trains with sdpa)")
            if f"{name}_s" in att:
                print(
                    f"  {name:16s} {att[f'{name}_s'] * 1e3:9.2f} ms ({att['full_mask_s'] / att[f'{name}_s']:.2f}x "
                    f"full mask), max |Δ| {att[f'{name}_max_abs_diff']:.1e}"
                )
    gen = report.get("generation") or {}
    if gen:
        print(f"\n== generation (in-process, greedy, {gen['max_new_tokens']} new tokens)")
        for r in gen["rows"]:
            tokens = f"{r['new_tokens']} tokens in {r['seconds']} s"
            print(f"  batch {r['batch']:3d}: {r['tokens_per_s']:10,.1f} tokens/s ({tokens})")
    where = " (judged on a CPU rehearsal: says nothing of a GPU)" if dev["kind"] == "cpu" else ""
    print(f"\n== goals{where}\n  " + "\n  ".join(report["goals"]))
    print(f"\nwhole check {report['elapsed_s']:.0f} s; JSON: {report['out']}")


PLAN_KEYS = ("shape", "deepspeed", "params", "planner_gib", "planner_host_gib", "offload")


def run_infer(chosen: dict, sizes: Sizes, work: Path, log: Path, seconds: float, report: dict) -> bool:
    print(f"\n[infer] {chosen['shape']}: build, scorer, generation ({seconds:.0f} s for it)", flush=True)
    spec = {
        "device": report["device"]["kind"],
        "shape_fields": chosen["shape_fields"],
        "model_dir": str(work / f"model-{chosen['shape']}"),
        "sizes": asdict(sizes),
    }
    infer = spawn("infer", spec, work, log, seconds, {})
    report["infer"] = {k: v for k, v in infer.items() if k not in ("scorer", "generation", "attention")}
    report["scorer"], report["generation"] = infer.get("scorer"), infer.get("generation")
    report["attention"] = infer.get("attention")
    print(f"[infer] {'FAILED: ' + infer['error'] if 'error' in infer else 'done'}", flush=True)
    return "error" not in infer


def run_sft(
    tries: List[dict],
    overrides: Callable[[str, str], List[str]],
    work: Path,
    out: Path,
    budget: Budget,
    report: dict,
    run_all: bool = False,
    slot: str = "sft",
    reserve_s: float = 0.0,
) -> bool:
    """The SFT stage on the first plan; on a failure, the next while the budget allows. `run_all` (the
    CPU rehearsal): every plan, and each must succeed; the first one's figures are the report's.
    `slot`: the report's keys for it (`sft`, or `width`: its figures, `width_attempts`, `width_plan`);
    `reserve_s`: budget left over for the parts after it."""
    attempts_key, plan_key = f"{slot}_attempts", "plan" if slot == "sft" else f"{slot}_plan"
    report[attempts_key] = []
    for i, cand in enumerate(tries):
        if i and not run_all and budget.left() < MIN_FALLBACK_S:
            break
        print(
            f"\n[sft] {cand['shape']} with {cand['deepspeed']} ({budget.left():.0f} s of the budget left)", flush=True
        )
        spec = {
            "device": report["device"]["kind"],
            "shape_fields": cand["shape_fields"],
            "work": str(work / f"sft-{cand['shape']}-{cand['deepspeed']}"),
            "model_dir": str(work / f"model-{cand['shape']}"),
            "overrides": overrides(cand["deepspeed"], cand["shape"]),
        }
        Path(spec["work"]).mkdir(parents=True, exist_ok=True)
        env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
        log = out.with_name(f"{out.stem}.{slot}{i or ''}.log")
        res = spawn("sft", spec, work, log, max(30.0, budget.left() - 5 - reserve_s), env)
        res.update(shape=cand["shape"], deepspeed=cand["deepspeed"])
        if "error" not in res:
            res["mfu"] = res["mfu_callback"]  # against the peak of the dtype that ran (the stage's mfu_peak)
        report[attempts_key].append({k: v for k, v in res.items() if k != "log"})
        if "error" in res:
            print(f"[sft] FAILED: {res['error']}", flush=True)
            if run_all:
                break
            continue
        print(f"[sft] done in {res['process_s']} s", flush=True)
        if slot not in report:
            report[slot], report[plan_key] = res, {k: cand[k] for k in PLAN_KEYS + ("shape_fields",)}
        if not run_all:
            return True
    failed = [a for a in report[attempts_key] if "error" in a]
    if slot not in report:
        report[slot] = failed[-1] if failed else {"error": "no time was left for it"}
    return run_all and not failed and len(report[attempts_key]) == len(tries)


# The lent machines, the memory torch reports on each, and the RAM beside it (the device tool's description).
LENT = (("nvidia-h200", 139.0, 128.0), ("nvidia-h100-x1", 78.0, 128.0))


def device_plan(gpu_gib: float, host_gib: float) -> str:
    """What the planner would train on a lent card: the first fitting (shape, DeepSpeed config)."""
    work = Path(tempfile.gettempdir())
    overrides = lambda ds, name: sft_overrides(ds, name, work / name, work, GPU_SIZES, False, gpu_gib, 989.0)
    rows = plan_candidates(family(), ["zero3", "zero3-offload"], overrides, gpu_gib, host_gib * GiB)
    width, _ = width_candidate(family()["qwen3-8b"], overrides, gpu_gib)
    cut = f"; 8B width {width['shape_fields']['num_layers']} layers" if width else "; no 8B layer fits"
    for c in rows:
        if c["fits"]:
            gib = f"{c['planner_gib']:.1f} GiB GPU, {c['planner_host_gib']:.1f} GiB RAM"
            return f"{c['shape']} {c['deepspeed']} ({gib}){cut}"
    return "nothing fits" + cut


def print_device_command(wheels: Path) -> int:
    """The one device call that runs this check on a lent GPU and brings its figures back."""
    from bench import _gpu_wheels as gw

    manifest = gw.load_manifest(wheels)
    carry = os.path.relpath(wheels, REPO)
    print("The GPU acceptance check as one device call (the `run` tool):")
    print(f'  command:   python3 -m bench.gpu_check --wheels {carry} --out "$OUT/gpu_check.json"')
    print(f'  carry:     ["{carry}"]')
    print(f"  timeout_s: 600 (the check's budget is {GPU_SIZES.budget_s:.0f} s, install included)")
    if manifest is None:
        print(f"  size:      {wheels} holds no wheels yet: run `make gpu-wheels` first (about 21 MiB)")
    else:
        w, tree = gw.carried_bytes(wheels), gw.tree_bytes()
        print(
            f"  size:      wheels {w / 2**20:.1f} MiB ({len(manifest['packages'])} packages) + working tree "
            f"{tree / 2**20:.1f} MiB = {(w + tree) / 2**20:.1f} of {gw.TRAVEL_LIMIT_BYTES / 2**20:.0f} MiB"
        )
    print("  kind: memory decides the shape, so name the larger card first, the H100 where none is free:")
    for kind, gpu_gib, host_gib in LENT:
        print(f"    {kind:15s} {gpu_gib:5.0f} GiB: {device_plan(gpu_gib, host_gib)}")
    print("  it returns gpu_check.json and the parts' logs (gpu_check.*.log) under files_at")
    return 0


def parse(argv: List[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a tiny Qwen3 on the CPU, seconds (the test suite's run)")
    ap.add_argument(
        "--out",
        type=Path,
        help="the JSON (default gpu_check[_tiny].json in $OUT if set, else bench/results/); logs beside it",
    )
    ap.add_argument("--budget-s", type=float, help="the whole check's time budget (GPU 480, tiny 420)")
    ap.add_argument(
        "--device-command", action="store_true", help="print the device call: command, carry list and size; no run"
    )
    ap.add_argument("--shape", choices=["qwen3-8b", "qwen3-4b", "qwen3-1.7b"], help="train this shape only")
    ap.add_argument("--deepspeed", choices=["zero3", "zero3-offload"], help="this DeepSpeed config only")
    ap.add_argument("--no-offload", action="store_true", help="only plans without ZeRO-Offload")
    ap.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, if not in the table")
    ap.add_argument(
        "--parts",
        default="infer,width,sft",
        help="which parts to run (infer: scorer and generation; width: Qwen3-8B's layer shape, cut to fit)",
    )
    ap.add_argument("--wheels", type=Path, default=REPO / ".whl", help="the carried wheels (make gpu-wheels)")
    ap.add_argument("--site", type=Path, default=Path(tempfile.gettempdir()) / "deepwriter-gpu-site")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed afterwards)")
    ap.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    ap.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def set_environment() -> None:
    for var, value in (
        ("WANDB_MODE", "disabled"),
        ("HF_HUB_OFFLINE", "1"),
        ("HF_DATASETS_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("TOKENIZERS_PARALLELISM", "false"),
    ):
        os.environ.setdefault(var, value)
    # the interpreter's own bin first: pip-installed tools (ninja, for DeepSpeed's JIT ops) live there
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.part:
        return run_part(args.part, args.spec, args.result)
    if args.device_command:
        return print_device_command(args.wheels)
    start = float(os.environ.setdefault(START_ENV, repr(time.time())))
    set_environment()
    tiny, sizes = args.tiny, TINY_SIZES if args.tiny else GPU_SIZES
    name = f"gpu_check{'_tiny' if tiny else ''}.json"
    # a device run returns only what it leaves under $OUT: there by default when that is set
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "bench" / "results") / name
    try:
        wheels = ensure_wheels(args.wheels, args.site, argv)
        device = probe_device(tiny)
    except SetupError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    from bench import _gpu_wheels as gw

    budget = Budget(start, args.budget_s or sizes.budget_s)
    if tiny:
        peak, peak_source = None, "CPU: the SFT stage measures this CPU's matmul peak in the dtype that ran"
    elif args.peak_tflops:
        peak, peak_source = args.peak_tflops, "--peak-tflops"
    else:
        peak, peak_source = peak_bf16(device["name"])
    report: Dict[str, Any] = {
        "device": device,
        "peak_tflops": peak,
        "peak_source": peak_source,
        "versions": versions(),
        "wheels": wheels,
        "unmet_requirements": gw.unmet_requirements([n for n in gw.CARRIED if gw.installed_version(n)]),
        "sizes": asdict(sizes),
        "out": str(out),
        "plan": None,
    }
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    memory_gib = device["memory_bytes"] / GiB

    def overrides(ds: str, shape_name: str) -> List[str]:
        model_dir = work / f"model-{shape_name}"
        extra = []
        if (report.get("attention") or {}).get("flex_block_mask_error"):
            extra = ["sft.attention=sdpa"]  # FlexAttention failed here: train with what ran
        return sft_overrides(ds, shape_name, model_dir, work, sizes, tiny, memory_gib, peak or 989.0) + extra

    # the CPU rehearsal asks the planner about Qwen3-8B too: refused there, for GPU memory without
    # offload and for this machine's RAM with it, as the GPU's larger shapes are
    shapes = {"qwen3-8b": family()["qwen3-8b"], "tiny-qwen3": tiny_shape()} if tiny else family()
    if args.shape:
        shapes = {args.shape: shapes[args.shape]}
    ds_options = ["zero3"] + ([] if args.no_offload else ["zero3-offload"])
    print(f"gpu_check: {device['name']}, {memory_gib:.1f} GiB; planning SFT at {sizes.max_length:,} tokens", flush=True)
    candidates = plan_candidates(shapes, [args.deepspeed] if args.deepspeed else ds_options, overrides, memory_gib)
    report["candidates"] = [{k: v for k, v in c.items() if k != "describe"} for c in candidates]
    fitting = [c for c in candidates if c["fits"]]
    parts = set(args.parts.split(","))
    ok = bool(fitting)
    if not fitting:
        why = "; ".join(f"{c['shape']} {c['deepspeed']}: {c['why_not']}" for c in candidates)
        report["sft"] = {"error": f"the planner fits none of the shapes on this device: {why}"}
    else:
        chosen = fitting[0]
        report["plan"] = {k: chosen[k] for k in PLAN_KEYS}
        print(chosen["describe"], flush=True)
        if "infer" in parts:
            reserve = 0.0 if not parts & {"sft", "width"} else (60.0 if tiny else 300.0)
            log = out.with_name(f"{out.stem}.infer.log")
            ok &= run_infer(chosen, sizes, work, log, max(30.0, budget.left() - reserve), report)
        if "width" in parts:
            full_name = "qwen3-8b" if not tiny else "tiny-qwen3"
            full = family()["qwen3-8b"] if not tiny else tiny_shape()
            width, _ = width_candidate(full, overrides, memory_gib, f"{full_name}-width")
            report["width_candidate"] = width and {k: width[k] for k in PLAN_KEYS + ("shape_fields",)}
            if width is None:
                report["width"] = {"error": f"not one layer of {full_name} fits {memory_gib:.0f} GiB without offload"}
                ok = False
            else:
                print(f"\n[width] {full_name}'s layer shape, {width['shape_fields']['num_layers']} layers", flush=True)
                reserve = 0.0 if "sft" not in parts else (60.0 if tiny else 180.0)  # the SFT part's share
                ok &= run_sft([width], overrides, work, out, budget, report, slot="width", reserve_s=reserve)
        if "sft" in parts and tiny:
            # the rehearsal trains the chosen shape with ZeRO-Offload and DeepSpeed's CPU Adam, the GPU's
            # choice on an H100 (the width part trained it without offload, the GPU's fallback)
            tries = [c for c in fitting if c["shape"] == chosen["shape"] and c["offload"]]
            ok &= run_sft(tries, overrides, work, out, budget, report, run_all=True)
        elif "sft" in parts:
            # should an offloaded plan fail, the largest plan without offload follows while time allows
            tries = [chosen] + [c for c in fitting if chosen["offload"] and not c["offload"]][:1]
            ok &= run_sft(tries, overrides, work, out, budget, report)

    report["elapsed_s"] = round(budget.elapsed(), 1)
    report["goals"] = goals(report)
    report["summary"] = summary_line(report)
    report["ok"] = ok
    out.write_text(json.dumps(report, indent=2, default=str))
    print_report(report)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(report["summary"], flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Packing vs padded batches for SFT on CPU: real (non-pad) tokens per second and final loss.

Both runs train the same small random Qwen3 for one epoch on the same long-tailed synthetic
thinking+answer data (log-normal lengths: most samples short, a few many times longer), through the
real SFT stage (TRL SFTTrainer). Packing: best-fit-decreasing rows of `max_length` tokens, padding-
free with position ids reset per sample. Baseline: `batch` samples per step, padded to the longest.
The two see about the same number of real tokens per optimizer step (a packed row of 512 tokens vs
5 samples of ~100 tokens on average), so they take about the same number of optimizer steps; final
loss is measured on the same held-out samples for both models.

Throughput is reported per wall second and per CPU second of the training process: on a shared
machine the wall clock depends on what else runs, the CPU time much less, so the ratio is taken on
CPU time (both are printed).

    python -m bench.sft_packing [--samples 160] [--max-length 512] [--batch 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _cfg(cache: Path, packing: bool, batch: int, max_length: int, lr: float):
    from deepwriter.config.compose import compose
    from deepwriter.config.root import to_typed

    # Wide and shallow: on CPU, attention over a packed row is dense (a block-causal mask, no varlen
    # kernel), so a tiny hidden size would let the L^2 term dominate where a real model's matmuls do.
    tiny = [
        "models.student.tiny_config.hidden_size=512",
        "models.student.tiny_config.intermediate_size=1536",
        "models.student.tiny_config.num_hidden_layers=2",
        "models.student.tiny_config.num_attention_heads=8",
        "models.student.tiny_config.num_key_value_heads=4",
        "models.student.tiny_config.head_dim=64",
    ]
    return to_typed(
        compose(
            [
                "model@models.student=tiny-qwen3",
                *tiny,
                "+recipe=demo",
                f"paths.cache_dir={cache}",
                "sft.max_steps=-1",
                "sft.epochs=1",
                f"sft.max_length={max_length}",
                f"sft.packing={str(packing).lower()}",
                f"sft.per_device_batch_size={1 if packing else batch}",
                f"sft.global_batch_size={1 if packing else batch}",
                f"sft.learning_rate={lr}",
                "sft.save_steps=100000",
                "sft.logging_steps=5",
            ]
        )
    )


def _train(work: Path, cfg):
    from deepwriter.core.contract import StageContext
    from deepwriter.sft import stage
    from deepwriter.tracking.runs import Tracker

    ctx = StageContext(
        name="sft",
        out_dir=work,
        inputs={"mix": work.parent / "mix"},
        run_dir=work.parent,
        tracker=Tracker(None),
        key="bench",
    )
    return stage.run(cfg, ctx)


def heldout_loss(model_dir: Path, rows) -> float:
    """Mean per-token loss over the assistant tokens of `rows` (same for both models)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from deepwriter.sft.templates import tokenize_with_labels

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            ids, labels = tokenize_with_labels(tok, row["messages"])
            ids, labels = torch.tensor([ids[:512]]), torch.tensor([labels[:512]])
            logits = model(input_ids=ids).logits[0, :-1]
            target = labels[0, 1:]
            mask = target != -100
            loss = torch.nn.functional.cross_entropy(logits[mask], target[mask], reduction="sum")
            total += loss.item()
            count += int(mask.sum())
    return total / count


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=160)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--batch", type=int, default=5, help="samples per padded batch (baseline)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is not inflated by spinning)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    import transformers

    transformers.logging.set_verbosity_error()
    from deepwriter.testing.synthetic_data import synthetic_rows, write_mix_dataset

    with tempfile.TemporaryDirectory(prefix="sft-packing-") as tmp:
        root = Path(tmp)
        write_mix_dataset(root / "mix", n=args.samples, seed=0, median_words=25, sigma=1.0, max_words=450)
        heldout = synthetic_rows(48, seed=99, median_words=25, sigma=1.0, max_words=450)
        results = {}
        for name, packing in (("padded", False), ("packed", True)):
            t0 = time.time()
            res = _train(root / name, _cfg(root / "cache", packing, args.batch, args.max_length, args.lr))
            secs, cpu = res.metrics["train_seconds"], res.metrics["train_cpu_seconds"]
            # One epoch each: every (truncated) sample once, so both runs train on the same real tokens.
            tokens = res.counts["tokens"]
            loss = heldout_loss(root / name / "model", heldout)
            results[name] = dict(tps=tokens / secs, tpc=tokens / cpu, loss=loss)
            print(
                f"{name:7s} steps {res.counts['steps']:4d}  real tokens {tokens:8,d}  train {secs:6.1f}s wall "
                f"{cpu:6.1f}s cpu  {tokens / secs:7.0f} tok/s wall  {tokens / cpu:7.0f} tok/cpu-s  "
                f"held-out loss {loss:.4f}  "
                f"(TRL counted {res.counts['trained_tokens']:,}; stage {time.time() - t0:.0f}s)",
                flush=True,
            )
        s = results["padded"]
        p = results["packed"]
        print(
            f"lengths: {args.samples} samples, long-tailed (log-normal), max_length {args.max_length}; "
            f"padded batch {args.batch}"
        )
        print(
            f"packing speed-up: {p['tpc'] / s['tpc']:.2f}x real tokens per CPU second (target >= 1.5x); "
            f"{p['tps'] / s['tps']:.2f}x per wall second"
        )
        print(
            f"held-out loss: packed {p['loss']:.4f} vs padded {s['loss']:.4f} "
            f"({100 * (p['loss'] - s['loss']) / s['loss']:+.2f}%, target within 2%)"
        )


if __name__ == "__main__":
    sys.exit(main())

"""Scoring throughput of the REER search step: the prefix-caching scorer vs full re-scoring.

One real (request, answer) pair from ../shared/seed_pairs (GPT-4o answers to HelloBench prompts), a
synthetic thinking trajectory of realistic length, and K candidate rewrites of its middle segment
(the average position the search visits), scored as the search scores them. Prints candidates/s of
both scorers for K = 2, 4, 8, the speed-up, and the FLOP/s each achieved as a share of this
machine's matmul peak, measured in the same run.

    python -m bench.synthesis_scoring [--k 2 4 8] [--z-words 600] [--dtype float32|bfloat16]
                                      [--sweep-k 4] [--compare-dtype] [--threads 1]

The sweep rewrites every segment position in turn, as one search's steps do, and gives the
speed-up over a whole search; --compare-dtype also scores the candidates in the other dtype, for
its speed and for whether it picks the same best candidate.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
SEED_PAIRS = REPO.parent / "shared" / "seed_pairs" / "hellobench_gpt4o_0806.jsonl"

_SENTENCES = [
    "I want the reader to feel the argument build rather than be told the conclusion up front.",
    "Hmm, maybe the opening should start from a concrete scene instead of a definition.",
    "The core objective is to persuade a sceptical but fair reader, so every claim needs support.",
    "Wait, the request asks for at least three arguments, each with its own paragraph and evidence.",
    "Let me think about the structure: a thesis, three supporting sections, a counterargument, a close.",
    "I will use a study or a statistic in each section so the tone stays formal and credible.",
    "Alternatively, I could order the arguments from the least to the most convincing one.",
    "The counterargument deserves a fair hearing before I answer it, otherwise the essay feels one-sided.",
    "Outline: introduction with the thesis, economic benefits, inclusivity, mental health, the hygiene objection, "
    "conclusion.",
    "I need the conclusion to restate the thesis in light of the evidence rather than repeat the introduction.",
]


def synthetic_trajectory(words: int, rng: random.Random, paragraphs: int = 10) -> str:
    per = max(1, words // paragraphs)
    out = []
    for _ in range(paragraphs):
        text, n = [], 0
        while n < per:
            s = rng.choice(_SENTENCES)
            text.append(s)
            n += len(s.split())
        out.append(" ".join(text))
    return "\n\n".join(out)


def pick_pair(quantile: float) -> dict:
    rows = [json.loads(line) for line in open(SEED_PAIRS)]
    rows.sort(key=lambda r: len(r["solution"].split()))
    return rows[int(quantile * (len(rows) - 1))]


class Timer:
    """Wall time and this process's CPU time. On a shared machine the wall clock also counts time
    the process waited for a core; with --threads 1 the CPU time counts only the work."""

    def __enter__(self) -> "Timer":
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def matmul_peak_flops(dtype: torch.dtype, seconds: float = 2.0, n: int = 2048) -> tuple:
    """(FLOP/s by wall time, FLOP/s by CPU time) of a square matmul."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    reps = 0
    with Timer() as t:
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            torch.mm(a, b)
            reps += 1
    return 2 * n**3 * reps / t.wall, 2 * n**3 * reps / t.cpu


class FlopModel:
    """Forward FLOPs of a decoder: 2 x non-embedding params per token, attention scores and values
    over the context so far, and the LM head only where logits are kept."""

    def __init__(self, model):
        cfg = model.config
        self.hidden = cfg.hidden_size
        self.layers = cfg.num_hidden_layers
        self.vocab = cfg.vocab_size
        emb = model.get_input_embeddings().weight.numel()
        self.body = sum(p.numel() for p in model.parameters()) - emb

    def forward(self, past: int, tokens: int, head_tokens: int) -> float:
        attn_ctx = tokens * past + tokens * (tokens + 1) / 2  # causal: token t sees past + t positions
        return (
            2 * self.body * tokens
            + 4 * self.layers * self.hidden * attn_ctx
            + 2 * self.hidden * self.vocab * head_tokens
        )


def _lcp(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--z-words", type=int, default=600)
    ap.add_argument("--answer-quantile", type=float, default=0.25, help="which pair, by answer length")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--cache-dir", default=os.environ.get("DEEPWRITER_CACHE", "~/.cache/deepwriter"))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--model", default="smollm2-135m", help="a conf/model entry (tiny-qwen3: the smoke test's)")
    ap.add_argument("--peak-seconds", type=float, default=2.0, help="how long the matmul peak is measured")
    ap.add_argument("--sweep-k", type=int, default=4, help="K for the sweep over segment positions (0: skip)")
    ap.add_argument("--compare-dtype", action="store_true", help="also time naive scoring in the other dtype")
    args = ap.parse_args()

    from omegaconf import OmegaConf

    from deepwriter.config.llm import ModelConfig
    from deepwriter.config.synthesis import SynthesisConfig
    from deepwriter.llm import models
    from deepwriter.llm.hf import TransformersScorer
    from deepwriter.llm.hf_prefix import PrefixCachingScorer
    from deepwriter.synthesis import segments
    from deepwriter.synthesis.search import TrajectoryScorer

    mcfg = OmegaConf.to_object(
        OmegaConf.merge(
            OmegaConf.structured(ModelConfig), OmegaConf.load(REPO / f"deepwriter/conf/model/{args.model}.yaml")
        )
    )
    mcfg.dtype = args.dtype
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = models.load(mcfg, args.cache_dir, device="cpu")
    dtype = getattr(torch, args.dtype)
    flops = FlopModel(model)

    pair = pick_pair(args.answer_quantile)
    rng = random.Random(0)
    z = synthetic_trajectory(args.z_words, rng)
    segs = segments.split(z, 100)
    mid = len(segs) // 2
    naive = TransformersScorer(model, tok, args.model)
    judge = TrajectoryScorer(pair["query"], pair["solution"], SynthesisConfig())

    def ids(req):
        c, t = naive.encode(req)
        return len(c), len(t)

    base_ctx, tgt = ids(judge.request(z))
    print(f"model {args.model} ({flops.body / 1e6:.0f}M non-embedding params), scorer prompt as in the search")
    print(
        f"pair {pair['id']}: request {len(pair['query'].split())} words, answer {len(pair['solution'].split())} "
        f"words; trajectory {len(z.split())} words in {len(segs)} segments; rewriting segment {mid}"
    )
    print(f"tokens per candidate: context {base_ctx}, scored target {tgt}")
    print(f"threads {torch.get_num_threads()}, dtype {args.dtype}, load average {os.getloadavg()[0]:.1f}")

    peak_wall, peak_cpu = matmul_peak_flops(dtype, args.peak_seconds)
    print(
        f"measured matmul peak: {peak_wall / 1e9:.0f} GFLOP/s by wall time, {peak_cpu / 1e9:.0f} GFLOP/s by CPU time "
        f"({args.dtype})\n"
    )

    def candidates(k: int, at: int = mid) -> list:
        return [
            judge.request(
                segments.join(
                    segs[:at]
                    + [f"Variant {j}: " + synthetic_trajectory(len(segs[at].split()), rng, 1)]
                    + segs[at + 1 :]
                )
            )
            for j in range(k)
        ]

    # Naive re-scoring costs the same per candidate whatever K is: measured once over max(K) candidates.
    with torch.inference_mode():
        naive.score([judge.request(z)])  # warm-up
    naive_reqs = candidates(max(args.k))
    with Timer() as tn:
        reference = naive.score(naive_reqs)
    naive_wall, naive_cpu = tn.wall / len(naive_reqs), tn.cpu / len(naive_reqs)
    f_naive_each = sum(flops.forward(0, sum(ids(r)), ids(r)[1] + 1) for r in naive_reqs) / len(naive_reqs)

    # The search scored z0 before any step, so the prompt and the text before the rewritten segment
    # are warm in the LRU when a step's candidates arrive; that first call is not timed.
    cached = PrefixCachingScorer(model, tok, args.model)
    cached.score([judge.request(z)])

    def run_cached(reqs):
        """(timer, tokens computed, FLOPs executed) of one step's candidates through the prefix scorer."""
        lens = [ids(r) for r in reqs]
        done = cached.stats["tokens_computed"]
        warm_keys = list(cached._entries)
        with Timer() as tc:
            got = cached.score(reqs)
        computed = cached.stats["tokens_computed"] - done
        # FLOPs actually executed: extending the warm prefix to the candidates' shared prefix, then
        # every candidate's suffix on top of it (the same split the scorer makes).
        full = [sum(naive.encode(r), []) for r in reqs]
        shared_len = min(c for c, _ in lens) - 1
        for f in full[1:]:
            shared_len = min(shared_len, _lcp(full[0], f))
        warm = max((_lcp(key, full[0]) for key in warm_keys), default=0)
        f_cached = flops.forward(warm, max(0, shared_len - warm), 1) + sum(
            flops.forward(shared_len, len(f) - shared_len, t + 1) for f, (_, t) in zip(full, lens)
        )
        return tc, got, computed / sum(c + t for c, t in lens), f_cached

    header = (
        f"{'K':>3} {'clock':>5} {'naive cand/s':>13} {'prefix cand/s':>14} {'speed-up':>9} {'naive %peak':>12} "
        f"{'prefix %peak':>13} {'tokens run':>11}"
    )
    print(header, flush=True)
    check = 0.0
    for k in args.k:
        tc, got, share, f_cached = run_cached(naive_reqs[:k])
        check = max(
            check, max(abs(x - y) for la, lb in zip(reference[:k], got) for x, y in zip(la.logprobs, lb.logprobs))
        )
        for clock, t_naive, t_cached, peak in (
            ("wall", naive_wall, tc.wall, peak_wall),
            ("cpu", naive_cpu, tc.cpu, peak_cpu),
        ):
            print(
                f"{k:>3} {clock:>5} {1 / t_naive:>13.3f} {k / t_cached:>14.3f} {t_naive * k / t_cached:>8.2f}x "
                f"{f_naive_each / t_naive / peak:>11.1%} {f_cached / t_cached / peak:>12.1%} {share:>10.0%}",
                flush=True,
            )

    if args.sweep_k:
        # A search visits segments left to right, so the reusable prefix grows step by step. Here
        # every segment position is rewritten once, as the steps of one search would: the LRU carries
        # the previous step's prefix, so each step's timing includes extending it by one segment.
        k = args.sweep_k
        print(
            f"\nK={k}, every segment position as a search visits them (wall seconds; tokens run = prefix scorer's "
            f"share of the naive scorer's tokens)"
        )
        print(f"{'segment':>8} {'naive s':>8} {'prefix s':>9} {'speed-up':>9} {'tokens run':>11}", flush=True)
        cached.clear()
        cached.score([judge.request(z)])
        tot_naive = tot_cached = 0.0
        for at in range(len(segs)):
            reqs = candidates(k, at)
            with Timer() as tn_at:
                naive.score(reqs)
            tc, _, share, _ = run_cached(reqs)
            tot_naive, tot_cached = tot_naive + tn_at.wall, tot_cached + tc.wall
            print(
                f"{at:>8} {tn_at.wall:>8.2f} {tc.wall:>9.2f} {tn_at.wall / tc.wall:>8.2f}x {share:>10.0%}", flush=True
            )
        print(
            f"{'search':>8} {tot_naive:>8.2f} {tot_cached:>9.2f} {tot_naive / tot_cached:>8.2f}x  "
            f"(all {len(segs)} steps)"
        )

    if args.compare_dtype:
        # The same naive scoring in the other dtype: its speed, and whether it agrees on the values
        # and on which candidate is best (what the search acts on).
        other = "float32" if args.dtype == "bfloat16" else "bfloat16"
        mcfg.dtype = other
        other_model, _ = models.load(mcfg, args.cache_dir, device="cpu")
        other_scorer = TransformersScorer(other_model, tok, args.model)
        other_scorer.score([judge.request(z)])
        reqs = naive_reqs
        with Timer() as to:
            got = other_scorer.score(reqs)
        from deepwriter.llm.base import clipped_mean_nll

        mine = [clipped_mean_nll(r, -2.0, 0.0) for r in reference]
        theirs = [clipped_mean_nll(r, -2.0, 0.0) for r in got]
        gaps = sorted(abs(a - b) for i, a in enumerate(mine) for b in mine[i + 1 :])
        print(
            f"\n{args.dtype} vs {other}, naive scoring of {len(reqs)} candidates: {args.dtype} {tn.wall:.2f} s, "
            f"{other} {to.wall:.2f} s wall -> {args.dtype} is {to.wall / tn.wall:.2f}x as fast"
        )
        print(f"  clipped mean NLL per candidate, {args.dtype}: {' '.join(f'{v:.4f}' for v in mine)}")
        print(f"  clipped mean NLL per candidate, {other}: {' '.join(f'{v:.4f}' for v in theirs)}")
        print(
            f"  max |difference| {max(abs(a - b) for a, b in zip(mine, theirs)):.4f}; smallest gap between two "
            f"candidates {gaps[0] if gaps else float('nan'):.4f}; best candidate agrees: "
            f"{min(range(len(mine)), key=mine.__getitem__) == min(range(len(theirs)), key=theirs.__getitem__)}"
        )

    print(f"\nmax |log-prob difference| prefix vs naive: {check:.2e}")
    print("tokens run: share of the naive scorer's tokens the prefix scorer puts through the model.")
    print(
        "%peak: model FLOPs executed per second over the matmul peak on the same clock. With several threads "
        "the cpu rows also count OpenMP's spin-waiting: on an idle machine trust the wall rows; on a busy one "
        "run with --threads 1 and trust the cpu rows."
    )


if __name__ == "__main__":
    main()

"""How much the scored-token rule moves REER scores: the reference's rule (the scorer's context, y's
scored rest and the closing `</answer>` tokenized as one text, the scored tokens picked by character
offsets, so a token straddling either boundary counts: llm.base.scored_token_range) against the rule
this project used before (context and target tokenized apart, nothing after the target).

Same model, same request, same trajectory z; only the choice of scored tokens differs. The embedded
SmolLM2-135M scores in-process (float32, CPU), on the demo pairs and on real pairs (GPT-4o answers to
HelloBench prompts, ../shared/seed_pairs), with z a fixed planning text (the pairs have no z0).

    python -m bench.scoring_tokens [--demo 8] [--real 16] [--max-words 600] [--threads 0]

Prints, per pair set: the mean and largest change of the clipped mean NLL (the search's score), the
signed mean change, the pairs whose scored tokens differ and where (start / end of y's rest), and the
same with the `</answer>` suffix left out (the one-text tokenization alone).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
DEMO_PAIRS = REPO / "deepwriter" / "data" / "demo" / "pairs.jsonl"
SEED_PAIRS = REPO.parent / "shared" / "seed_pairs" / "hellobench_gpt4o_0806.jsonl"

# The trajectory scored for every pair: a plan of several paragraphs (the search's segments).
Z = "\n\n".join(
    [
        "Alright, the user wants a piece that answers the request directly. I need to work out who reads it and "
        "what they should feel, think or do once they have read it.",
        "Hmm, maybe the opening should state the point at once and then give the reasons, one paragraph each, "
        "so the reader can follow the argument without being told the conclusion twice.",
        "Let me think about the tone: plain and warm, no jargon, concrete details rather than general claims. "
        "Wait, the request also asks for a clear ending, so the last paragraph sums up and says what comes next.",
        "--- The Draft ---\nAn opening line with the point; a paragraph per reason with an example; a short close "
        "that thanks the reader and names the next step.",
    ]
)


def load(path: Path, n: int, query: str, answer: str, max_words: int) -> list:
    rows = [json.loads(line) for line in path.open(encoding="utf-8")]
    rows = [r for r in rows if len(r[answer].split()) <= max_words]
    rows.sort(key=lambda r: str(r["id"]))
    return [(str(r["id"]), r[query], r[answer]) for r in rows[:n]]


def _logprobs(model, ids: list, first: int, last: int) -> list:
    """Log-probs of ids[first:last] given everything before, from one forward pass over ids[:last]."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids[:last]]), logits_to_keep=last - first + 1, use_cache=False).logits
    logp = torch.log_softmax(logits[0, :-1].float(), dim=-1)
    return logp.gather(1, torch.tensor(ids[first:last])[:, None])[:, 0].tolist()


def scores(model, tok, req, clip: tuple) -> dict:
    """The clipped mean NLL of one request under the old rule, the new rule without the suffix, and
    the new rule (as the search now scores), with where the scored tokens differ."""
    from deepwriter.llm.base import TokenLogprobs, clipped_mean_nll, encode_for_scoring
    from deepwriter.llm.hf import render_prompt

    context = render_prompt(tok, req.messages, req.assistant_prefix)
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    tgt = tok(req.target, add_special_tokens=False)["input_ids"]
    old_ids = ctx + tgt
    old = _logprobs(model, old_ids, len(ctx), len(old_ids))
    out = {"old": clipped_mean_nll(TokenLogprobs(logprobs=old), *clip)}
    for name, suffix in (("one_text", ""), ("new", req.suffix)):
        ids, first, last = encode_for_scoring(tok, context, req.target, suffix)
        out[name] = clipped_mean_nll(TokenLogprobs(logprobs=_logprobs(model, ids, first, last)), *clip)
        if name == "new":
            text = context + req.target + suffix
            offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            out["start_differs"] = offsets[first][0] < len(context)  # the first scored token began in the context
            out["end_differs"] = offsets[last - 1][1] > len(context) + len(req.target)  # the last ends in </answer>
            out["tokens_differ"] = ids[first:last] != tgt
            out["n_old"], out["n_new"] = len(tgt), last - first
    return out


def report(name: str, rows: list, threshold: float) -> None:
    if not rows:
        print(f"{name}: no pairs")
        return
    for key, label in (("new", "reference rule (one text + </answer>)"), ("one_text", "one text, no </answer>")):
        d = [r[key] - r["old"] for r in rows]
        a = [abs(x) for x in d]
        crossed = sum(1 for r in rows if (r[key] < threshold) != (r["old"] < threshold))
        print(
            f"  {label:<38} mean |Δ| {statistics.mean(a):.5f}  max |Δ| {max(a):.5f}  mean Δ {statistics.mean(d):+.5f}  "
            f"relative mean |Δ|/score {statistics.mean(x / r['old'] for x, r in zip(a, rows)):.2%}  "
            f"pairs crossing the stop threshold {crossed}/{len(rows)}"
        )
    diff = sum(r["tokens_differ"] for r in rows)
    start = sum(r["start_differs"] for r in rows)
    end = sum(r["end_differs"] for r in rows)
    print(
        f"  scored tokens differ for {diff}/{len(rows)} pairs (a straddling first token: {start}, last token: {end}); "
        f"scored tokens per pair old {statistics.mean(r['n_old'] for r in rows):.1f}, "
        f"new {statistics.mean(r['n_new'] for r in rows):.1f}; "
        f"old score mean {statistics.mean(r['old'] for r in rows):.4f}"
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", type=int, default=8, help="demo pairs (deepwriter/data/demo/pairs.jsonl)")
    ap.add_argument("--real", type=int, default=16, help="real pairs from ../shared/seed_pairs (0: none)")
    ap.add_argument("--max-words", type=int, default=600, help="real pairs: answers up to this many words")
    ap.add_argument("--model", default="smollm2-135m", help="a conf/model entry (tiny-qwen3: the smoke test's)")
    ap.add_argument("--cache-dir", default="~/.cache/deepwriter")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)

    from omegaconf import OmegaConf

    from deepwriter.config.llm import ModelConfig
    from deepwriter.config.synthesis import SynthesisConfig
    from deepwriter.llm import models
    from deepwriter.synthesis.search import TrajectoryScorer

    if args.threads:
        torch.set_num_threads(args.threads)
    mcfg = OmegaConf.to_object(
        OmegaConf.merge(
            OmegaConf.structured(ModelConfig), OmegaConf.load(REPO / f"deepwriter/conf/model/{args.model}.yaml")
        )
    )
    mcfg.dtype = "float32"
    model, tok = models.load(mcfg, args.cache_dir, device="cpu")
    scfg = SynthesisConfig()
    clip = (scfg.clip_min, scfg.clip_max)
    sets = [("demo pairs", load(DEMO_PAIRS, args.demo, "request", "answer", 10**9))]
    if args.real:
        if not SEED_PAIRS.exists():
            raise SystemExit(f"bench.scoring_tokens: {SEED_PAIRS} is not there (run with --real 0)")
        sets.append(("real pairs", load(SEED_PAIRS, args.real, "query", "solution", args.max_words)))
    threads = torch.get_num_threads()
    print(f"model {args.model} (float32, CPU, threads {threads}); z: a fixed {len(Z.split())}-word plan")
    print(f"score = clipped mean NLL of y's scored rest, log-probs clipped to {list(clip)}; Δ = new − old\n")
    total = sum(len(pairs) for _, pairs in sets)
    done, t0 = 0, time.monotonic()
    for name, pairs in sets:
        rows = []
        for pid, x, y in pairs:
            req = TrajectoryScorer(x, y, scfg).request(Z)
            rows.append(scores(model, tok, req, clip))
            done += 1
            rate = done / (time.monotonic() - t0)
            print(f"  [{done}/{total}] {pid}: {rate:.2f} pairs/s, ETA {(total - done) / rate:.0f}s", flush=True)
        print(f"{name} ({len(rows)}):")
        report(name, rows, scfg.stop_threshold)
        print()


if __name__ == "__main__":
    main()

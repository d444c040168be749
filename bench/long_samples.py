"""How much the SFT length limit would cut from real long-form answers: the evidence behind
`data.mix.over_max_length`'s default (docs/FIDELITY.md D4).

Real (request, answer) pairs are tokenized with a model's tokenizer; for each limit the bench prints how
many answers alone, and how many answers with a thinking of the generator's largest z0
(`synthesis.initial.max_new_tokens`, 8,000 at full scale), would be over it, with the answers' length
quantiles and their LongBench-Write word ranges. A sample over the limit is what the mix drops (or keeps
with its thinking cut, `truncate_thinking`).

    python -m bench.long_samples [--pairs FILE] [--model PRESET] [--limits 16384 8192] [--thinking 8000]
    make bench ARGS="long_samples"

--pairs: a JSONL of pairs with the answer in `solution` (default ../shared/seed_pairs/
hellobench_gpt4o_0806.jsonl: GPT-4o's published HelloBench answers). --model: the preset whose tokenizer
counts (default smollm2-135m, the embedded model; Qwen's tokenizer counts English at a similar rate).
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path


def main(argv=None) -> int:
    shared = Path(os.environ.get("DEEPWRITER_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
    ap = argparse.ArgumentParser(prog="python -m bench.long_samples", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=Path, default=shared / "seed_pairs" / "hellobench_gpt4o_0806.jsonl")
    ap.add_argument("--field", default="solution", help="the answer's field in each JSONL record")
    ap.add_argument("--model", default="smollm2-135m", help="a preset of deepwriter/conf/model/")
    ap.add_argument("--limits", type=int, nargs="+", default=[16384, 8192, 4096])
    ap.add_argument("--thinking", type=int, default=8000, help="tokens of thinking added to each answer")
    args = ap.parse_args(argv)

    from deepwriter.llm.models import load_tokenizer
    from deepwriter.mix.build import answer_bucket
    from deepwriter.testing.repo import compose_typed

    cfg = compose_typed(f"model@models.student={args.model}")
    tok = load_tokenizer(cfg.models.student, cfg.paths.cache_dir)
    answers = [json.loads(line)[args.field] for line in args.pairs.read_text().splitlines() if line.strip()]
    tokens = sorted(len(tok(a, add_special_tokens=False)["input_ids"]) for a in answers)
    n = len(tokens)
    print(f"{n} answers of {args.pairs.name}, tokens by {args.model}'s tokenizer")
    print(
        f"answer tokens: median {tokens[n // 2]}, 90th percentile {tokens[int(0.9 * n)]}, "
        f"99th {tokens[min(n - 1, int(0.99 * n))]}, max {tokens[-1]}"
    )
    buckets = Counter(answer_bucket(a) for a in answers)
    print("answers by LongBench-Write word range: " + ", ".join(f"{k} {v}" for k, v in sorted(buckets.items())))
    for limit in args.limits:
        alone = sum(t > limit for t in tokens)
        planned = sum(t + args.thinking > limit for t in tokens)
        print(
            f"limit {limit}: answers over it alone {alone}/{n} ({alone / n:.1%}); "
            f"with {args.thinking} tokens of thinking {planned}/{n} ({planned / n:.1%})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

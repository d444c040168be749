"""Throughput of the HTTP backend against the loopback server with an added per-request latency
(standing in for network + a busy remote GPU): concurrency N vs 1, for generation and scoring.

    python -m bench.http_throughput [--latency-s 0.2] [--requests 32] [--concurrency 8]

The model is the tiny random one, so the figures measure the client (balancing, semaphore, retries
machinery, JSON) and the overlap of waiting, not a model.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from deepwriter.config.llm import EndpointConfig
from deepwriter.llm.base import Sampling, ScoreRequest
from deepwriter.llm.openai_http import OpenAIGenerator, OpenAIScorer


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency-s", type=float, default=0.2)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--model", default="tiny-qwen3", help="a conf/model preset")
    args = ap.parse_args()

    from deepwriter.llm import models
    from deepwriter.llm.hf import TransformersGenerator, TransformersScorer
    from deepwriter.testing.loopback import load_preset, start_server

    cfg = load_preset(args.model)
    model, tok = models.load(
        cfg,
        tempfile.mkdtemp(prefix="dw-bench-")
        if cfg.source.value == "tiny"
        else os.environ.get("DEEPWRITER_CACHE", "~/.cache/deepwriter"),
        device="cpu",
    )
    server = start_server(
        TransformersGenerator(model, tok, cfg.name), TransformersScorer(model, tok, cfg.name), latency_s=args.latency_s
    )
    prompts = [
        [{"role": "user", "content": f"Write a short letter number {i} to the team about the sea."}]
        for i in range(args.requests)
    ]
    reqs = [
        ScoreRequest(p, "<think>\nOkay, a letter.\n</think>\n\n", "Dear team, thank you for your work this quarter.")
        for p in prompts
    ]
    sampling = Sampling(temperature=0.0, max_new_tokens=args.max_new_tokens)

    print(
        f"model={cfg.name} requests={args.requests} added latency={args.latency_s * 1000:.0f} ms/request, "
        f"server {server.url}"
    )
    print(f"{'task':<10} {'concurrency':>11} {'seconds':>8} {'req/s':>7} {'speed-up':>8}")
    try:
        for task in ("generate", "score"):
            base = None
            for conc in (1, args.concurrency):
                ep = EndpointConfig(
                    base_urls=[server.url], model=cfg.name, max_concurrency=conc, timeout_s=60.0, max_retries=2
                )
                if task == "generate":
                    client = OpenAIGenerator(ep, model_id=cfg.name)
                    secs = _timed(lambda c=client: c.generate(prompts, sampling))
                else:
                    client = OpenAIScorer(ep, tokenizer=tok, model_id=cfg.name)
                    secs = _timed(lambda c=client: c.score(reqs))
                assert client.usage.failed == 0, f"{client.usage.failed} requests failed"
                base = base or secs
                print(f"{task:<10} {conc:>11} {secs:>8.2f} {args.requests / secs:>7.2f} {base / secs:>7.2f}x")
        print(f"server: {server.stats.requests} requests, max in flight {server.stats.max_in_flight}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()

"""Judge throughput against a real loopback OpenAI-compatible server with 200 ms added latency per
request: concurrency 16 vs 1 (target ≥ 10×), then a cached re-run (target: 0 judge calls).

    python -m bench.judge_throughput [--tasks 48] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from deepwriter.config.eval import JudgeConfig
from deepwriter.config.llm import EndpointConfig
from deepwriter.eval.benchmarks import longbench_write as lb
from deepwriter.eval.benchmarks.base import Item
from deepwriter.eval.judge import Judge
from deepwriter.llm.base import Generation
from deepwriter.llm.openai_http import OpenAIGenerator
from deepwriter.testing.loopback import start_server


class InstantJudge:
    """Answers every LongBench-Write quality prompt with valid JSON at once; the server adds the latency."""

    model_id = "bench-judge"

    def generate(self, prompts, sampling, n=1, prefill=None, seeds=None):
        reply = json.dumps({**{d: 4 for d in lb.DIMENSIONS}, "reason": "ok"})
        return [[Generation(text=reply, prompt_tokens=300, completion_tokens=40) for _ in range(n)] for _ in prompts]


def run_once(url: str, tasks, concurrency: int, cache: Path):
    endpoint = EndpointConfig(
        base_urls=[url], model="bench-judge", max_concurrency=concurrency, timeout_s=30.0, max_retries=2, backoff_s=0.1
    )
    judge = Judge(
        lambda: OpenAIGenerator(endpoint, model_id="bench-judge"),
        "bench-judge",
        JudgeConfig(max_concurrency=concurrency),
        cache,
        constrained=False,
    )
    t0 = time.perf_counter()
    outs = judge.run(tasks, show_progress=False)
    elapsed = time.perf_counter() - t0
    assert all(o.ok for o in outs), [o.error for o in outs if not o.ok]
    return elapsed, judge.stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=48)
    ap.add_argument("--latency", type=float, default=0.2)
    args = ap.parse_args()
    tasks = [
        lb.judge_tasks(Item("lb", f"q{i}", f"Write note number {i}.", {"length": 100}), f"Answer {i}.")[0]
        for i in range(args.tasks)
    ]
    with tempfile.TemporaryDirectory() as tmp, start_server(InstantJudge(), latency_s=args.latency) as server:
        tmp = Path(tmp)
        t1, s1 = run_once(server.url, tasks, 1, tmp / "c1")
        t16, s16 = run_once(server.url, tasks, 16, tmp / "c16")
        before = server.stats.requests
        t_cached, s_cached = run_once(server.url, tasks, 16, tmp / "c16")
        new_requests = server.stats.requests - before
        print(
            f"judge tasks: {args.tasks}, server latency {args.latency * 1000:.0f} ms/request, "
            f"max in flight seen by the server {server.stats.max_in_flight}"
        )
        print(f"concurrency  1: {t1:6.2f} s  {args.tasks / t1:6.1f} tasks/s  ({s1.calls} calls)")
        print(f"concurrency 16: {t16:6.2f} s  {args.tasks / t16:6.1f} tasks/s  ({s16.calls} calls)")
        print(f"speed-up 16 vs 1: {t1 / t16:.1f}x   (target >= 10x)")
        print(
            f"cached re-run: {t_cached:.3f} s, judge calls {s_cached.calls}, cache hits {s_cached.cache_hits}, "
            f"server requests {new_requests}   (target 0 calls)"
        )


if __name__ == "__main__":
    main()

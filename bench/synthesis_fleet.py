"""Synthesis at fleet scale: the REER search of many pairs scheduled in lockstep vs continuously,
against a generator fleet and a scorer fleet, with pairs/min, each fleet's busy share and the bound
the fleets' capacity sets.

    python -m bench.synthesis_fleet [--pairs 160] [--generator-slots 8] [--scorer-slots 3]
                                    [--max-in-flight 24] [--batch-size N] [--schedules ...] [--quick]
    python -m bench.synthesis_fleet --vllm [--pairs 8] [--max-in-flight 4] [--vllm-url URL]

Both schedules run `deepwriter.synthesis.schedule.run_pairs` over the same pairs and the same
servers in one process, one after the other: `schedule=lockstep` (batches of `--batch-size` pairs,
default the pool size; each round waits for its slowest call) and `schedule=continuous` (up to
`--max-in-flight` pairs, each pair's next call sent when its last returns). Both clients are the
project's OpenAIGenerator / OpenAIScorer over HTTP, with a client concurrency that never binds
(pool x K requests), so the fleets' slots are the only limit.

The fleets (bench/_fleet_servers.py) are two loopback servers with `slots` slots each: a request
waits for a free slot, holds it for its latency, then gets a deterministic fake answer (no model).
A chat request with n choices holds one slot (parallel sampling shares the prefill, the n sequences
decode side by side). Latency, in seconds of slot time:

    generator  t = (t0 + prompt_tokens / prefill_rate + completion_tokens / decode_rate) * jitter
               defaults t0 0.05 s, prefill 20,000 tok/s, decode 1,000 tok/s; tokens = characters / 4,
               completion = the longest of the n choices
    scorer     t = (t0 + prompt_tokens / prefill_rate) * jitter
               defaults t0 0.02 s, prefill 70,000 tok/s; tokens = the token ids sent (tiny-qwen3's
               tokenizer, ~1.8 characters a token on these texts)
    jitter     lognormal of mean 1 and sigma 0.25, drawn from a hash of the request (not of the
               sampling seed), so a request costs the same under both schedules

so a z0 call takes ~0.7 s of a generator slot, a rewrite call ~0.3 s and a score request ~0.1 s of a
scorer slot: generation is the heavier call, as with a 32B generator and an 8B scorer. The default
fleets (8 generator slots, 3 scorer slots) are sized to the default workload's demand: the two
fleets' bounds are within 6% of each other, the scorer the slightly heavier. A fleet with more
capacity than its share of the work cannot be busy most of the time under any schedule, so a busy
share means something only for fleets sized like this; `--scorer-slots` etc. change the balance.

The fake answers give z0 1-12 segments per pair (skewed to few; 5% a single segment, discarded
unscored) and scores such that 30% of pairs can stop early under the 0.25 threshold while the rest
run all their segments, up to 10 steps; see bench/_fleet_servers.py. Every answer is a function of
its request, so both schedules run the very same searches (the bench checks it) and demand the same
slot-seconds.

Figures:
- pairs/min: pairs finished / wall time of the schedule's run;
- busy share (server side): occupied slot-seconds / (slots x window), over the window while work
  remains: from the run's start until fewer pairs are left unfinished than the schedule keeps in
  flight (after that only the last pairs drain, which no schedule can fill); also over the whole run;
- client view: share of the run with at least one call of that fleet in flight (the scheduler's own
  EndpointUsage, what the stage summary reports);
- bound: the slot-seconds the workload demands of each fleet (its modelled latencies, summed) over
  that fleet's slots give the shortest time the fleet can serve it; the longer of the two bounds
  pairs/min (it ignores the ramp-up and the drain, which no schedule avoids);
- CPU s (printed per run, saved): this process's CPU time, client and fake fleets together; on a
  shared machine a run starved of CPU sends its calls late, which shows as lower busy shares.

The default pool, 24 pairs, is about twice both fleets' slots together. A sweep of the continuous
pool on the default workload (2 shared CPU cores) gave the same throughput within 4% for 16 to 64
pairs; larger pools tilt the busy shares towards the generator (more z0 calls at once): generator /
scorer busy 90/93% at 16, 90/92% at 24, 90/90% at 32, 92/88% at 48, 95/83% at 64.

`--quick` (16 pairs, pool = both fleets' slots, latencies x 0.3) is a smoke run, too small for the
figures to mean much: most of it is ramp-up and drain.

`--vllm` runs the same comparison against one real vLLM server started with the project's launcher
(`python -m deepwriter.serve`, what `make serve` runs; preset smollm2-135m-vllm,
VLLM_CPU_KVCACHE_SPACE=2) acting as both generator and scorer (two servers do not fit two CPU
cores), with small numbers. Its busy shares are the client view only (the server's slots are not
observed), and it has no bound; vLLM's CPU build samples without seeds, so the two schedules' searches
differ. Results go to bench/results/synthesis_fleet.json (and synthesis_fleet_vllm.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
SCHEDULES = ("lockstep", "continuous")


@dataclasses.dataclass
class Run:
    """One schedule's pass over the pairs."""

    schedule: str
    pool: int
    pairs: int
    t_start: float
    t_end: float
    finish_times: List[float]
    outcomes: Dict[str, Any]  # pair id -> what its search decided (None: unfinished)
    unfinished: int
    usage: Any  # schedule.EndpointUsage
    cpu_s: float  # this process's CPU time: the client, and the fake fleets' HTTP handling

    @property
    def wall_s(self) -> float:
        return self.t_end - self.t_start

    @property
    def pairs_per_min(self) -> float:
        return 60 * (len(self.finish_times) - self.unfinished) / self.wall_s

    @property
    def t_work_remains(self) -> float:
        """When fewer pairs were left unfinished than the schedule keeps in flight (the run's end if
        the pool never was full)."""
        k = self.pairs - self.pool  # finishes after which pool - 1 pairs are left
        return self.finish_times[k] if 0 <= k < len(self.finish_times) else self.t_end


def _outcome(rec: Any) -> Optional[tuple]:
    if not isinstance(rec, dict):
        return None
    return (rec["z_final"], tuple(round(s, 9) for s in rec["scores"]), rec["verdict"]["reason"], len(rec["steps"]))


def run_schedule(schedule: str, pairs: Sequence[tuple], make_clients, cfg, pool: int) -> Run:
    from deepwriter.synthesis.schedule import EndpointUsage, run_pairs

    generator, scorer = make_clients()
    mode_cfg = dataclasses.replace(cfg, schedule=schedule, max_in_flight=pool, batch_size=pool)
    usage = EndpointUsage()
    finish_times: List[float] = []
    outcomes: Dict[str, Any] = {}
    unfinished = 0
    cpu_start, t_start = time.process_time(), time.perf_counter()
    for rec in run_pairs(list(pairs), generator, scorer, mode_cfg, usage=usage):
        finish_times.append(time.perf_counter())
        if isinstance(rec, dict):
            outcomes[rec["id"]] = _outcome(rec)
        else:  # an UnfinishedPair: a call failed after its retries
            unfinished += 1
            outcomes[rec.id] = None
            print(f"  unfinished {rec.id}: {rec.error[:200]}", file=sys.stderr)
    t_end = time.perf_counter()
    cpu_s = time.process_time() - cpu_start
    return Run(schedule, pool, len(pairs), t_start, t_end, finish_times, outcomes, unfinished, usage, cpu_s)


def _workload_summary(run: Run, threshold: float, note: str) -> str:
    done = [o for o in run.outcomes.values() if o is not None]
    steps = [o[3] for o in done]
    unscored = sum(1 for o in done if not o[1])
    early = sum(1 for o in done if o[1] and o[1][-1] < threshold)
    return (
        f"workload: {len(done)} searches, steps per pair mean {sum(steps) / max(1, len(steps)):.1f} max "
        f"{max(steps, default=0)}; {unscored} discarded before scoring, {early} ended under the threshold "
        f"{threshold} {note}"
    )


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%" if math.isfinite(x) else "n/a"


def report(runs: Dict[str, Run], fleets: Optional[Dict[str, Any]], out_path: Path, header: Dict[str, Any]) -> None:
    """Print the table (its last line is the summary the issue asks for) and write the results."""
    rows: Dict[str, Dict[str, Any]] = {}
    for name, run in runs.items():
        row: Dict[str, Any] = {
            "pool": run.pool,
            "pairs_finished": len(run.finish_times) - run.unfinished,
            "unfinished": run.unfinished,
            "wall_s": run.wall_s,
            "pairs_per_min": run.pairs_per_min,
            "work_remains_s": run.t_work_remains - run.t_start,
            "cpu_s": run.cpu_s,
        }
        client = run.usage.as_dict()  # the scheduler's own view, as the stage summary reports it
        for role in ("generator", "scorer"):
            row[f"{role}_client_busy"] = client[f"{role}_busy_share"]
            row[f"{role}_calls"] = client[f"{role}_calls"]
            if fleets:
                ledger = fleets[role].ledger
                row[f"{role}_busy"] = ledger.busy_share(run.t_start, run.t_work_remains)
                row[f"{role}_busy_whole_run"] = ledger.busy_share(run.t_start, run.t_end)
                row[f"{role}_requests"], row[f"{role}_demand_slot_s"] = ledger.demand(run.t_start, run.t_end)
            else:
                row[f"{role}_busy"] = row[f"{role}_client_busy"]
        rows[name] = row

    bound: Dict[str, Any] = {}
    if fleets:
        cont = rows.get("continuous") or next(iter(rows.values()))
        per_fleet = {
            role: cont[f"{role}_demand_slot_s"] / fleets[role].ledger.slots for role in ("generator", "scorer")
        }
        bottleneck = max(per_fleet, key=per_fleet.get)
        bound = {
            "seconds": per_fleet[bottleneck],
            "pairs_per_min": 60 * header["pairs"] / per_fleet[bottleneck],
            "bottleneck": bottleneck,
            "per_fleet_s": per_fleet,
        }

    work = ("gen req", "scorer req") if fleets else ("gen calls", "scorer calls")
    print(
        f"\n{'schedule':<11} {'pool':>4} {'done':>5} {'wall s':>7} {'pairs/min':>9} {'of bound':>8} "
        f"{'gen busy':>8} {'scorer busy':>11}   {'whole run gen/scorer':>20}   {'client gen/scorer':>17}   "
        f"{work[0]:>7} {'gen slot-s':>10} {work[1]:>10} {'scorer slot-s':>13}"
    )
    for name, r in rows.items():
        whole = f"{_pct(r['generator_busy_whole_run'])} / {_pct(r['scorer_busy_whole_run'])}" if fleets else "n/a"
        demand = (
            f"{r['generator_requests']:>7} {r['generator_demand_slot_s']:>10.1f} {r['scorer_requests']:>10} "
            f"{r['scorer_demand_slot_s']:>13.1f}"
            if fleets
            else f"{r['generator_calls']:>7} {'n/a':>10} {r['scorer_calls']:>10} {'n/a':>13}"
        )
        of_bound = r["pairs_per_min"] / bound["pairs_per_min"] if bound else float("nan")
        print(
            f"{name:<11} {r['pool']:>4} {r['pairs_finished']:>5} {r['wall_s']:>7.1f} {r['pairs_per_min']:>9.1f} "
            f"{_pct(of_bound):>8} {_pct(r['generator_busy']):>8} {_pct(r['scorer_busy']):>11}   {whole:>20}   "
            f"{_pct(r['generator_client_busy']) + ' / ' + _pct(r['scorer_client_busy']):>17}   {demand}"
        )
    if bound:
        g, s = bound["per_fleet_s"]["generator"], bound["per_fleet_s"]["scorer"]
        print(
            f"{'bound':<11} {'':>4} {header['pairs']:>5} {bound['seconds']:>7.1f} {bound['pairs_per_min']:>9.1f} "
            f"{'100%':>8}   (generator {g:.1f} s = slot-s / {fleets['generator'].ledger.slots} slots, "
            f"scorer {s:.1f} s = slot-s / {fleets['scorer'].ledger.slots} slots; bottleneck: {bound['bottleneck']})"
        )
    out = {"header": header, "schedules": rows, "bound": bound}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=2) + "\n")
    if fleets:
        print(f"gen/scorer busy: slot share while work remains; results written to {out_path}")
    else:
        print(
            "gen/scorer busy: client view (share of the run with at least one call of the fleet in flight; one "
            f"server plays both fleets, its slots are not observed); results written to {out_path}"
        )
    if set(rows) == set(SCHEDULES):
        ratio = rows["continuous"]["pairs_per_min"] / rows["lockstep"]["pairs_per_min"]
        c = rows["continuous"]
        print(
            f"continuous/lockstep: {ratio:.2f}×, generator busy {100 * c['generator_busy']:.0f}%, "
            f"scorer busy {100 * c['scorer_busy']:.0f}%"
        )


def _endpoint(url: str, model: str, concurrency: int, **extra: Any):
    from deepwriter.config.llm import EndpointConfig

    return EndpointConfig(
        base_urls=[url], model=model, max_concurrency=concurrency, timeout_s=600.0, max_retries=2, **extra
    )


def loopback(args) -> None:
    from bench._fleet_servers import GeneratorLatency, ScorerLatency, make_pairs, start_fleet_server
    from deepwriter.config.synthesis import SynthesisConfig
    from deepwriter.llm import models
    from deepwriter.llm.openai_http import OpenAIGenerator, OpenAIScorer
    from deepwriter.testing.loopback import load_preset

    gen_latency = GeneratorLatency(args.gen_t0, args.gen_prefill, args.gen_decode, args.sigma, args.time_scale)
    sc_latency = ScorerLatency(args.scorer_t0, args.scorer_prefill, args.sigma, args.time_scale)
    tok = models.load_tokenizer(load_preset("tiny-qwen3"), args.cache_dir)
    cfg = SynthesisConfig(max_steps=args.max_steps, seed=args.seed)
    pairs = make_pairs(args.pairs, args.seed)
    pool = args.max_in_flight
    batch = args.batch_size or pool
    # enough client concurrency for every request the pool can have out (K per scoring pair)
    concurrency = max(pool, batch) * cfg.num_candidates
    fleets = {
        "generator": start_fleet_server("generator", args.generator_slots, gen_latency),
        "scorer": start_fleet_server("scorer", args.scorer_slots, sc_latency),
    }

    def make_clients():
        gen = OpenAIGenerator(_endpoint(fleets["generator"].url, "fleet-generator", concurrency), "fleet-generator")
        sc = OpenAIScorer(
            _endpoint(fleets["scorer"].url, "fleet-scorer", concurrency, logprobs_api="completions_echo"),
            tokenizer=tok,
            model_id="fleet-scorer",
        )
        return gen, sc

    header = {
        "backend": "loopback fleets",
        "pairs": args.pairs,
        "seed": args.seed,
        "max_steps": cfg.max_steps,
        "num_candidates": cfg.num_candidates,
        "stop_threshold": cfg.stop_threshold,
        "generator_slots": args.generator_slots,
        "scorer_slots": args.scorer_slots,
        "max_in_flight": pool,
        "batch_size": batch,
        "client_concurrency": concurrency,
        "generator_latency": dataclasses.asdict(gen_latency),
        "scorer_latency": dataclasses.asdict(sc_latency),
        "load_average_1min": os.getloadavg()[0],
    }
    print(
        f"{args.pairs} pairs (seed {args.seed}), K={cfg.num_candidates}, max_steps={cfg.max_steps}, threshold "
        f"{cfg.stop_threshold}; generator fleet {args.generator_slots} slots, scorer fleet {args.scorer_slots} slots; "
        f"lockstep batch {batch}, continuous max_in_flight {pool}; client concurrency {concurrency}"
    )
    print(
        f"latency: generator ({gen_latency.t0_s:g} + p/{gen_latency.prefill_tokens_per_s:g} + "
        f"c/{gen_latency.decode_tokens_per_s:g}) s, "
        f"scorer ({sc_latency.t0_s:g} + p/{sc_latency.prefill_tokens_per_s:g}) s, "
        f"x lognormal jitter sigma {args.sigma:g}, x time scale {args.time_scale:g}; "
        f"load average {header['load_average_1min']:.1f}",
        flush=True,
    )
    runs: Dict[str, Run] = {}
    try:
        for schedule in args.schedules:
            runs[schedule] = run_schedule(schedule, pairs, make_clients, cfg, batch if schedule == "lockstep" else pool)
            print(f"  {schedule}: {runs[schedule].wall_s:.1f} s, {runs[schedule].cpu_s:.1f} CPU s", flush=True)
    finally:
        for f in fleets.values():
            f.stop()
    first, last = runs[args.schedules[0]], runs[args.schedules[-1]]
    same = sum(1 for pid, o in last.outcomes.items() if o is not None and first.outcomes.get(pid) == o)
    header["same_outcomes"] = same
    print(_workload_summary(last, cfg.stop_threshold, f"({last.schedule} run)"))
    if len(runs) > 1:
        print(f"same search outcome under both schedules (z_final, scores, verdict, steps): {same}/{args.pairs} pairs")
    report(runs, fleets, args.out, header)


def start_vllm(preset: str, log_path: Path, timeout_s: float = 420.0):
    """A vLLM server for `preset`, started with the project's launcher as `make serve` runs it, but
    without make: its install step would reinstall .venv whenever pyproject.toml is newer than the
    last install. Returns tests/vllm_server.py's handle (its kill() ends the whole process group)."""
    from deepwriter.testing.vllm_server import VLLMServer

    server = VLLMServer(preset, log_path)
    python = REPO / ".venv-serve" / "bin" / "python"
    cmd = [sys.executable, "-m", "deepwriter.serve", f"--model={preset}", f"--port={server.port}", f"--python={python}"]
    return server.start(timeout_s, cmd=cmd)


def vllm(args) -> None:
    from bench._fleet_servers import make_pairs
    from deepwriter.config.synthesis import FilterConfig, SamplingConfig, SynthesisConfig
    from deepwriter.llm import models
    from deepwriter.llm.openai_http import OpenAIGenerator, OpenAIScorer
    from deepwriter.testing.loopback import load_preset

    preset = load_preset(args.vllm_preset)
    tok = models.load_tokenizer(preset, args.cache_dir)
    server = None
    url = args.vllm_url
    if not url:
        log = Path(tempfile.mkdtemp(prefix="dw-fleet-vllm-")) / "server.log"
        print(f"starting `python -m deepwriter.serve --model {args.vllm_preset}` (log {log}) ...", flush=True)
        server = start_vllm(args.vllm_preset, log)
        url = server.url
        print(f"vLLM answered after {server.startup_s[-1]:.0f} s at {url}", flush=True)
    # A 135M model: short z0, a <refine>-prefilled rewrite, no minimum length, small segments, so that
    # its searches take steps at all (as the demo recipe's overrides do for it).
    cfg = SynthesisConfig(
        max_steps=args.max_steps,
        refine_analysis=False,
        min_segment_chars=40,
        initial=SamplingConfig(max_new_tokens=args.max_new_tokens),
        refine=SamplingConfig(max_new_tokens=args.max_new_tokens // 2),
        filters=FilterConfig(min_think_tokens=0),
        seed=args.seed,
    )
    pairs = make_pairs(args.pairs, args.seed, answer_paragraphs=(2, 3))
    pool = args.max_in_flight
    concurrency = pool * cfg.num_candidates
    model = preset.endpoint.model or preset.name

    def make_clients():
        ep = dataclasses.replace(preset.endpoint, base_urls=[url], max_concurrency=concurrency)
        return OpenAIGenerator(ep, model), OpenAIScorer(ep, tokenizer=tok, model_id=model)

    header = {
        "backend": f"one vLLM server ({args.vllm_preset}) as generator and scorer",
        "pairs": args.pairs,
        "max_steps": cfg.max_steps,
        "max_new_tokens": args.max_new_tokens,
        "max_in_flight": pool,
        "batch_size": pool,
        "load_average_1min": os.getloadavg()[0],
    }
    print(
        f"{args.pairs} pairs, K={cfg.num_candidates}, max_steps={cfg.max_steps}, z0 max_new_tokens "
        f"{args.max_new_tokens}; one vLLM server ({args.vllm_preset}) is both fleets; pool {pool}; "
        f"load average {header['load_average_1min']:.1f}",
        flush=True,
    )
    runs: Dict[str, Run] = {}
    try:
        for schedule in args.schedules:
            runs[schedule] = run_schedule(schedule, pairs, make_clients, cfg, pool)
            print(f"  {schedule}: {runs[schedule].wall_s:.1f} s, {runs[schedule].cpu_s:.1f} CPU s", flush=True)
    finally:
        if server is not None:
            server.kill()
    print(_workload_summary(runs[args.schedules[-1]], cfg.stop_threshold, "(last run; vLLM samples vary)"))
    report(runs, None, args.out.with_name(args.out.stem + "_vllm.json"), header)


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=None, help="pairs searched (default 160; --vllm 8; --quick 16)")
    ap.add_argument("--max-in-flight", type=int, default=None, help="continuous pool (default 24; --vllm 4)")
    ap.add_argument("--batch-size", type=int, default=0, help="lockstep batch (default: the continuous pool)")
    ap.add_argument("--generator-slots", type=int, default=8)
    ap.add_argument("--scorer-slots", type=int, default=3)
    ap.add_argument("--max-steps", type=int, default=None, help="search steps per pair (default 10; --vllm 2)")
    ap.add_argument("--gen-t0", type=float, default=0.05, help="generator: seconds per request")
    ap.add_argument("--gen-prefill", type=float, default=20000.0, help="generator: prompt tokens per second")
    ap.add_argument("--gen-decode", type=float, default=1000.0, help="generator: completion tokens per second")
    ap.add_argument("--scorer-t0", type=float, default=0.02, help="scorer: seconds per request")
    ap.add_argument("--scorer-prefill", type=float, default=70000.0, help="scorer: prompt tokens per second")
    ap.add_argument("--sigma", type=float, default=0.25, help="lognormal jitter of every latency")
    ap.add_argument("--time-scale", type=float, default=1.0, help="every latency times this")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--schedules", nargs="+", choices=SCHEDULES, default=list(SCHEDULES), help="which to run")
    ap.add_argument("--quick", action="store_true", help="16 pairs, pool 11, latencies x 0.3: a smoke run")
    ap.add_argument("--cache-dir", default=os.environ.get("DEEPWRITER_CACHE", "~/.cache/deepwriter"))
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "synthesis_fleet.json")
    ap.add_argument("--vllm", action="store_true", help="against one real vLLM server (make serve) instead")
    ap.add_argument("--vllm-url", default=None, help="an already running vLLM server's /v1 URL")
    ap.add_argument("--vllm-preset", default="smollm2-135m-vllm")
    ap.add_argument("--max-new-tokens", type=int, default=96, help="--vllm: z0's max_new_tokens (rewrites: half)")
    args = ap.parse_args(argv)
    if args.vllm:
        args.pairs = args.pairs or 8
        args.max_in_flight = args.max_in_flight or 4
        args.max_steps = 2 if args.max_steps is None else args.max_steps
        vllm(args)
        return
    if args.quick:
        args.pairs = args.pairs or 16
        args.max_in_flight = args.max_in_flight or args.generator_slots + args.scorer_slots
        args.time_scale = args.time_scale if args.time_scale != 1.0 else 0.3
    args.pairs = args.pairs or 160
    args.max_in_flight = args.max_in_flight or 24
    args.max_steps = 10 if args.max_steps is None else args.max_steps
    loopback(args)


if __name__ == "__main__":
    main()

"""A synthesis job array at scale, simulated on one machine: 64 tasks, each the synthesize stage of one
shard (`synthesis.shards=64 synthesis.shard=i/64`, what `launcher=slurm` gives each array task) writing
its own shard of one stage folder, against loopback fleets; then the merge the mix does of all shards.

    python -m bench.synthesis_array [--tasks 64] [--pairs 512] [--parallel 8] [--max-steps 2]
                                    [--time-scale 0.3] [--quick]

The tasks are processes on this machine, not SLURM jobs: at most `--parallel` run at a time, the next
one starting as soon as one ends, as SLURM runs an array `--array=0-63%8` on a cluster with room for
eight (the real scheduler, its queue and its requeues are tested in tests/pipeline/test_slurm.py with
two tasks). Each task forks from this process (the imports are done once, as they would be cached on a
node) and runs `deepwriter.synthesis.stage.run` itself: its share of the pairs, its record log, its
done marker; the task that ends last writes the stage's whole result. The generator and the scorer are
the fake fleets of bench/_fleet_servers.py (no model: deterministic answers, latencies modelled from
the request's tokens, `--time-scale` x; see its docstring) in a process of their own, shared by every
task with `--generator-slots` and `--scorer-slots` slots, as a fleet the user names
(`endpoint.base_urls`).

Figures:
- records written per second, overall: records of the whole array / wall time from the first task's
  start to the last one's end;
- per task: its records / its own wall time (start of its stage run to its end, its start-up in it),
  mean and standard deviation over the tasks, with the slowest and fastest;
- the merge: the mix's read of every shard (`deepwriter.mix.build.load_trajectories`, the same call the
  mix stage makes) timed over `--merge-repeats` runs (median, min and max), with the shards' bytes and
  files; the same records from one file, timed the same way, for the cost of the split itself.

Checks (the bench fails otherwise): every pair written once (none lost, none twice), the stage whole
once the last task ended (every shard's done marker, the whole result from the last task).
Results go to bench/results/synthesis_array.json. On a shared 2-core machine the tasks' CPU (the
search's own work, HTTP, JSON) is the bound: the figures are this machine's, not a cluster's.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent


def _serve_fleets(args: argparse.Namespace, urls: Any, stop: Any) -> None:
    """The fake fleets in a process of their own, until `stop` is set."""
    from bench._fleet_servers import GeneratorLatency, ScorerLatency, start_fleet_server

    gen = start_fleet_server("generator", args.generator_slots, GeneratorLatency(scale=args.time_scale))
    sc = start_fleet_server("scorer", args.scorer_slots, ScorerLatency(scale=args.time_scale))
    urls.send({"generator": gen.url, "scorer": sc.url})
    stop.wait()
    gen.stop()
    sc.stop()


def task_config(args: argparse.Namespace, pairs_path: Path, urls: Dict[str, str], task: int) -> Any:
    """Array task `task`'s config: the stage's search over the fleets, shard task/tasks."""
    from deepwriter.config.root import RootConfig
    from deepwriter.testing.synthesis import FIELDS, tiny_model_config

    cfg = RootConfig()
    cfg.paths.cache_dir = args.cache_dir
    cfg.data.pairs.path = str(pairs_path)
    cfg.data.pairs.fields = dict(FIELDS)
    for role in ("generator", "scorer"):
        model = tiny_model_config()  # its tokenizer counts the scorer's tokens; no weights are loaded
        model.backend = "openai"
        model.max_context = 32768
        model.endpoint.base_urls = [urls[role]]
        model.endpoint.model = f"fleet-{role}"
        model.endpoint.max_concurrency = args.max_in_flight * 2
        model.endpoint.timeout_s = 600.0
        setattr(cfg.models, role, model)
    cfg.models.scorer.endpoint.logprobs_api = "completions_echo"
    s = cfg.synthesis
    s.max_steps, s.max_in_flight, s.shards, s.shard = (
        args.max_steps,
        args.max_in_flight,
        args.tasks,
        f"{task}/{args.tasks}",
    )
    return cfg


def _run_task(args: argparse.Namespace, pairs_path: Path, urls: Dict[str, str], out: Path, task: int, results) -> None:
    """One array task, in a forked process: the stage over its shard; its figures to `results`."""
    from deepwriter.core.contract import StageContext
    from deepwriter.synthesis import stage, store
    from deepwriter.tracking.runs import Tracker

    t0 = time.time()
    result = stage.run(
        task_config(args, pairs_path, urls, task), StageContext("synthesize", out, {}, out, Tracker(None), "bench")
    )
    t1 = time.time()
    records = sum(1 for _ in open(store.shard_path(out, task, args.tasks), "rb"))
    results.put({"task": task, "start": t0, "end": t1, "records": records, "whole": result.part is None})


def run_array(args: argparse.Namespace, pairs_path: Path, urls: Dict[str, str], out: Path) -> List[Dict[str, Any]]:
    """Every task, at most `parallel` at a time, each started as soon as a slot frees; progress with rate
    and ETA."""
    fork = mp.get_context("fork")
    results = fork.Queue()
    waiting, running, done = list(range(args.tasks)), {}, []
    t_start = time.time()
    while waiting or running:
        while waiting and len(running) < args.parallel:
            task = waiting.pop(0)
            running[task] = fork.Process(target=_run_task, args=(args, pairs_path, urls, out, task, results))
            running[task].start()
        got = results.get(timeout=1800)
        done.append(got)
        running.pop(got["task"]).join()
        rate = len(done) / (time.time() - t_start)
        eta = (args.tasks - len(done)) / rate
        print(f"  {len(done)}/{args.tasks} tasks done, {rate * 60:.1f} tasks/min, ETA {eta:.0f} s", flush=True)
    for p in running.values():
        p.join()
    return done


def time_merge(shards: Path, repeats: int) -> Dict[str, float]:
    """The mix's read of every shard in `shards` (load_trajectories), `repeats` times."""
    from deepwriter.mix.build import load_trajectories

    seconds, kept, not_kept = [], 0, 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        records, _, not_kept = load_trajectories(shards, "z_final", strict=True)
        seconds.append(time.perf_counter() - t0)
        kept = len(records)
    files = sorted(shards.glob("*.jsonl"))
    return {
        "files": len(files),
        "bytes": sum(f.stat().st_size for f in files),
        "records_kept": kept,
        "records_not_kept": not_kept,
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
    }


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=64)
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--parallel", type=int, default=8, help="tasks running at a time (the array's %%N)")
    ap.add_argument("--max-steps", type=int, default=2, help="the search's steps per pair")
    ap.add_argument("--max-in-flight", type=int, default=4, help="pairs in flight in each task")
    ap.add_argument("--generator-slots", type=int, default=32)
    ap.add_argument("--scorer-slots", type=int, default=16)
    ap.add_argument("--time-scale", type=float, default=0.3, help="every modelled latency times this")
    ap.add_argument("--merge-repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="8 tasks, 32 pairs, 4 at a time: a smoke run")
    ap.add_argument("--cache-dir", default=os.environ.get("DEEPWRITER_CACHE", "~/.cache/deepwriter"))
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "synthesis_array.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.tasks, args.pairs, args.parallel = 8, 32, 4
    args.cache_dir = str(Path(args.cache_dir).expanduser())
    os.environ["TQDM_DISABLE"] = "1"  # 64 tasks' progress bars: the array's own line below instead (read on import)

    from bench._fleet_servers import make_pairs
    from deepwriter.llm import models
    from deepwriter.synthesis import stage, store  # noqa: F401  (imported once here, before the tasks fork)
    from deepwriter.testing.synthesis import tiny_model_config

    models.load_tokenizer(tiny_model_config(), args.cache_dir)  # the tiny model built once, before the forks
    work = Path(tempfile.mkdtemp(prefix="bench-array-"))
    pairs_path = work / "pairs.jsonl"
    with open(pairs_path, "w") as f:
        for pid, x, y, kind in make_pairs(args.pairs):
            f.write(json.dumps({"id": pid, "request": x, "answer": y, "category": kind}) + "\n")
    out = work / "synthesize"
    spawn = mp.get_context("spawn")
    mine, theirs = spawn.Pipe()
    stop = spawn.Event()
    fleets = spawn.Process(target=_serve_fleets, args=(args, theirs, stop), daemon=True)
    fleets.start()
    try:
        urls = mine.recv()
        print(
            f"synthesis array: {args.tasks} tasks (processes on this machine, {args.parallel} at a time), "
            f"{args.pairs} pairs, max_steps {args.max_steps}, {args.max_in_flight} pairs in flight a task; fleets "
            f"{args.generator_slots} generator / {args.scorer_slots} scorer slots, latencies x {args.time_scale:g}",
            flush=True,
        )
        tasks = run_array(args, pairs_path, urls, out)
    finally:
        stop.set()
        fleets.join(timeout=30)

    # checks: every pair once, the stage whole after the last task
    ids = [json.loads(line)["id"] for i in range(args.tasks) for line in open(store.shard_path(out, i, args.tasks))]
    lost, duplicated = args.pairs - len(set(ids)), len(ids) - len(set(ids))
    last = max(tasks, key=lambda t: t["end"])
    markers = sum(1 for i in range(args.tasks) if store.done_path(out, i, args.tasks).is_file())
    assert (lost, duplicated) == (0, 0), f"lost {lost}, duplicated {duplicated}"
    assert markers == args.tasks and last["whole"] and sum(t["whole"] for t in tasks) >= 1, (markers, last)

    wall = last["end"] - min(t["start"] for t in tasks)
    rates = [t["records"] / (t["end"] - t["start"]) for t in tasks]
    secs = [t["end"] - t["start"] for t in tasks]
    merge = time_merge(out / "shards", args.merge_repeats)
    one = work / "one" / "shards"  # the same records in a single file
    one.mkdir(parents=True)
    with open(one / "shard-00000-of-00001.jsonl", "wb") as f:
        for i in range(args.tasks):
            f.write(store.shard_path(out, i, args.tasks).read_bytes())
    merge_one = time_merge(one, args.merge_repeats)
    figures = {
        "tasks": args.tasks,
        "parallel": args.parallel,
        "pairs": args.pairs,
        "records": len(ids),
        "lost": lost,
        "duplicated": duplicated,
        "wall_s": wall,
        "records_per_s": len(ids) / wall,
        "task_records_per_s_mean": statistics.mean(rates),
        "task_records_per_s_sd": statistics.stdev(rates) if len(rates) > 1 else 0.0,
        "task_records_per_s_min": min(rates),
        "task_records_per_s_max": max(rates),
        "task_seconds_mean": statistics.mean(secs),
        "task_seconds_sd": statistics.stdev(secs) if len(secs) > 1 else 0.0,
        "task_records_min": min(t["records"] for t in tasks),
        "task_records_max": max(t["records"] for t in tasks),
        "merge": merge,
        "merge_one_file": merge_one,
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "command": "python -m bench.synthesis_array " + " ".join(argv if argv is not None else sys.argv[1:]),
        "cpus": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**figures, "per_task": sorted(tasks, key=lambda t: t["task"])}, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    print(
        f"records: {len(ids)} of {args.pairs} pairs, lost {lost}, duplicated {duplicated}; all {args.tasks} shards "
        f"done, the whole result written by task {last['task']} (the last to end)\n"
        f"overall: {figures['records_per_s']:.2f} records/s ({len(ids)} records in {wall:.1f} s, "
        f"{args.parallel} tasks at a time, {os.cpu_count()} CPUs shared)\n"
        f"per task: {figures['task_records_per_s_mean']:.2f} +/- {figures['task_records_per_s_sd']:.2f} records/s "
        f"(mean +/- sd over {args.tasks} tasks; {min(rates):.2f} .. {max(rates):.2f}); "
        f"{figures['task_seconds_mean']:.1f} +/- {figures['task_seconds_sd']:.1f} s a task, "
        f"{figures['task_records_min']}..{figures['task_records_max']} records each\n"
        f"merge for the mix: {merge['files']} shards, {merge['bytes'] / 1e6:.2f} MB, {merge['median_s'] * 1000:.1f} ms "
        f"(median of {args.merge_repeats}, {merge['min_s'] * 1000:.1f}..{merge['max_s'] * 1000:.1f}); the same "
        f"records in one file: {merge_one['median_s'] * 1000:.1f} ms ({merge_one['min_s'] * 1000:.1f}.."
        f"{merge_one['max_s'] * 1000:.1f}): the split costs x{merge['median_s'] / merge_one['median_s']:.2f}\n"
        f"results: {args.out}"
    )


if __name__ == "__main__":
    main()

"""The README's scale table: the `full` recipe's plan (deepwriter.plan, worst case from the config's
bounds) for 20K, 200K and 1M pairs on 1, 8 and 64 nodes of 8 GPUs (the mix: the pairs + 17K public
samples, 3 epochs, as the paper's 20K + 17K): synthesis and SFT wall-clock hours,
and the SLURM jobs and requeues each stage needs at the `full` scale's time limits (2,880 min a job;
deepwriter.cluster.time_limits). A projection, not a measurement: no GPU runs here.

Synthesis on N nodes is a job array of N tasks (`synthesis.shards=N`), each on one node with the plan's
fleet (`plan.hardware.count=8`) and its own replicas: the plan's hours over N, as the job graph shares
them out. SFT is one job over the N nodes (`sft.num_nodes=N`, `plan.hardware.count` = 8 x N).

    python -m bench.scale_table [--pairs 20000,200000,1000000] [--nodes 1,8,64]
"""

from __future__ import annotations

import argparse
import sys

from deepwriter.cluster.time_limits import job_times
from deepwriter.commands.plan import stage_wall_hours
from deepwriter.config.root import ConfigError
from deepwriter.testing.repo import compose_typed

STAGES = ["synthesize", "sft"]


def row(pairs: int, nodes: int) -> dict:
    common = [
        "+recipe=full",
        "launcher=slurm",
        f"plan.workload.pairs={pairs}",
        # the paper's mix grows with the pairs: every pair a synthetic sample, beside its 17K public ones
        "data.mix.total=null",
        f"data.mix.synthetic={pairs}",
        "data.mix.public=17000",
        "launcher.max_requeues=10000",  # the table shows what is needed; the graph refuses above the cap
    ]
    sft = compose_typed(*common, f"plan.hardware.count={8 * nodes}", f"sft.num_nodes={nodes}", "sft.num_processes=8")
    synth = compose_typed(*common, "plan.hardware.count=8", f"synthesis.shards={nodes}")
    hours = {
        "synthesize": stage_wall_hours(synth, ["synthesize"])["synthesize"] / nodes,  # a task's share
        "sft": stage_wall_hours(sft, ["sft"])["sft"],
    }
    times = {**job_times(synth, ["synthesize"], hours, {}), **job_times(sft, ["sft"], hours, {})}
    return {
        "pairs": pairs,
        "nodes": nodes,
        "synthesis_h": hours["synthesize"],
        "sft_h": hours["sft"],
        "jobs": {s: times[s].jobs_needed for s in STAGES},
        "requeues": {s: times[s].requeues for s in STAGES},
        "refused": times["synthesize"].requeues > 20 or times["sft"].requeues > 20,  # the default cap
    }


def main(argv: list) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default="20000,200000,1000000")
    ap.add_argument("--nodes", default="1,8,64")
    args = ap.parse_args(argv)
    print(
        "| pairs | nodes (x8 GPUs) | synthesis h | SFT h | jobs (synthesize array tasks x jobs each + sft) | "
        "requeues allowed (synthesize a task, sft) |"
    )
    print("|---:|---:|---:|---:|---:|---|")
    try:
        for pairs in (int(x) for x in args.pairs.split(",")):
            for nodes in (int(x) for x in args.nodes.split(",")):
                r = row(pairs, nodes)
                refused = " (over the default launcher.max_requeues=20: refused)" if r["refused"] else ""
                print(
                    f"| {pairs:,} | {nodes} | {r['synthesis_h']:,.1f} | {r['sft_h']:,.1f} | "
                    f"{nodes} x {r['jobs']['synthesize']} + {r['jobs']['sft']} | "
                    f"{r['requeues']['synthesize']}, {r['requeues']['sft']}{refused} |",
                    flush=True,
                )
    except ConfigError as exc:
        print(f"bench.scale_table: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Evaluation figures a researcher can trust, from a real demo-scale run, with one command: the
ablation table with 95% intervals and paired differences (`full` against `ablation-no-search` and
`ablation-no-synthetic`, the embedded model as judge), the judge's agreement with itself (judge
samples) and across the demo's judge panel (Krippendorff's α), and the runs judged head to head (win
rates with intervals, flip rate, Bradley–Terry, the panel's Cohen's κ); then report.html with all of it.

    python -m bench.eval_trust [--items 12] [--sft-steps 4] [--batch eval-trust] [--lock FILE --hold 690]

The eval reads the English LongBench-Write prompts from ../shared (the first --items), each judged
twice (eval.judge_samples=2). Every step caches (stages, judge replies): a re-run, or a run cut off
by --hold (seconds per step attempt, each under `flock --lock`, for a shared machine), resumes where
it stopped. On 2 shared cores the first run takes 30-60 min, most of it in SFT.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import List

SHARED = Path(__file__).resolve().parents[2] / "shared"
# no-search changes the training data only where the search accepted an edit, which at demo scale
# it may not (then both models, and their answers, are the same); no-synthetic always changes it
ABLATIONS = ["ablation-no-search", "ablation-no-synthetic"]


def step(cmd: List[str], lock: str, hold: int, attempts: int) -> None:
    """Run `cmd` until it succeeds: as is, or under `flock lock timeout hold` up to `attempts` times."""
    wrapped = ["flock", lock, "timeout", str(hold), *cmd] if lock else cmd
    for attempt in range(1, attempts + 1):
        print(f"\n>>> {' '.join(cmd)}" + (f"  (attempt {attempt}, {hold}s under {lock})" if lock else ""), flush=True)
        t0 = time.time()
        rc = subprocess.call(wrapped)
        print(f">>> exit {rc} after {time.time() - t0:.0f}s", flush=True)
        if rc == 0:
            return
        if not lock or rc != 124:  # only a step cut off by the hold is tried again
            break
    raise SystemExit(f"eval_trust: failed: {' '.join(cmd)}")


def answers(run_dir: str) -> dict:
    """Item id -> the model's answer, over the run's eval generations (every benchmark)."""
    got = {}
    for path in sorted((Path(run_dir) / "eval" / "items").glob("*.generations.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            got[(rec["bench"], rec["id"])] = rec["output"]
    return got


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=12, help="LongBench-Write English prompts judged")
    ap.add_argument("--sft-steps", type=int, default=4)
    ap.add_argument("--batch", default="eval-trust", help="run id shared by both runs")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--lock", default="", help="hold this flock for each step attempt (a shared machine)")
    ap.add_argument("--hold", type=int, default=690, help="seconds per step attempt under --lock")
    ap.add_argument("--attempts", type=int, default=6)
    ap.add_argument("--ablations", nargs="+", default=ABLATIONS, help="each compared with full")
    args = ap.parse_args(argv)
    py = sys.executable
    overrides = [
        f"eval.benchmarks.demo.path={SHARED / 'benchmarks' / 'longbench_write' / 'longbench_write_en.jsonl'}",
        f"eval.benchmarks.demo.limit={args.items}",
        "eval.judge_samples=2",
        f"sft.max_steps={args.sft_steps}",
        "sft.save_steps=2",  # a step attempt cut off by --hold loses at most two SFT steps
    ]
    runs = Path(args.runs_dir)
    out = runs / "ablations" / args.batch
    run_dirs = [str(runs / r / args.batch) for r in ("full", *args.ablations)]
    step([py, "-m", "deepwriter.ablations", "--scale", "demo", *args.ablations, "--batch", args.batch,
          "--runs-dir", args.runs_dir, "--", *overrides], args.lock, args.hold, args.attempts)  # fmt: skip
    step([py, "-m", "deepwriter.eval.pairwise", *run_dirs, "--out", str(out / "pairwise"), "--", "+recipe=demo"],
         args.lock, args.hold, args.attempts)  # fmt: skip
    step([py, "-m", "deepwriter.report", "--html", *run_dirs, "--pairwise", str(out / "pairwise"),
          "--out", str(out / "report.html")], "", 0, 1)  # fmt: skip

    print("\n=== ablation table (95% intervals; Δ: paired difference against full) ===")
    print((out / "ablations.md").read_text())
    full_answers = answers(run_dirs[0])
    for d in run_dirs[1:]:
        theirs = answers(d)
        same = sum(full_answers.get(k) == v for k, v in theirs.items())
        print(f"{Path(d).parent.name}: {same} of {len(theirs)} answers identical to full's")
    print("=== judge agreement ===")
    for d in run_dirs:
        s = json.loads((Path(d) / "eval" / "summary.json").read_text())
        for name, e in s["benchmarks"].items():
            own, panel = e.get("judge_agreement") or {}, e.get("panel_agreement") or {}
            print(
                f"{s['label']} {name}: judge samples α = {own.get('alpha')} over {own.get('items')} items; "
                f"panel {panel.get('judges')} α = {panel.get('alpha')} over {panel.get('items')} items, "
                f"most disagreed: {[(m['id'], m['spread']) for m in panel.get('most_disagreed', [])[:3]]}"
            )
    print("\n=== head to head ===")
    print((out / "pairwise" / "pairwise.md").read_text())
    print(f"report: {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

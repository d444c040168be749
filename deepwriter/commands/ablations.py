"""Run the paper's ablations and write the ablation table from those real runs.

    python -m deepwriter.ablations --scale demo [RECIPE ...] [-- HYDRA_OVERRIDES ...]

`full` (at the same scale) is always run first: it is the table's reference row and the ablations
reuse its finished stages (same content keys), so only what an ablation changes is computed again.
Writes runs/ablations/<batch>/ablations.md, .csv, .png and radar.png, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from deepwriter.commands.report import read_summary, write_report
from deepwriter.config.compose import compose
from deepwriter.config.root import CONF_DIR, split_overrides, to_typed
from deepwriter.eval import logged
from deepwriter.tracking.runs import stage_tracker

RECIPES_DIR = CONF_DIR / "recipe"


def all_ablations() -> List[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("ablation-*.yaml"))


def run_recipe(recipe: str, scale: str, batch: str, overrides: List[str]) -> Dict[str, object]:
    cmd = [
        sys.executable,
        "-m",
        "deepwriter.train",
        f"+recipe={recipe}",
        f"scale={scale}",
        f"run_id={batch}",
        *overrides,
    ]
    print(f"\n>>> {' '.join(cmd[1:])}", flush=True)
    t0 = time.time()
    rc = subprocess.call(cmd, env={**os.environ, "DEEPWRITER_RUN_ID": batch})
    return {"recipe": recipe, "returncode": rc, "seconds": round(time.time() - t0, 1)}


def log_to_wandb(scale: str, batch: str, overrides: List[str], out: Path) -> None:
    """The ablation table's paired differences (every ablation − full, with interval and permutation
    test: compare.json) as a W&B run of its own, job type `ablations`, grouped like the runs."""

    cfg = to_typed(compose(["+recipe=full", f"scale={scale}", f"run_id={batch}", *overrides]))
    figures = json.loads((out / "compare.json").read_text())
    paired = {label: f["paired_vs_first"] for label, f in figures.items() if f.get("paired_vs_first")}
    with stage_tracker(cfg, "ablations", out) as tracker:
        tracker.summary(logged.paired_summary(paired, next(iter(figures), "full")))


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv, overrides = split_overrides(argv)
    ap = argparse.ArgumentParser(prog="python -m deepwriter.ablations", description=__doc__.splitlines()[0])
    ap.add_argument("recipes", nargs="*", help="ablation recipes (default: every recipes/ablation-*.yaml)")
    ap.add_argument("--scale", default="demo", choices=["demo", "full"])
    ap.add_argument("--batch", default=time.strftime("ablations-%Y%m%d-%H%M%S"), help="run id shared by the runs")
    ap.add_argument("--runs-dir", default="runs", help="must match paths.runs_dir")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.recipes) - set(all_ablations()))
    if unknown:
        print(f"ablations: unknown recipe(s) {unknown}; expected some of {all_ablations()}", file=sys.stderr)
        return 2
    recipes = ["full"] + (args.recipes or all_ablations())
    t0 = time.time()
    results = [run_recipe(r, args.scale, args.batch, overrides) for r in recipes]
    failed = [r["recipe"] for r in results if r["returncode"] != 0]

    runs = {}
    for r in results:
        run_dir = Path(args.runs_dir) / str(r["recipe"]) / args.batch
        try:
            runs[str(r["recipe"])] = read_summary(run_dir)  # with its items' folder: paired differences
        except FileNotFoundError as exc:
            print(f"ablations: {exc}", file=sys.stderr)
    out = Path(args.runs_dir) / "ablations" / args.batch
    if runs:
        text = write_report(runs, out)
        (out / "timings.json").write_text(
            json.dumps({"wall_seconds": round(time.time() - t0, 1), "runs": results}, indent=2)
        )
        log_to_wandb(args.scale, args.batch, overrides, out)
        for name in ("compare.md", "compare.csv", "compare.png"):
            if (out / name).exists():
                (out / name).rename(out / name.replace("compare", "ablations"))
        print(
            f"\n{text}\n\nablation table: {out / 'ablations.md'} (+ .csv, .png, radar.png); "
            f"wall time {time.time() - t0:.0f}s"
        )
    if failed:
        print(f"ablations: these runs failed: {failed}", file=sys.stderr)
        return 1
    return 0

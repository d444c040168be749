"""The short report printed at the end of a run: what each stage did and where its outputs are."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from deepwriter.core.contract import read_manifest


def _headline(stage: str, manifest: Dict[str, Any]) -> str:
    counts = manifest.get("counts", {})
    metrics = manifest.get("metrics", {})
    shown = {
        **{k: v for k, v in counts.items() if isinstance(v, (int, float))},
        **{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
    }
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(shown.items())[:8]]
    return ", ".join(parts)


def print_summary(run_manifest: Dict[str, Any]) -> None:
    run_dir = Path(run_manifest["run_dir"])
    print(f"\n== deepwriter: recipe {run_manifest['recipe']}, run {run_manifest['run_id']} ==")
    for stage, entry in run_manifest["stages"].items():
        folder = run_dir / stage
        m = read_manifest(folder) or {}
        took = f"{entry['seconds']:.1f}s" if "seconds" in entry else "cached"
        print(f"  {stage:<10} {entry['status']:<7} {took:>8}  {_headline(stage, m)}")
        left = m.get("unfinished")
        if left:  # finished within max_unfinished_share: say which items a later run can still do
            shown = ", ".join(left["ids"][:5]) + (", …" if left["count"] > 5 else "")
            print(
                f"  {'':<10} unfinished: {left['count']} of {left['total']} ({shown}); last error: "
                f"{left['last_error'][:200]}; a run with a lower max_unfinished_share does them"
            )
        fleet = m.get("metrics", {}).get("fleet")
        if fleet:  # synthesis: how busy this run kept the generator and scorer fleets
            print(
                f"  {'':<10} fleet: {fleet['pairs_per_min']:.1f} pairs/min; generator busy "
                f"{fleet['generator_busy_share']:.0%} ({fleet['generator_mean_in_flight']:.1f} calls in flight), "
                f"scorer busy {fleet['scorer_busy_share']:.0%} ({fleet['scorer_mean_in_flight']:.1f} in flight)"
            )
        served = entry.get("serving")
        if served:  # the run's managed servers during this stage
            print(
                f"  {'':<10} servers: {served['restarts']} restart(s) after {served['deaths']} death(s), "
                f"down {served['down_s']:.1f}s"
                + (f"; the stage ran {served['stage_attempts']} times" if served.get("stage_attempts") else "")
            )
        for name, rel in m.get("artifacts", {}).items():
            print(f"  {'':<10} {name}: {folder / rel}")
    for group, st in (run_manifest.get("serving") or {}).get("groups", {}).items():
        starts = ", ".join(f"{x:.0f}s" for x in st["startup_s"])
        print(
            f"  server {group}: {st['replicas']} replica(s), started in {starts}; "
            f"{st['restarts']} restart(s), down {st['down_s']:.1f}s"
        )
    print(f"  run folder: {run_dir}  (config.json, manifest.json, one folder per stage)\n")

"""Each SLURM job's requeue allowance, computed from the plan's projected hours of its stage and the
job's time limit (launcher.jobs.<stage>.time_min, at most the partition's, read with `sinfo`), not a
guessed constant. A job that reaches its time limit saves, requeues itself (deepwriter.cluster.launcher)
and resumes; it may do so `requeues` times. The graph refuses with one line a job that cannot finish:
a time limit above the partition's, or more requeues than launcher.max_requeues allows.

The projection (deepwriter.commands.plan.stage_wall_hours) is a worst case from the config's bounds on the plan's fleet;
MARGIN covers what it leaves out (start-ups, the restart after each requeue, a slower node).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Dict, List, Optional

from deepwriter.cluster.jobs import run_tool
from deepwriter.cluster.requests import job_request
from deepwriter.config.root import ConfigError, RootConfig

MARGIN = 0.25  # the projected hours are asked for with a quarter more


@dataclass(frozen=True)
class JobTime:
    stage: str
    projected_h: float  # the plan's wall-clock hours of the stage (0: the plan has no figure for it)
    time_min: int  # the job's time limit
    requeues: int  # how often the job may requeue itself at its time limit (submitit's max_num_timeout)

    @property
    def jobs_needed(self) -> int:
        """Jobs of time_min that the projected hours (with MARGIN) take, one at least."""
        return max(1, math.ceil(self.projected_h * 60 * (1 + MARGIN) / self.time_min))

    def text(self) -> str:
        hours = f"{self.projected_h:,.1f} h" if self.projected_h >= 0.05 else "<0.1 h"
        return (
            f"projected {hours} (+{MARGIN:.0%}): {self.jobs_needed} job(s) of {self.time_min} min, "
            f"{self.requeues} requeue(s) allowed"
        )


def parse_slurm_minutes(text: str) -> Optional[int]:
    """A SLURM time limit (`sinfo %l`: `infinite`, `D-HH:MM:SS`, `HH:MM:SS`, `MM:SS`, `MM`) in minutes;
    None for no limit."""
    text = text.strip()
    if text in ("infinite", "UNLIMITED", "n/a", ""):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(x) for x in text.split(":")]
    if len(parts) == 1:
        h, m, s = 0, parts[0], 0
    elif len(parts) == 2:
        h, m, s = 0, parts[0], parts[1]
    else:
        h, m, s = parts[-3:]
    return days * 1440 + h * 60 + m + (1 if s else 0)


def partition_limits() -> Dict[str, Optional[int]]:
    """Each partition's time limit in minutes (None: none), and the default partition's under "" ; empty
    where sinfo is missing or fails (a plan on a laptop)."""
    try:
        done = run_tool(["sinfo", "-h", "-o", "%P %l"])
    except OSError:
        return {}
    if done.returncode != 0:
        return {}
    limits: Dict[str, Optional[int]] = {}
    for line in done.stdout.splitlines():
        if not re.match(r"^\S+\s+\S+$", line.strip()):
            continue
        name, limit = line.split()
        minutes = parse_slurm_minutes(limit)
        if name.endswith("*"):
            name = name.rstrip("*")
            limits[""] = minutes
        limits[name] = minutes
    return limits


def job_times(
    cfg: RootConfig, stages: List[str], hours: Dict[str, float], limits: Dict[str, Optional[int]]
) -> Dict[str, JobTime]:
    """Each stage job's time limit and requeue allowance; refuses a graph that cannot finish."""

    out = {}
    for stage in stages:
        req = job_request(cfg, stage)
        time_min = req["time"]
        partition = req.get("partition") or ""
        limit = limits.get(partition)
        if limit is not None and time_min > limit:
            where = f"partition {partition!r}" if partition else "the default partition"
            raise ConfigError(
                f"launcher.jobs.{stage}.time_min: {time_min} min is above the time limit of {where} ({limit} min, "
                f"sinfo); ask for at most {limit} (a longer stage requeues itself)"
            )
        projected = hours.get(stage, 0.0)
        # at least one: the projection is a model, and a job that runs out of time once should not fail
        requeues = max(1, JobTime(stage, projected, time_min, 0).jobs_needed - 1)
        if requeues > cfg.launcher.max_requeues:
            room = f" (the partition allows up to {limit} min)" if limit else ""
            raise ConfigError(
                f"launcher.jobs.{stage}.time_min: the {stage} job cannot finish: the plan projects {projected:,.1f} h "
                f"(+{MARGIN:.0%}), {requeues + 1} jobs of {time_min} min, more than launcher.max_requeues="
                f"{cfg.launcher.max_requeues} requeues allow; raise time_min{room} or launcher.max_requeues"
            )
        out[stage] = JobTime(stage, projected, time_min, requeues)
    return out

"""Where a run's stages execute (root key `launcher`): in this process (`local`), or as SLURM jobs
submitted from a login node (`slurm`, deepwriter.cluster.launcher), one job per stage, chained by
dependencies. Nothing here changes what a stage produces: the whole group is operational."""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from typing import Dict, Optional

from deepwriter.core.contract import STAGE_ORDER
from deepwriter.core.schema import bounded, one_of


@dataclass
class SlurmJobConfig:
    """What one stage's job asks the scheduler for. Unset fields fall back to the launcher's own
    (partition, account, qos) or are left to the cluster's defaults."""

    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    time_min: int = bounded(60, ge=1, le=30 * 24 * 60)  # the job's time limit, minutes (30 days at most)
    # nodes and tasks of the sft job come from sft.num_nodes and sft.num_processes (one task per rank)
    nodes: int = bounded(1, ge=1, le=4096)
    cpus_per_task: int = bounded(1, ge=1, le=1024)
    gpus_per_node: int = bounded(0, ge=0, le=64)
    mem_gb: Optional[float] = bounded(None, gt=0.0, le=65_536.0)
    constraint: Optional[str] = None
    # further sbatch options as they are (`exclusive: true`, `reservation: NAME`), without the dashes
    additional: Dict[str, str] = field(default_factory=dict)


# One job config per stage, named as the stage (drawn from STAGE_ORDER, so a stage added there has its
# job keys here), and `server`: each managed server replica's own job (serving.placement: slurm); its
# GPUs are the replica's (models.*.serving.gpus_per_replica, else tensor_parallel) where the partition
# has GPUs, so gpus_per_node and nodes are not read there.
SlurmJobsConfig = make_dataclass(
    "SlurmJobsConfig",
    [(name, SlurmJobConfig, field(default_factory=SlurmJobConfig)) for name in (*STAGE_ORDER, "server")],
)
SlurmJobsConfig.__module__ = __name__  # where the schema is registered from, as a class written here would be


# The launchers, kind -> whether its stages run as scheduler jobs that the command submits (and may
# wait for) instead of running them itself: `local` runs them in this process, `slurm` submits one job
# per stage (deepwriter.cluster.launcher). The choices of launcher.kind are its keys; callers ask
# LauncherConfig.submits_jobs, never the kind.
LAUNCHERS: Dict[str, bool] = {"local": False, "slurm": True}


@dataclass
class LauncherConfig:
    kind: str = one_of("local", *LAUNCHERS)
    # slurm: block until the last job ends and exit with the run's result (0 done, 3 unfinished, 1 failed)
    wait: bool = False
    poll_s: float = bounded(10.0, gt=0.0, le=3600.0)  # how often a waiting submitter asks the scheduler
    # the defaults of every job (a job's own value wins)
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    job_name: str = "deepwriter"  # each job is named <job_name>-<recipe>-<stage>
    # the most times one stage job may requeue itself at its time limit; each job's allowance is computed
    # from the plan's projected hours (deepwriter.cluster.time_limits), and a job needing more is refused
    max_requeues: int = bounded(20, ge=0, le=10_000)
    jobs: SlurmJobsConfig = field(default_factory=SlurmJobsConfig)

    @property
    def submits_jobs(self) -> bool:
        """The stages are scheduler jobs submitted from here (launcher=slurm), not run in this process."""
        return LAUNCHERS[self.kind]

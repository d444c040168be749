"""What each SLURM job of a run asks the scheduler for: a stage's job (launcher.jobs.<stage>) and a managed
server replica's own job (launcher.jobs.server, serving.placement: slurm). Read by the submitter
(deepwriter.cluster.launcher) and by the runner inside a stage job, whose fleet submits the replicas."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from deepwriter.cluster.jobs import SlurmSpawner, partition_has_gpus
from deepwriter.config.llm import ServingConfig
from deepwriter.config.root import ConfigError, RootConfig
from deepwriter.serving.placement import Group, gpus_per_replica


def job_request(cfg: RootConfig, stage: str) -> Dict[str, Any]:
    """The sbatch options of one stage's job, named as submitit's SlurmExecutor takes them."""
    launcher = cfg.launcher
    job = getattr(launcher.jobs, stage)
    nodes, tasks = job.nodes, 1
    if stage == "sft":  # one task per rank: the existing rank logic (WORLD_SIZE from SLURM)
        nodes, tasks = cfg.sft.num_nodes, cfg.sft.num_processes
    req: Dict[str, Any] = {
        "job_name": f"{launcher.job_name}-{cfg.recipe.name}-{stage}",
        "time": job.time_min,
        "nodes": nodes,
        "ntasks_per_node": tasks,
        "cpus_per_task": job.cpus_per_task,
    }
    for key in ("partition", "account", "qos"):
        value = getattr(job, key) or getattr(launcher, key)
        if value:
            req[key] = value
    if job.gpus_per_node:
        req["gpus_per_node"] = job.gpus_per_node
    if job.mem_gb:
        req["mem"] = f"{int(job.mem_gb * 1024)}M"
    elif stage == "sft":  # every GPU of its nodes: all their memory too (--mem=0), not the partition's default
        req["mem"] = "0"
    if job.constraint:
        req["constraint"] = job.constraint
    return req


def serves_as_jobs(cfg: RootConfig, in_stage_job: bool) -> bool:
    """Whether the run's managed replicas are SLURM jobs of their own (serving.placement; auto: inside a
    stage job of launcher=slurm, or, at submission, when the launcher is slurm)."""
    placement = cfg.serving.placement
    if placement == "auto":
        return in_stage_job or cfg.launcher.submits_jobs
    return placement == "slurm"


def server_request(cfg: RootConfig, group: str, serving: ServingConfig, ask_cluster: bool = True) -> Dict[str, Any]:
    """The sbatch options of one replica's job of a managed group: launcher.jobs.server's partition,
    CPUs, memory and time; the replica's GPUs (gpus_per_replica, else tensor_parallel) where the
    partition's nodes have GPUs. A replica of tensor_parallel 1 on a partition without GPUs runs on the
    CPU (vLLM's CPU build), as on a node without GPUs; more refuses with one line. Without
    `ask_cluster` (the plan) the partition is taken to have GPUs."""
    req = job_request(cfg, "server")
    req["job_name"] = f"{cfg.launcher.job_name}-{cfg.recipe.name}-serve-{group}".replace("/", "_")
    req.pop("gpus_per_node", None)
    gpus = gpus_per_replica(serving)
    if not ask_cluster or partition_has_gpus(req.get("partition")):
        req["gpus_per_node"] = gpus
    elif serving.tensor_parallel > 1:
        where = f"partition {req['partition']!r}" if req.get("partition") else "the default partition"
        raise ConfigError(
            f"{key_of(cfg, 'server', 'partition')}: {group} needs {gpus} GPUs a replica (tensor_parallel "
            f"{serving.tensor_parallel}) and the nodes of {where} have none"
        )
    return req


def server_flags(cfg: RootConfig, group: str, serving: ServingConfig) -> List[str]:
    return sbatch_flags(server_request(cfg, group, serving), dict(cfg.launcher.jobs.server.additional))


def replica_spawner(cfg: RootConfig, groups: Dict[str, Group], servers_dir: Path) -> SlurmSpawner:
    """The fleet's spawner when each replica of these groups is a SLURM job of its own, asking for
    launcher.jobs.server's resources (server_request, its `additional` sbatch options as submitit takes them)."""
    additional = dict(cfg.launcher.jobs.server.additional)
    requests = {
        g.name: {**server_request(cfg, g.name, g.serving), "additional_parameters": additional} for g in groups.values()
    }
    return SlurmSpawner(lambda rep: requests[rep.group], servers_dir)


def sbatch_flags(req: Dict[str, Any], additional: Dict[str, Any]) -> List[str]:
    out = []
    for k, v in {**req, **additional}.items():
        flag = "--" + k.replace("_", "-")
        out.append(flag if v is True else f"{flag}={v}")
    return out


def key_of(cfg: RootConfig, stage: str, what: str) -> str:
    """The config key that set a job's partition/account/qos (its own, else the launcher's)."""
    own = getattr(getattr(cfg.launcher.jobs, stage), what)
    return f"launcher.jobs.{stage}.{what}" if own else f"launcher.{what}"

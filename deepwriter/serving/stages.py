"""The run's managed servers around its stages: where they go (serving_layout), up before the first stage
that calls a group's roles and down after the last (RunServing), and the handle a stage that brings its
own servers up and down gets as ctx.serving (StageServing).

The runner hands in each stage's roles (stage name -> the model roles it calls, in run order), so this
floor never reads the stage list; under serving.placement=slurm it also hands in the spawner that makes
each replica a SLURM job of its own (deepwriter.cluster.requests.replica_spawner, the floor above)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from deepwriter.config.root import ConfigError, RootConfig
from deepwriter.core.contract import StageContext, StageSpec
from deepwriter.serving.fleet import Fleet, Spawner, new_key, served_name_for, server_command_for
from deepwriter.serving.placement import Layout, run_layout

ROLES = ("generator", "scorer", "student", "judge")
# The environment variable that holds the run's key to its own servers: the served roles' endpoints name it
# (endpoint.api_key_env), so the key itself is in no config, record or log.
SERVING_KEY_ENV = "DEEPWRITER_SERVING_KEY"


def serving_layout(
    cfg: RootConfig, gpus: List[int], roles_of: Dict[str, List[str]], as_jobs: bool = False, managed: bool = True
) -> Layout:
    """Where the run's managed servers go on a node with these GPUs (deepwriter.serving.placement.place);
    `roles_of`: the run's stages in order, each with the roles it calls; `as_jobs`: each replica is a
    SLURM job of its own; not `managed`: none (a rank other than 0 of a launch starts no server)."""
    models = {r: getattr(cfg.models, r) for r in ROLES}
    renamed = {}
    if cfg.eval.model_under_test == "sft":  # eval serves the sft output's weights, not the student preset's
        renamed[("eval", "student")] = f"{cfg.models.student.name}+sft"
    return run_layout(models, list(roles_of), roles_of, cfg.serving.managed and managed, gpus, renamed, as_jobs)


class StageServing:
    """ctx.serving of a stage that brings its servers up and down itself."""

    def __init__(self, fleet: Any, by_role: Dict[str, str]):
        self.fleet, self.by_role = fleet, by_role

    def up(self, role: str) -> None:
        if role in self.by_role:
            self.fleet.up(self.by_role[role])

    def down(self, role: str) -> None:
        if role in self.by_role:
            self.fleet.down(self.by_role[role])


class RunServing:
    """The run's managed servers around its stages: up before the first stage that calls a group's roles,
    down after the last; a stage whose servers died and came back within their budget runs again and
    resumes from what it wrote."""

    def __init__(self, cfg: RootConfig, servers_dir: Path, layout: Layout, job_spawner: Optional[Spawner] = None):
        """`servers_dir`: the replicas' logs and addresses (`<run>/servers`); `job_spawner`: each replica is
        a SLURM job of its own, started by it (deepwriter.cluster)."""
        self.as_jobs = job_spawner is not None
        self.layout = layout
        self.stages = self.layout.stages
        self.models: Dict[str, Any] = {}  # group -> the model config its replicas serve
        self.fleet = None
        if self.layout.groups:
            # a key per run (per stage job under SLURM): its servers take it and no other server knows it
            key = os.environ[SERVING_KEY_ENV] = new_key()
            if (
                not any(g.serving.command for g in self.layout.groups.values())
                and not Path(cfg.serving.python).is_file()
            ):
                raise ConfigError(
                    f"serving.python: {cfg.serving.python} does not exist; `make serve-install` creates vLLM's "
                    "environment (or serving.managed=false to use servers of your own)"
                )
            if not self.as_jobs:
                command = server_command_for(self.models, cfg.serving.python, cfg.serving.host, cfg.paths.cache_dir)
                ours = served_name_for(self.models)
                self.fleet = Fleet(self.layout, command, servers_dir, cfg.serving.host, served_name_of=ours, key=key)
            else:  # each replica a job on some node: it listens on every interface, its address in the run folder
                command = server_command_for(self.models, cfg.serving.python, "0.0.0.0", cfg.paths.cache_dir)
                self.fleet = Fleet(
                    self.layout,
                    command,
                    servers_dir,
                    host=cfg.serving.host,
                    spawner=job_spawner,
                    served_name_of=served_name_for(self.models),
                    key=key,
                )

    def groups_at(self, stage: str) -> List[Any]:
        i = self.stages.index(stage)
        return [g for g in self.layout.groups.values() if g.first <= i <= g.last]

    def before(self, cfg: RootConfig, stage: str, spec: StageSpec, ctx: StageContext) -> RootConfig:
        """Bring up the stage's groups; the config the stage runs with: each served role's base_urls
        are its group's replicas."""
        if self.fleet is None:
            return cfg
        urls: Dict[str, List[str]] = {}
        by_role: Dict[str, str] = {}
        for g in self.groups_at(stage):
            role = g.roles[0]
            model = spec.model_for(cfg, ctx, role) if spec.model_for and role in spec.roles(cfg) else None
            self.models.setdefault(g.name, model or getattr(cfg.models, role))
            # the stage brings it up when it calls it (ctx.serving), to share this node's GPUs; a replica
            # that is a job of its own shares nothing, and its address is known only once it runs: up now
            if spec.serves_itself and not self.as_jobs:
                got = [self.fleet.url(r) for r in self.layout.replicas[g.name]]
            else:
                got = self.fleet.up(g.name)
            for r in g.roles:
                urls[r], by_role[r] = got, g.name
        if spec.serves_itself and by_role and not self.as_jobs:
            ctx.serving = StageServing(self.fleet, by_role)
        if not urls:
            return cfg
        models = dataclasses.replace(
            cfg.models,
            **{
                r: dataclasses.replace(
                    getattr(cfg.models, r),
                    endpoint=dataclasses.replace(
                        getattr(cfg.models, r).endpoint, base_urls=list(u), api_key_env=SERVING_KEY_ENV
                    ),
                )
                for r, u in urls.items()
            },
        )
        return dataclasses.replace(cfg, models=models)

    def after(self, stage: str) -> None:
        """Stop the groups no later stage calls (SFT gets the GPUs)."""
        if self.fleet is None:
            return
        i = self.stages.index(stage)
        for g in self.layout.groups.values():
            if g.last <= i and g.name in self.fleet.running:
                self.fleet.down(g.name)

    def deaths(self) -> int:
        return self.fleet.deaths() if self.fleet else 0

    def healed_since(self, deaths_before: int) -> bool:
        """A server of this stage died since `deaths_before` and the fleet is whole again."""
        if self.fleet is None:
            return False
        self.fleet.check()
        return self.fleet.deaths() > deaths_before and self.fleet.heal()

    def summary(self) -> Dict[str, Any]:
        if self.fleet is None:
            return {}
        return {"groups": self.fleet.summary(), "layout": self.layout.text()}

    def close(self) -> None:
        if self.fleet is not None:
            self.fleet.close()

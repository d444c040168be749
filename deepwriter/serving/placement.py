"""Where a run's managed servers go: one pure function from the fleet and the visible GPUs to disjoint
device sets per replica, with the GPUs of in-process models (the transformers scorer) kept out of them.

A group is one preset that some roles name (roles naming the same preset share its replicas); it lives
from the first stage that calls one of its roles to the last. The stages are walked in order: a group
that ends gives its GPUs back, a stage's in-process models take theirs first, then the groups that
start there take the lowest free GPUs. A node with too few GPUs is refused with one line, before any
work. On a node without GPUs replicas of tensor_parallel 1 run on the CPU (vLLM's CPU build), one
after another where `sequential` says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from deepwriter.config.llm import Backend, ModelConfig, ServingConfig
from deepwriter.core.errors import ConfigError


@dataclass(frozen=True)
class Group:
    """One managed preset: the roles that name it and the stages (indices of the run's stage list) in
    which it must be up."""

    name: str
    roles: Tuple[str, ...]
    serving: ServingConfig
    first: int
    last: int


@dataclass(frozen=True)
class Replica:
    group: str
    index: int
    port: int
    devices: Tuple[int, ...]  # GPU indices; empty: the CPU

    @property
    def cuda_visible_devices(self) -> str:
        return ",".join(str(d) for d in self.devices)


@dataclass
class Layout:
    stages: List[str]
    gpus: List[int]
    replicas: Dict[str, List[Replica]] = field(default_factory=dict)
    groups: Dict[str, Group] = field(default_factory=dict)
    # stage -> role -> the GPU its in-process model runs on (None: the CPU)
    inprocess: Dict[str, Dict[str, Optional[int]]] = field(default_factory=dict)
    # the replicas are SLURM jobs of their own (serving.placement: slurm): their GPUs are the job's
    as_jobs: bool = False

    def text(self) -> str:
        node = f"{len(self.gpus)} GPUs {list(self.gpus)}" if self.gpus else "no GPU (CPU)"
        lines = [f"serving layout on {node}:"]
        if not self.groups:
            lines.append("  no managed server (endpoints are used as configured)")
        for name, g in self.groups.items():
            span = self.stages[g.first] if g.first == g.last else f"{self.stages[g.first]}..{self.stages[g.last]}"
            s = g.serving
            lines.append(
                f"  {name} ({', '.join(g.roles)}): {s.replicas} replica(s) x TP {s.tensor_parallel}, up during {span}"
            )
            for r in self.replicas[name]:
                where = f"CUDA_VISIBLE_DEVICES={r.cuda_visible_devices}" if r.devices else "CPU"
                where = "a SLURM job of its own, on the node and GPUs it is given" if self.as_jobs else where
                lines.append(f"    replica {r.index}: port {r.port}, {where}")
        for stage, roles in self.inprocess.items():
            for role, dev in roles.items():
                lines.append(f"  {stage}: in-process {role} on {'cuda:' + str(dev) if dev is not None else 'CPU'}")
        return "\n".join(lines)


def gpus_per_replica(s: ServingConfig) -> int:
    """The GPUs one replica holds: gpus_per_replica, else its tensor_parallel (the one place this rule is written)."""
    return s.gpus_per_replica if s.gpus_per_replica is not None else s.tensor_parallel


def place(
    stages: Sequence[str],
    groups: Sequence[Group],
    inprocess: Dict[str, List[str]],
    gpus: Sequence[int],
    as_jobs: bool = False,
) -> Layout:
    """Disjoint device sets per replica. `inprocess`: per stage, the roles it runs in this process that
    want a GPU while the stage runs. Raises ConfigError (one line) when the node has too few GPUs.
    `as_jobs`: each replica is a SLURM job of its own, with no device of this node (only the in-process
    models are placed here)."""
    layout = Layout(stages=list(stages), gpus=list(gpus), groups={g.name: g for g in groups}, as_jobs=as_jobs)
    for a in groups:  # groups up at the same time need ports of their own
        for b in groups:
            if a.name < b.name and a.first <= b.last and b.first <= a.last:
                pa = set(range(a.serving.base_port, a.serving.base_port + a.serving.replicas))
                pb = set(range(b.serving.base_port, b.serving.base_port + b.serving.replicas))
                if pa & pb:
                    raise ConfigError(
                        f"models.{b.roles[0]}.serving.base_port: port {min(pa & pb)} is also {a.name}'s, which is "
                        "up at the same time; give the presets base ports that do not overlap"
                    )
    if as_jobs:
        layout.inprocess = place(stages, [], inprocess, gpus).inprocess
        for g in groups:
            layout.replicas[g.name] = [
                Replica(g.name, i, g.serving.base_port + i, ()) for i in range(g.serving.replicas)
            ]
        return layout
    if not gpus:
        for g in groups:
            if g.serving.tensor_parallel > 1:
                raise ConfigError(
                    f"models.{g.roles[0]}.serving: {g.name} needs {g.serving.replicas * gpus_per_replica(g.serving)} "
                    f"GPUs (tensor_parallel {g.serving.tensor_parallel}) and this node has none"
                )
            layout.replicas[g.name] = [
                Replica(g.name, i, g.serving.base_port + i, ()) for i in range(g.serving.replicas)
            ]
        layout.inprocess = {st: {role: None for role in roles} for st, roles in inprocess.items() if roles}
        return layout

    free: List[int] = list(gpus)
    held: Dict[str, List[int]] = {}
    for i, stage in enumerate(stages):
        for g in groups:  # groups that ended give their GPUs back
            if g.last < i and g.name in held:
                free = sorted(free + held.pop(g.name))
        taken: List[int] = []
        for role in inprocess.get(stage, []):
            if not free:
                raise ConfigError(_too_few(stage, groups, inprocess, gpus, i))
            dev = free.pop(0)
            taken.append(dev)
            layout.inprocess.setdefault(stage, {})[role] = dev
        for g in groups:
            if g.first != i:
                continue
            per = gpus_per_replica(g.serving)
            if per * g.serving.replicas > len(free):
                raise ConfigError(_too_few(stage, groups, inprocess, gpus, i))
            reps = []
            for r in range(g.serving.replicas):
                devs, free = free[:per], free[per:]
                reps.append(Replica(g.name, r, g.serving.base_port + r, tuple(devs)))
            layout.replicas[g.name] = reps
            held[g.name] = [d for rep in reps for d in rep.devices]
        free = sorted(free + taken)  # an in-process model holds its GPU only during its stage
    return layout


def _too_few(stage: str, groups: Sequence[Group], inprocess: Dict[str, List[str]], gpus: Sequence[int], i: int) -> str:
    parts = [
        f"{g.name} {g.serving.replicas}x{gpus_per_replica(g.serving)}" for g in groups if g.first <= i <= g.last
    ] + [f"in-process {r} 1" for r in inprocess.get(stage, [])]
    need = sum(g.serving.replicas * gpus_per_replica(g.serving) for g in groups if g.first <= i <= g.last)
    need += len(inprocess.get(stage, []))
    return (
        f"serving: stage {stage} needs {need} GPUs ({' + '.join(parts)}) and this node has {len(gpus)}; "
        "lower models.*.serving.replicas or tensor_parallel, or serving.managed=false to use servers of your own"
    )


# --- from a run's config -------------------------------------------------------------------------------


def group_name(cfg: ModelConfig) -> str:
    return cfg.name


def managed_groups(
    models: Dict[str, ModelConfig],
    stages: Sequence[str],
    roles_of: Dict[str, List[str]],
    run_managed: bool = True,
    renamed: Optional[Dict[Tuple[str, str], str]] = None,
) -> List[Group]:
    """The managed presets of a run: `models` by role, `roles_of` the roles each stage calls. `renamed`:
    (stage, role) -> group name, for a role whose stage serves other weights than its preset's
    (eval's model under test is the sft output)."""
    if not run_managed:
        return []
    found: Dict[str, dict] = {}
    current: Dict[str, str] = {}  # preset -> the name of its group in the stages so far
    for i, stage in enumerate(stages):
        for role in roles_of.get(stage, []):
            m = models[role]
            if m.backend != Backend.openai or not m.serving.managed:
                continue
            base = (renamed or {}).get((stage, role)) or group_name(m)
            name = current.get(base, base)
            if name in found and found[name]["last"] < i - 1:
                # a stage in between calls none of its roles (SFT): it goes down, and up again here
                n = sum(1 for k in found if k == base or k.startswith(base + "#")) + 1
                name = current[base] = f"{base}#{n}"
            current.setdefault(base, name)
            g = found.setdefault(name, {"roles": [], "serving": m.serving, "first": i, "last": i})
            if g["serving"] != m.serving:
                raise ConfigError(
                    f"models.{role}.serving: differs from models.{g['roles'][0]}.serving, and both name {name}; "
                    "roles that name the same preset share its replicas"
                )
            if role not in g["roles"]:
                g["roles"].append(role)
            g["last"] = i
    return [Group(n, tuple(g["roles"]), g["serving"], g["first"], g["last"]) for n, g in found.items()]


def inprocess_gpu_roles(
    models: Dict[str, ModelConfig], stages: Sequence[str], roles_of: Dict[str, List[str]]
) -> Dict[str, List[str]]:
    """Per stage, the roles it runs in this process (transformers backend): each holds a GPU."""
    return {st: [r for r in roles_of.get(st, []) if models[r].backend == Backend.transformers] for st in stages}


def visible_gpus(configured: Optional[Sequence[int]] = None) -> List[int]:
    """The GPUs the fleet may use: the configured list, else CUDA_VISIBLE_DEVICES, else nvidia-smi's."""
    if configured is not None:
        return list(configured)
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [int(x) for x in env.split(",") if x.strip() != "" and x.strip().lstrip("-").isdigit() and int(x) >= 0]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return [i for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def run_layout(
    models: Dict[str, ModelConfig],
    stages: Sequence[str],
    roles_of: Dict[str, List[str]],
    run_managed: bool,
    gpus: Sequence[int],
    renamed: Optional[Dict[Tuple[str, str], str]] = None,
    as_jobs: bool = False,
) -> Layout:
    """The layout of a run (no GPU query here: `gpus` is given, so this stays pure)."""
    groups = managed_groups(models, stages, roles_of, run_managed, renamed)
    inproc = inprocess_gpu_roles(models, stages, roles_of) if gpus else {}
    # the in-process models only compete for GPUs with the servers of their own stage
    alive = {st for i, st in enumerate(stages) for g in groups if g.first <= i <= g.last}
    inproc = {st: roles for st, roles in inproc.items() if roles and st in alive}
    return place(stages, groups, inproc, gpus, as_jobs)

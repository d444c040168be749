"""The stage runner: decides each stage's content key, reuses finished outputs, runs the rest.

Stage outputs live in a content-addressed store (`paths.stage_store/<stage>/<key>/`); the run
directory links to them. The key hashes the config slice that defines a stage's output and the keys
(or file hashes) of its inputs, so a re-run, or another recipe that shares early stages, finds the
finished output and skips it. A finished output (its manifest says `complete`) is never written
again; an unfinished one is handed back to its stage, which resumes from what is there.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from deepwriter.cluster.launcher import submit_run
from deepwriter.cluster.requests import replica_spawner, serves_as_jobs
from deepwriter.config.root import STAGE_ORDER, ConfigError, RootConfig, config_at, expand, stable_hash, to_plain
from deepwriter.core.contract import (
    JOB_ENV,
    MANIFEST,
    StageContext,
    StageResult,
    StageSpec,
    rank,
    read_manifest,
    write_stage_manifest,
)
from deepwriter.core.errors import UnfinishedError
from deepwriter.core.files import file_sha256, write_json_atomic
from deepwriter.core.schema import key_slice
from deepwriter.eval import stage as eval_stage
from deepwriter.llm.precision import resolve_model_dtypes
from deepwriter.mix import stage as mix_stage
from deepwriter.serving.fleet import stop_on_signals
from deepwriter.serving.placement import visible_gpus
from deepwriter.serving.stages import RunServing, serving_layout
from deepwriter.sft import stage as sft_stage
from deepwriter.synthesis import stage as synthesis_stage

log = logging.getLogger("deepwriter")

_VERSIONED_PACKAGES = (
    "deepwriter",
    "torch",
    "transformers",
    "trl",
    "peft",
    "datasets",
    "accelerate",
    "deepspeed",
    "wandb",
)


# Each stage declares itself next to its code (STAGE in its module); the runner only runs them.
STAGES: Dict[str, StageSpec] = {
    s.name: s for s in (synthesis_stage.STAGE, mix_stage.STAGE, sft_stage.STAGE, eval_stage.STAGE)
}
assert tuple(STAGES) == STAGE_ORDER


def stage_roles(cfg: RootConfig) -> Dict[str, List[str]]:
    """The recipe's stages in run order, each with the model roles it calls: what the serving floor
    places (it never reads the stage list itself)."""
    return {s: STAGES[s].roles(cfg) for s in STAGE_ORDER if s in cfg.recipe.stages}


def stage_arrays(cfg: RootConfig) -> Dict[str, List[str]]:
    """The stages that launcher=slurm runs as a job array, each with its tasks' overrides (StageSpec.array)."""
    return {s: STAGES[s].array(cfg) for s in STAGE_ORDER if s in cfg.recipe.stages and STAGES[s].array(cfg)}


def run_serving(cfg: RootConfig, run_dir: Path, gpus: List[int], active: bool = True) -> RunServing:
    """The run's managed servers; in a stage job of launcher=slurm (or serving.placement=slurm) each
    replica is a SLURM job of its own, asking for launcher.jobs.server's resources."""
    roles = stage_roles(cfg)
    as_jobs = serves_as_jobs(cfg, in_stage_job=bool(os.environ.get(JOB_ENV)))
    # rank 0 alone runs the stages that call servers; other ranks of a launch start none
    layout = serving_layout(cfg, gpus, roles, as_jobs, managed=active)
    servers = run_dir / "servers"
    if os.environ.get(JOB_ENV) and os.environ.get("SLURM_ARRAY_TASK_ID"):
        # a task of a job array (a stage split into shards): its replicas are its own, beside its siblings'
        servers = servers / f"task-{os.environ['SLURM_ARRAY_TASK_ID']}"
    spawner = replica_spawner(cfg, layout.groups, servers) if as_jobs and layout.groups else None
    return RunServing(cfg, servers, layout, spawner)


def package_versions() -> Dict[str, Optional[str]]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@dataclass
class PlannedStage:
    spec: StageSpec
    key: str
    config: Dict[str, Any]
    input_hashes: Dict[str, str]
    needs: List[str]
    out_dir: Path
    max_unfinished_share: float = 0.0

    def manifest(self) -> Optional[dict]:
        return read_manifest(self.out_dir)

    def unfinished_count(self) -> int:
        m = self.manifest() or {}
        return int((m.get("unfinished") or {}).get("count", 0))

    def finished(self) -> bool:
        """Complete, and leaving no more items unfinished than this config allows: an output that
        finished with a few unfinished items is resumed by a run that allows fewer."""
        m = self.manifest()
        if not (m and m.get("status") == "complete" and m.get("key") == self.key):
            return False
        unfinished = m.get("unfinished") or {}
        return int(unfinished.get("count", 0)) <= math.floor(
            self.max_unfinished_share * unfinished.get("total", 0) + 1e-9
        )


def plan(cfg: RootConfig) -> Dict[str, PlannedStage]:
    """Content keys for every stage, whether or not this recipe runs it (a later stage's key
    depends on its inputs' keys). Keys name the dtype that runs, so `dtype: auto` is resolved first
    (a no-op on a config run_pipeline resolved already)."""

    cfg = resolve_model_dtypes(cfg)
    store = expand(cfg.paths.stage_store)
    planned: Dict[str, PlannedStage] = {}
    for name, spec in STAGES.items():
        config = {p: key_slice(config_at(cfg, p)) for p in spec.config_paths}
        needs = spec.needs(cfg)
        # An input that finished with unfinished items is another input than the whole one: a later
        # stage keyed on it is not reused once the missing items are done.
        input_hashes = {
            f"stage:{n}": planned[n].key
            + (f"+unfinished:{planned[n].unfinished_count()}" if planned[n].unfinished_count() else "")
            for n in needs
        }
        for f in spec.input_files(cfg):
            if not f.exists():
                input_hashes[f"file:{f}"] = "missing"
            elif f.is_dir():  # a benchmark folder (HelloBench): every file in it counts
                input_hashes[f"file:{f}"] = stable_hash(
                    {str(g.relative_to(f)): file_sha256(g) for g in sorted(f.rglob("*")) if g.is_file()}
                )
            else:
                input_hashes[f"file:{f}"] = file_sha256(f)
        key = stable_hash({"stage": name, "config": config, "inputs": input_hashes})
        planned[name] = PlannedStage(
            spec, key, config, input_hashes, needs, store / name / key, spec.max_unfinished_share(cfg)
        )
    return planned


def _link(run_dir: Path, stage: PlannedStage) -> None:
    link = run_dir / stage.spec.name
    target = os.path.relpath(stage.out_dir, run_dir)
    if link.is_symlink() or link.exists():
        if link.is_symlink() and os.readlink(link) == target:
            return
        link.unlink()
    link.symlink_to(target, target_is_directory=True)


def _wait_for(stage: PlannedStage, timeout_s: float = 7 * 24 * 3600) -> None:
    """Non-zero ranks wait for rank 0 to finish a stage that only it runs."""
    start = time.time()
    while not stage.finished():
        if time.time() - start > timeout_s:
            raise TimeoutError(f"rank {rank()}: gave up waiting for stage {stage.spec.name}")
        time.sleep(5)


def check_run(cfg: RootConfig, planned: Dict[str, PlannedStage], wanted: List[str]) -> None:
    """What stops a run before any work (also before a SLURM submission): a search nothing reads, an
    input this recipe does not produce and that is not finished, a missing input file."""
    if "synthesize" in wanted and "mix" in wanted and "synthesize" not in planned["mix"].needs:
        # a search whose output nothing reads: refused rather than run for nothing
        kind = cfg.data.mix.trajectories_from.kind
        why = (
            f"data.mix.trajectories_from.kind={kind} imports the trajectories"
            if kind != "synthesize"
            else "data.mix.synthetic=0 takes no trajectories"
        )
        rest = ",".join(s for s in wanted if s != "synthesize")
        raise ConfigError(
            f"recipe.stages: lists 'synthesize', but {why}, so nothing would read the search's output; "
            f"drop it: recipe.stages=[{rest}]"
        )
    # Fail before any work when an input that this recipe does not produce is not there.
    for name in wanted:
        st = planned[name]
        for need in st.needs:
            if need not in wanted and not planned[need].finished():
                raise ConfigError(
                    f"recipe.stages: stage {name!r} needs the output of {need!r} (key {planned[need].key}, "
                    f"{planned[need].out_dir}), which is not finished; add {need!r} to the stages"
                )
        missing = [k[5:] for k, v in st.input_hashes.items() if v == "missing"]
        if missing:
            raise ConfigError(f"stage {name!r}: input file not found: {missing[0]}")


def submit_jobs(
    cfg: RootConfig, argv: List[str], stage_hours: Callable[[RootConfig, List[str]], Dict[str, float]]
) -> int:
    """launcher=slurm: the run's own checks here, before any submission, then its unfinished stages as
    SLURM jobs (deepwriter.cluster.launcher). `stage_hours`: the plan's projected hours of stages
    (commands.plan.stage_wall_hours), for the jobs' requeue allowances. Returns the exit code of the
    submitting command."""
    planned = plan(cfg)
    wanted = [s for s in STAGE_ORDER if s in cfg.recipe.stages]
    check_run(cfg, planned, wanted)
    todo = [s for s in wanted if not planned[s].finished()]
    as_jobs = bool(todo) and serves_as_jobs(cfg, in_stage_job=False)
    servers = serving_layout(cfg, [], stage_roles(cfg), as_jobs=True).groups if as_jobs else {}
    reused = [s for s in wanted if s not in todo]
    return submit_run(
        cfg, argv, todo, reused, servers, stage_hours(cfg, todo), lambda: finished_stages(cfg), stage_arrays(cfg)
    )


def finished_stages(cfg: RootConfig) -> Dict[str, bool]:
    """Whether each stage's own manifest says it finished (complete, this stage key, no more unfinished
    items than allowed): the run's records, which decide a SLURM run's result whatever the scheduler
    still remembers of its jobs."""
    return {name: stage.finished() for name, stage in plan(cfg).items()}


def run_pipeline(cfg: RootConfig, tracker_factory: Callable[..., Any]) -> Dict[str, Any]:
    """Run the recipe's stages in order; returns the run manifest."""

    cfg = resolve_model_dtypes(cfg)  # before the keys: they must name the dtype that runs
    run_dir = expand(cfg.paths.runs_dir) / cfg.recipe.name / cfg.run_id
    planned = plan(cfg)
    wanted = [s for s in STAGE_ORDER if s in cfg.recipe.stages]
    check_run(cfg, planned, wanted)
    for name in wanted:  # the stages' own checks, before any work and before any folder is made
        spec = planned[name].spec
        if spec.preflight and not planned[name].finished():
            spec.preflight(cfg)

    # where the managed servers go: a node with too few GPUs is refused here, before any work
    serving = run_serving(cfg, run_dir, visible_gpus(cfg.serving.gpus), active=rank() == 0)
    run_dir.mkdir(parents=True, exist_ok=True)
    if rank() == 0:
        (run_dir / "config.json").write_text(json.dumps(to_plain(cfg), indent=2, ensure_ascii=False))
    run_manifest: Dict[str, Any] = {
        "recipe": cfg.recipe.name,
        "run_id": cfg.run_id,
        "run_dir": str(run_dir),
        "stages": {},
    }
    if os.environ.get(JOB_ENV) and (run_dir / MANIFEST).is_file():
        # one SLURM job of the run (deepwriter.cluster.launcher): the stages the run's earlier jobs ran stay listed
        earlier = read_manifest(run_dir) or {}
        run_manifest["stages"].update(earlier.get("stages") or {})
    # SIGTERM and SIGHUP unwind like Ctrl-C: every server the run started is stopped on every way out
    with stop_on_signals():
        try:
            _run_stages(cfg, planned, wanted, run_dir, run_manifest, serving, tracker_factory)
        finally:
            serving.close()
            if serving.fleet is not None:
                run_manifest["serving"] = serving.summary()
                if rank() == 0 and run_dir.is_dir():  # what the fleet did, also when the run failed
                    write_json_atomic(run_dir / "serving.json", run_manifest["serving"])
    if rank() == 0:
        write_json_atomic(run_dir / MANIFEST, run_manifest)
    return run_manifest


def _run_stages(
    cfg: RootConfig,
    planned: Dict[str, PlannedStage],
    wanted: List[str],
    run_dir: Path,
    run_manifest: Dict[str, Any],
    serving: RunServing,
    tracker_factory: Callable[..., Any],
) -> None:
    for name in wanted:
        st = planned[name]
        entry = {"key": st.key, "store": str(st.out_dir), "needs": {n: planned[n].key for n in st.needs}}
        if st.finished():
            m = st.manifest()
            log.info("stage %-10s reused: finished output %s (made by run %s)", name, st.out_dir, m.get("run"))
            entry.update(status="reused", made_by_run=m.get("run"))
        elif rank() != 0 and not st.spec.distributed:
            _wait_for(st)
            entry.update(status="reused", made_by_run="rank 0")
        else:
            resuming = st.out_dir.exists() and any(st.out_dir.iterdir())
            st.out_dir.mkdir(parents=True, exist_ok=True)
            # A manifest left by a run that finished with unfinished items no longer describes the
            # folder once this run adds to it; it is written anew when this run finishes.
            (st.out_dir / MANIFEST).unlink(missing_ok=True)
            log.info("stage %-10s %s -> %s", name, "resuming" if resuming else "running", st.out_dir)
            t0 = time.time()
            fn = st.spec.entry
            inputs = {n: planned[n].out_dir for n in st.needs}
            with tracker_factory(cfg, stage=name, out_dir=st.out_dir) as tracker:
                ctx = StageContext(
                    name=name, out_dir=st.out_dir, inputs=inputs, run_dir=run_dir, tracker=tracker, key=st.key
                )
                stage_cfg = serving.before(cfg, name, st.spec, ctx)
                before = serving.summary().get("groups", {})
                attempts = 0
                while True:  # a stage whose servers died and came back resumes from what it wrote
                    attempts += 1
                    deaths = serving.deaths()
                    try:
                        result: StageResult = fn(stage_cfg, ctx)
                    except UnfinishedError as exc:
                        if serving.healed_since(deaths):
                            log.warning("stage %-10s servers restarted; resuming the unfinished items (%s)", name, exc)
                            # a restarted replica may listen elsewhere (another port, a SLURM job's node)
                            stage_cfg = serving.before(cfg, name, st.spec, ctx)
                            continue
                        raise
                    if result.unfinished and serving.healed_since(deaths):
                        log.warning(
                            "stage %-10s servers restarted; resuming %d unfinished items",
                            name,
                            result.unfinished["count"],
                        )
                        stage_cfg = serving.before(cfg, name, st.spec, ctx)
                        continue
                    break
                elapsed = time.time() - t0
                fleet_counts = _fleet_delta(before, serving.summary().get("groups", {}))
                if attempts > 1:
                    fleet_counts["stage_attempts"] = attempts
                result.metrics.update({f"fleet_{k}": v for k, v in fleet_counts.items()})
                tracker.summary(
                    {
                        f"{name}/seconds": elapsed,
                        **{f"{name}/{k}": v for k, v in result.counts.items() if isinstance(v, (int, float))},
                        **{f"{name}/fleet_{k}": v for k, v in fleet_counts.items()},
                    }
                )
            if result.part:  # a worker's share of the stage: the worker that ends last writes the stage's manifest
                log.info("stage %-10s did its part (%s) in %.1fs", name, result.part, elapsed)
            elif rank() == 0:
                write_stage_manifest(
                    st.out_dir,
                    result,
                    stage=name,
                    key=st.key,
                    run=f"{cfg.recipe.name}/{cfg.run_id}",
                    config_hash=stable_hash(st.config),
                    config=st.config,
                    inputs=st.input_hashes,
                    timing={"started": t0, "seconds": round(elapsed, 3), "resumed": resuming},
                    versions=package_versions(),
                )
            entry.update(status="part" if result.part else "ran", seconds=round(elapsed, 3), resumed=resuming)
            if result.part:
                entry["part"] = result.part
            if fleet_counts:
                entry["serving"] = fleet_counts
            if result.unfinished:
                entry["unfinished"] = result.unfinished["count"]
                log.warning(
                    "stage %-10s finished with %d of %d items unfinished (within max_unfinished_share=%s)",
                    name,
                    result.unfinished["count"],
                    result.unfinished["total"],
                    result.unfinished["max_share"],
                )
            if not result.part:
                log.info("stage %-10s done in %.1fs", name, elapsed)
            if result.unfinished or resuming:  # later keys name a partial input (see plan)
                planned = plan(cfg)
        serving.after(name)
        if rank() == 0:
            _link(run_dir, st)
        run_manifest["stages"][name] = entry


def _fleet_delta(before: Dict[str, Any], after: Dict[str, Any]) -> Dict[str, Any]:
    """Restarts and seconds down of the servers during one stage (all its groups together)."""
    if not after:
        return {}
    out = {"restarts": 0, "down_s": 0.0, "deaths": 0}
    for g, a in after.items():
        b = before.get(g, {})
        for k in out:
            out[k] += a.get(k, 0) - b.get(k, 0)
    out["down_s"] = round(out["down_s"], 3)
    return out

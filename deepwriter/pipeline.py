"""The stage runner: decides each stage's content key, reuses finished outputs, runs the rest.

Stage outputs live in a content-addressed store (`paths.stage_store/<stage>/<key>/`); the run
directory links to them. The key hashes the config slice that defines a stage's output and the keys
(or file hashes) of its inputs, so a re-run, or another recipe that shares early stages, finds the
finished output and skips it. A finished output (its manifest says `complete`) is never written
again; an unfinished one is handed back to its stage, which resumes from what is there.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from deepwriter.config import STAGE_ORDER, ConfigError, RootConfig, expand, stable_hash, to_plain

log = logging.getLogger("deepwriter")

MANIFEST = "manifest.json"
# Keys that change how or where work runs but not what it produces: left out of content keys.
_OPERATIONAL_KEYS = {
    "shard", "base_urls", "max_concurrency", "timeout_s", "max_retries", "backoff_s", "api_key_env",
    "batch_size", "num_processes", "save_steps", "logging_steps", "strict_resume", "rate_limit_rps",
    "num_nodes", "launcher", "hostfile", "gpu_memory_gb", "peak_tflops", "liger", "save_total_limit",
    "max_unfinished_share",
}
_VERSIONED_PACKAGES = ("deepwriter", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "deepspeed", "wandb")


@dataclass
class StageContext:
    """What a stage function gets besides the config."""

    name: str
    out_dir: Path  # the stage's folder in the store; resumable content may already be there
    inputs: Dict[str, Path]  # finished upstream stage folders by stage name
    run_dir: Path
    tracker: Any  # deepwriter.tracking.Tracker
    key: str


@dataclass
class StageResult:
    counts: Dict[str, Any] = field(default_factory=dict)
    metrics: Dict[str, Any] = field(default_factory=dict)
    artifacts: Dict[str, str] = field(default_factory=dict)  # name -> path relative to the stage folder
    # deepwriter.unfinished.Unfinished.as_dict() of a stage that finished within its
    # max_unfinished_share; None when every item is done
    unfinished: Optional[Dict[str, Any]] = None


@dataclass(frozen=True)
class StageSpec:
    name: str
    entry: str  # "module:function", imported only when the stage runs
    config_paths: tuple  # dotted paths of the config slices that define the output
    needs: Callable[[RootConfig], List[str]]
    input_files: Callable[[RootConfig], List[Path]] = lambda cfg: []
    distributed: bool = False  # runs on every rank of a multi-process launch
    # The share of items the stage may leave unfinished (failed model calls) and still finish.
    max_unfinished_share: Callable[[RootConfig], float] = lambda cfg: 0.0


def _local_source_files(*sources: str) -> Callable[[RootConfig], List[Path]]:
    def files(cfg: RootConfig) -> List[Path]:
        out = []
        for dotted in sources:
            src = _get(cfg, dotted)
            if src.path:
                out.append(resolve_data_path(src.path))
        return out

    return files


def _benchmark_files(cfg: RootConfig) -> List[Path]:
    return [resolve_data_path(b.path) for b in cfg.eval.benchmarks.values() if b.enabled and b.path]


def _mix_needs(cfg: RootConfig) -> List[str]:
    return [] if cfg.data.mix.synthetic == 0 else ["synthesize"]


def _eval_needs(cfg: RootConfig) -> List[str]:
    return ["sft"] if cfg.eval.model_under_test == "sft" else []


STAGES: Dict[str, StageSpec] = {
    "synthesize": StageSpec(
        "synthesize", "deepwriter.synthesis.stage:run",
        ("models.generator", "models.scorer", "synthesis", "data.pairs", "data.strict", "data.label_categories",
         "data.labels", "data.queries", "data.quotas", "data.taxonomy"),
        needs=lambda cfg: [], input_files=_local_source_files("data.pairs"),
        max_unfinished_share=lambda cfg: cfg.synthesis.max_unfinished_share,
    ),
    "mix": StageSpec(
        "mix", "deepwriter.data.stage:run",
        ("data.public", "data.mix", "data.taxonomy", "data.strict", "models.student", "sft.max_length", "eval.benchmarks"),
        needs=_mix_needs, input_files=lambda cfg: _local_source_files("data.public")(cfg) + _benchmark_files(cfg),
    ),
    "sft": StageSpec(
        "sft", "deepwriter.sft.stage:run", ("models.student", "sft"),
        needs=lambda cfg: ["mix"], distributed=True,
    ),
    "eval": StageSpec(
        "eval", "deepwriter.eval.stage:run",
        ("eval", "models.judge", "models.student"),
        needs=_eval_needs, input_files=_benchmark_files,
        max_unfinished_share=lambda cfg: cfg.eval.max_unfinished_share,
    ),
}
assert tuple(STAGES) == STAGE_ORDER


def resolve_data_path(path: str) -> Path:
    """`pkg://deepwriter/...` points into the installed package; anything else is a file path."""
    if path.startswith("pkg://"):
        rest = path[len("pkg://"):]
        package, _, rel = rest.partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise ConfigError(f"{path}: package {package!r} is not installed")
        return Path(spec.origin).parent / rel
    return expand(path)


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = cfg[part] if isinstance(cfg, dict) else getattr(cfg, part)
    return cfg


def _strip_operational(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _strip_operational(v) for k, v in tree.items() if k not in _OPERATIONAL_KEYS}
    if isinstance(tree, list):
        return [_strip_operational(v) for v in tree]
    return tree


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
        path = self.out_dir / MANIFEST
        if not path.exists():
            return None
        return json.loads(path.read_text())

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
        return int(unfinished.get("count", 0)) <= math.floor(self.max_unfinished_share * unfinished.get("total", 0) + 1e-9)


def plan(cfg: RootConfig) -> Dict[str, PlannedStage]:
    """Content keys for every stage, whether or not this recipe runs it (a later stage's key
    depends on its inputs' keys). Keys name the dtype that runs, so `dtype: auto` is resolved first
    (a no-op on a config run_pipeline resolved already)."""
    from deepwriter.llm.precision import resolve_model_dtypes

    cfg = resolve_model_dtypes(cfg)
    store = expand(cfg.paths.stage_store)
    planned: Dict[str, PlannedStage] = {}
    for name, spec in STAGES.items():
        config = {p: _strip_operational(to_plain(_get(cfg, p)) if dataclasses.is_dataclass(_get(cfg, p)) else _get(cfg, p))
                  for p in spec.config_paths}
        needs = spec.needs(cfg)
        # An input that finished with unfinished items is another input than the whole one: a later
        # stage keyed on it is not reused once the missing items are done.
        input_hashes = {f"stage:{n}": planned[n].key + (f"+unfinished:{planned[n].unfinished_count()}"
                                                        if planned[n].unfinished_count() else "") for n in needs}
        for f in spec.input_files(cfg):
            if not f.exists():
                input_hashes[f"file:{f}"] = "missing"
            elif f.is_dir():  # a benchmark folder (HelloBench): every file in it counts
                input_hashes[f"file:{f}"] = stable_hash({str(g.relative_to(f)): file_sha256(g)
                                                         for g in sorted(f.rglob("*")) if g.is_file()})
            else:
                input_hashes[f"file:{f}"] = file_sha256(f)
        key = stable_hash({"stage": name, "config": config, "inputs": input_hashes})
        planned[name] = PlannedStage(spec, key, config, input_hashes, needs, store / name / key,
                                     spec.max_unfinished_share(cfg))
    return planned


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str))
    os.replace(tmp, path)


def _link(run_dir: Path, stage: PlannedStage) -> None:
    link = run_dir / stage.spec.name
    target = os.path.relpath(stage.out_dir, run_dir)
    if link.is_symlink() or link.exists():
        if link.is_symlink() and os.readlink(link) == target:
            return
        link.unlink()
    link.symlink_to(target, target_is_directory=True)


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _wait_for(stage: PlannedStage, timeout_s: float = 7 * 24 * 3600) -> None:
    """Non-zero ranks wait for rank 0 to finish a stage that only it runs."""
    start = time.time()
    while not stage.finished():
        if time.time() - start > timeout_s:
            raise TimeoutError(f"rank {_rank()}: gave up waiting for stage {stage.spec.name}")
        time.sleep(5)


def run_pipeline(cfg: RootConfig, tracker_factory: Callable[..., Any]) -> Dict[str, Any]:
    """Run the recipe's stages in order; returns the run manifest."""
    from deepwriter.llm.precision import resolve_model_dtypes

    cfg = resolve_model_dtypes(cfg)  # before the keys: they must name the dtype that runs
    run_dir = expand(cfg.paths.runs_dir) / cfg.recipe.name / cfg.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    planned = plan(cfg)
    wanted = [s for s in STAGE_ORDER if s in cfg.recipe.stages]
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

    if _rank() == 0:
        (run_dir / "config.json").write_text(json.dumps(to_plain(cfg), indent=2, ensure_ascii=False))
    run_manifest: Dict[str, Any] = {"recipe": cfg.recipe.name, "run_id": cfg.run_id, "run_dir": str(run_dir), "stages": {}}
    for name in wanted:
        st = planned[name]
        entry = {"key": st.key, "store": str(st.out_dir), "needs": {n: planned[n].key for n in st.needs}}
        if st.finished():
            m = st.manifest()
            log.info("stage %-10s reused: finished output %s (made by run %s)", name, st.out_dir, m.get("run"))
            entry.update(status="reused", made_by_run=m.get("run"))
        elif _rank() != 0 and not st.spec.distributed:
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
            module, func = st.spec.entry.split(":")
            fn = getattr(importlib.import_module(module), func)
            inputs = {n: planned[n].out_dir for n in st.needs}
            with tracker_factory(cfg, stage=name, out_dir=st.out_dir) as tracker:
                ctx = StageContext(name=name, out_dir=st.out_dir, inputs=inputs, run_dir=run_dir, tracker=tracker, key=st.key)
                result: StageResult = fn(cfg, ctx)
                elapsed = time.time() - t0
                tracker.summary({f"{name}/seconds": elapsed, **{f"{name}/{k}": v for k, v in result.counts.items()
                                                              if isinstance(v, (int, float))}})
            if _rank() == 0:
                _write_json_atomic(st.out_dir / MANIFEST, {
                    "stage": name, "status": "complete", "key": st.key, "run": f"{cfg.recipe.name}/{cfg.run_id}",
                    "config_hash": stable_hash(st.config), "config": st.config, "inputs": st.input_hashes,
                    "counts": result.counts, "metrics": result.metrics, "artifacts": result.artifacts,
                    "unfinished": result.unfinished,
                    "timing": {"started": t0, "seconds": round(elapsed, 3), "resumed": resuming},
                    "versions": package_versions(),
                })
            entry.update(status="ran", seconds=round(elapsed, 3), resumed=resuming)
            if result.unfinished:
                entry["unfinished"] = result.unfinished["count"]
                log.warning("stage %-10s finished with %d of %d items unfinished (within max_unfinished_share=%s)",
                            name, result.unfinished["count"], result.unfinished["total"], result.unfinished["max_share"])
            log.info("stage %-10s done in %.1fs", name, elapsed)
            if result.unfinished or resuming:  # later keys name a partial input (see plan)
                planned = plan(cfg)
        if _rank() == 0:
            _link(run_dir, st)
        run_manifest["stages"][name] = entry
    if _rank() == 0:
        _write_json_atomic(run_dir / MANIFEST, run_manifest)
    return run_manifest

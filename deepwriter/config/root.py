"""The typed configuration: Hydra YAML is merged onto these dataclasses, then stage functions get
the resulting objects. Every group in conf/ has its schema here (or in its stage's config module)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from deepwriter.config.cost import PlanConfig
from deepwriter.config.data import DataConfig
from deepwriter.config.eval import BENCHMARK_KINDS, EvalConfig, benchmark_schema
from deepwriter.config.launcher import LauncherConfig
from deepwriter.config.llm import ModelsConfig, RunServingConfig
from deepwriter.config.sft import SFTConfig
from deepwriter.config.synthesis import SynthesisConfig, shard_split
from deepwriter.core.contract import STAGE_ORDER
from deepwriter.core.errors import ConfigError
from deepwriter.core.files import (
    expand,  # noqa: F401  (re-exported: config paths are expanded with it)
    resolve_data_path,
)
from deepwriter.core.schema import SEED_MAX, bounded, check_fields, one_of, operational

# The Hydra config ships inside the package (a wheel install composes every recipe too).
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@dataclass
class RecipeConfig:
    name: str = "default"
    description: str = ""
    stages: List[str] = field(default_factory=lambda: list(STAGE_ORDER))
    scale: str = one_of("full", "full", "demo")


@dataclass
class PathsConfig:
    runs_dir: str = "runs"  # runs/<recipe>/<run_id>/<stage> link into the stage store
    stage_store: str = "runs/_stages"  # content-addressed stage outputs, shared by all recipes
    cache_dir: str = "~/.cache/deepwriter"  # converted models, downloaded data
    data_dir: str = "~/.cache/deepwriter/data"


@dataclass
class LoggingConfig:
    # auto (online when logged in, else offline) | online | offline | disabled
    wandb_mode: str = one_of("auto", "auto", "online", "offline", "disabled")
    project: str = "deepwriter"
    entity: Optional[str] = None
    group: str = ""  # one W&B group per recipe
    level: str = "INFO"


@dataclass
class RootConfig:
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    # the cost projection's hardware and workload figures (deepwriter.plan); no stage reads them
    plan: PlanConfig = operational(default_factory=PlanConfig)
    # managed vLLM servers (models.*.serving): the run's switch, vLLM's Python, the GPUs they may use
    serving: RunServingConfig = operational(default_factory=RunServingConfig)
    # where the stages run: here, or as SLURM jobs (launcher=slurm; deepwriter.cluster.launcher)
    launcher: LauncherConfig = operational(default_factory=LauncherConfig)
    run_id: str = ""
    seed: int = bounded(0, ge=0, le=SEED_MAX)


def register_schemas() -> None:
    """Make the schema the base of conf/config.yaml (its defaults list starts with `_schema`)."""
    ConfigStore.instance().store(name="_schema", node=RootConfig)


def _resolve_run_id() -> str:
    """Decide the run id once for every process of a launch.

    Ranks of a multi-process launch each compose the config; a timestamp would differ between them,
    so an id handed down by the launcher wins: DEEPWRITER_RUN_ID (set by deepwriter.train when it
    starts ranks itself), then SLURM's job id, then torchrun's rendezvous id.
    """
    for var in ("DEEPWRITER_RUN_ID", "SLURM_JOB_ID"):
        if os.environ.get(var):
            return os.environ[var]
    rdzv = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    if rdzv != "none":
        return rdzv
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "run_id: a multi-process launch needs one run id for all ranks; set DEEPWRITER_RUN_ID or pass run_id=NAME"
        )
    return time.strftime("%Y%m%d-%H%M%S")


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("dw_run_id"):
        OmegaConf.register_new_resolver("dw_run_id", _resolve_run_id, use_cache=True)


def to_typed(cfg: DictConfig) -> RootConfig:
    """Resolve and convert a composed config into dataclasses, reporting the first problem as one
    line with its key path."""
    tree = OmegaConf.to_container(cfg, resolve=False)
    _check_keys(tree, RootConfig, "")
    try:
        merged = OmegaConf.merge(_schema_of(tree), cfg)
        OmegaConf.resolve(merged)
        typed = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(describe_error(exc)) from None
    validate(typed)
    return typed


def _schema_of(tree: Any) -> DictConfig:
    """The root schema, each eval.benchmarks entry typed by its kind's options (HelloBench's subsets and
    groups are keys of a hellobench entry only)."""
    schema = OmegaConf.structured(RootConfig)
    entries = ((tree.get("eval") or {}).get("benchmarks") or {}) if isinstance(tree, dict) else {}
    for name, entry in entries.items():
        kind = (entry.get("kind") if isinstance(entry, dict) else None) or name
        schema.eval.benchmarks[name] = OmegaConf.structured(benchmark_schema(kind))
    return schema


def _check_keys(tree: Any, schema: type, path: str) -> None:
    """Hydra lets `+key=value` add keys the schema does not have; refuse them here."""
    if not isinstance(tree, dict):
        return
    hints = typing.get_type_hints(schema)
    for key, value in tree.items():
        full = f"{path}.{key}" if path else str(key)
        if key not in hints:
            if path == "" and key == "hydra":
                continue
            raise ConfigError(f"{full}: unknown key; expected one of {sorted(hints)}")
        sub = hints[key]
        if dataclasses.is_dataclass(sub):
            _check_keys(value, sub, full)


def validate(cfg: RootConfig) -> None:
    unknown = [s for s in cfg.recipe.stages if s not in STAGE_ORDER]
    if unknown:
        raise ConfigError(f"recipe.stages: unknown stage {unknown[0]!r}; expected some of {list(STAGE_ORDER)}")
    order = [STAGE_ORDER.index(s) for s in cfg.recipe.stages]
    if order != sorted(order):
        raise ConfigError(f"recipe.stages: {cfg.recipe.stages} is out of order; stages run as {list(STAGE_ORDER)}")
    check_fields(cfg)  # every field's declared range or choices (deepwriter.core.schema)
    for name, bench in cfg.eval.benchmarks.items():  # (a misspelt entry set from the command line makes a new one)
        if not bench.kind and name not in BENCHMARK_KINDS:
            raise ConfigError(
                f"eval.benchmarks.{name}.kind: not set, and {name!r} is no benchmark's name; "
                f"expected one of {list(BENCHMARK_KINDS)} (or an entry of {sorted(cfg.eval.benchmarks)} misspelt?)"
            )
    s = cfg.synthesis
    if s.clip_min is not None and s.clip_max is not None and not s.clip_min < s.clip_max:
        raise ConfigError(f"synthesis.clip_min: {s.clip_min} is not below synthesis.clip_max {s.clip_max}")
    if s.search and s.max_steps > 0 and s.num_candidates > 1 and s.refine.temperature == 0:
        # greedy candidates are one text n times; vLLM refuses such a request outright (HTTP 400)
        raise ConfigError(
            f"synthesis.num_candidates: {s.num_candidates} candidates at synthesis.refine.temperature 0 (greedy) "
            "would all be the same text; set num_candidates=1 or a refine temperature above 0"
        )
    shard_split(s)
    if cfg.sft.max_steps == 0:
        raise ConfigError("sft.max_steps: got 0; expected -1 (epochs decide) or a number of steps >= 1")


def describe_error(exc: Exception) -> str:
    """One line: `key.path: what is wrong (what was expected)`."""
    key = getattr(exc, "full_key", None)
    msg = str(getattr(exc, "msg", None) or exc).strip().splitlines()
    first = msg[0] if msg else type(exc).__name__
    first = re.sub(r"\s+", " ", first)
    if "not in struct" in first or "is not in" in first:
        parent = key.rsplit(".", 1)[0] if key and "." in key else ""
        first = f"unknown key{(' under ' + repr(parent)) if parent else ''}"
    return f"{key}: {first}" if key else first


# --- secrets ---------------------------------------------------------------------------------

_SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|authorization)$", re.IGNORECASE)


def redact(obj: Any) -> Any:
    """A copy of a plain config tree with secret-looking values replaced. Keys that name an
    environment variable (`*_env`) are kept: the name is not the secret."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, str) and _SECRET_KEY.search(k) and not k.endswith("_env") and v not in (None, ""):
                out[k] = "***"
            else:
                out[k] = redact(v)
        return out
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def to_plain(cfg: object) -> Any:
    """A JSON-able, redacted view of a typed config, any part of one (a dataclass), or a DictConfig."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.structured(cfg)
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return redact(plain)


def stable_hash(obj: Any, length: int = 16) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def split_options(argv: Sequence[str], names: Sequence[str]) -> Tuple[Dict[str, str], List[str]]:
    """A CLI's own `name=value` options (prompts, plan) apart from the Hydra overrides around them."""
    opts: Dict[str, str] = {}
    overrides: List[str] = []
    for a in argv:
        key, eq, value = a.partition("=")
        if eq and key in names:
            opts[key] = value
        else:
            overrides.append(a)
    return opts, overrides


def split_overrides(argv: List[str]) -> Tuple[List[str], List[str]]:
    """`[opts...] -- [hydra overrides...]` as used by the helper CLIs (ablations, dashboard)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


# --- what a stage reads of the config ----------------------------------------------------------


def config_at(cfg: RootConfig, dotted: str) -> Any:
    """The value at a dotted path of a typed config (`data.pairs`, `models.scorer`)."""
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


def source_files(*dotted: str) -> Callable[[RootConfig], List[Path]]:
    """input_files of a stage that reads the local files of data sources (`data.pairs`, ...)."""

    def files(cfg: RootConfig) -> List[Path]:
        return [resolve_data_path(src.path) for src in (config_at(cfg, d) for d in dotted) if src.path]

    return files


def benchmark_files(cfg: RootConfig) -> List[Path]:
    """The local data of every enabled benchmark (eval reads them; the mix decontaminates against them)."""
    return [resolve_data_path(b.path) for b in cfg.eval.benchmarks.values() if b.enabled and b.path]

"""Where the mix's synthetic part comes from (`data.mix.trajectories_from.kind`): one class per kind,
each registered once in SOURCES. The mix stage asks the configured source what it needs, which files
it reads, how to check its keys, how to load it and how the data card names it; it never switches on
the kind itself.

`synthesize`: this project's search (the synthesize stage's shards; the search applied the paper's
quality filters). `reference_output` and `released`: thinking imported from files or a dataset, which
the mix filters itself (data.mix.trajectories_from.quality_filters)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, Tuple

from deepwriter.config.data import TRAJECTORY_KINDS, TrajectoriesConfig
from deepwriter.config.root import RootConfig, expand
from deepwriter.core.contract import StageContext
from deepwriter.core.errors import ConfigError
from deepwriter.core.files import resolve_data_path
from deepwriter.mix.build import load_trajectories
from deepwriter.mix.reference import load_reference_outputs
from deepwriter.mix.released import load_released
from deepwriter.pairs.read import Skipped

KEY = "data.mix.trajectories_from"
Loaded = Tuple[List[Dict[str, Any]], List[Skipped], int]  # records, bad ones skipped, count not kept


class TrajectorySource(Protocol):
    kind: str
    needs: Optional[str]  # the stage whose output it reads, if any
    imported: bool  # thinking made elsewhere: the mix applies the paper's quality filters to it

    def files(self, t: TrajectoriesConfig) -> List[Path]: ...
    def check(self, t: TrajectoriesConfig) -> None: ...
    def load(self, cfg: RootConfig, ctx: StageContext) -> Loaded: ...
    def origin(self, cfg: RootConfig) -> str: ...


class Searched:
    kind, needs, imported = "synthesize", "synthesize", False

    def files(self, t: TrajectoriesConfig) -> List[Path]:
        return []  # the synthesize stage's key stands for its output

    def check(self, t: TrajectoriesConfig) -> None:
        return None

    def load(self, cfg: RootConfig, ctx: StageContext) -> Loaded:
        if "synthesize" not in ctx.inputs:
            return [], [], 0
        return load_trajectories(ctx.inputs["synthesize"] / "shards", cfg.data.mix.trajectory_field, cfg.data.strict)

    def origin(self, cfg: RootConfig) -> str:
        return f"this project's search, thinking from `{cfg.data.mix.trajectory_field}`"


class ReferenceOutputs:
    kind, needs, imported = "reference_output", None, True

    def files(self, t: TrajectoriesConfig) -> List[Path]:
        return [resolve_data_path(t.path)] if t.path else []

    def check(self, t: TrajectoriesConfig) -> None:
        if not t.path:
            raise ConfigError(f"{KEY}.path: not set; expected the folder of the reference's *_meta.jsonl files")
        if not resolve_data_path(t.path).is_dir():
            raise ConfigError(f"{KEY}.path: no such folder: {resolve_data_path(t.path)}")

    def load(self, cfg: RootConfig, ctx: StageContext) -> Loaded:
        t = cfg.data.mix.trajectories_from
        return load_reference_outputs(resolve_data_path(t.path), cfg.data.mix.trajectory_field, cfg.data.strict)

    def origin(self, cfg: RootConfig) -> str:
        t = cfg.data.mix.trajectories_from
        return f"the reference code's output files in `{t.path}`, thinking from `{cfg.data.mix.trajectory_field}`"


class Released:
    kind, needs, imported = "released", None, True

    def files(self, t: TrajectoriesConfig) -> List[Path]:
        paths = [resolve_data_path(t.path)] if t.path else []
        if not t.path and t.hub_id and Path(expand(t.hub_id)).is_dir():
            paths.append(Path(expand(t.hub_id)))  # a local folder laid out as a hub dataset
        return paths

    def check(self, t: TrajectoriesConfig) -> None:
        if not (t.path or t.hub_id):
            raise ConfigError(f"{KEY}: kind released needs path or hub_id")
        if t.path and resolve_data_path(t.path).is_dir():
            raise ConfigError(
                f"{KEY}.path: {resolve_data_path(t.path)} is a folder, not a file; a folder laid out as the hub "
                f"dataset goes in {KEY}.hub_id (with path null)"
            )
        if t.path and not resolve_data_path(t.path).is_file():
            raise ConfigError(f"{KEY}.path: no such file: {resolve_data_path(t.path)}")
        for name in ("x", "y"):
            if name not in t.fields:
                raise ConfigError(f"{KEY}.fields.{name}: not mapped; expected the column that holds it")

    def load(self, cfg: RootConfig, ctx: StageContext) -> Loaded:
        records, skipped = load_released(cfg.data.mix.trajectories_from, cfg.data.strict)
        return records, skipped, 0

    def origin(self, cfg: RootConfig) -> str:
        t = cfg.data.mix.trajectories_from
        return f"the released dataset `{t.hub_id or t.path}` [{t.split}], columns {dict(t.fields)}"


SOURCES: Dict[str, TrajectorySource] = {s.kind: s for s in (Searched(), ReferenceOutputs(), Released())}
# The kinds are named once, in the config's choices (config.data.TRAJECTORY_KINDS); one class each here.
assert tuple(SOURCES) == TRAJECTORY_KINDS, "one trajectory source per kind of data.mix.trajectories_from.kind"


def source_of(cfg: RootConfig) -> TrajectorySource:
    return SOURCES[cfg.data.mix.trajectories_from.kind]

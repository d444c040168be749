"""The stage contract: what the runner (deepwriter.pipeline.runner) hands a stage function, what the stage
gives back, and how a stage declares itself. A stage is `run(cfg: RootConfig, ctx: StageContext) ->
StageResult`; its module declares a `STAGE = StageSpec(...)` next to that code: the config slices that
define its output (its key), the stages and files it reads, its own checks before any work."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from deepwriter.core.files import write_json_atomic


@dataclass
class StageContext:
    """What a stage function gets besides the config."""

    name: str
    out_dir: Path  # the stage's folder in the store; resumable content may already be there
    inputs: Dict[str, Path]  # finished upstream stage folders by stage name
    run_dir: Path
    tracker: Any  # deepwriter.tracking.runs.Tracker
    key: str
    # The run's managed servers, for a stage that brings them up and down itself (StageSpec.
    # serves_itself): `up(role)` before a phase that calls the role, `down(role)` after its last call.
    # None: nothing to do (no managed server, or the runner brought them up before the stage).
    serving: Any = None


@dataclass
class StageResult:
    counts: Dict[str, Any] = field(default_factory=dict)
    metrics: Dict[str, Any] = field(default_factory=dict)
    artifacts: Dict[str, str] = field(default_factory=dict)  # name -> path relative to the stage folder
    # deepwriter.core.unfinished.Unfinished.as_dict() of a stage that finished within its
    # max_unfinished_share; None when every item is done
    unfinished: Optional[Dict[str, Any]] = None
    # Set by a worker that did its part of a stage split among workers (an array task's shard), when the
    # other parts are still to come: what it did, in words. The stage is not finished: no manifest.
    part: Optional[str] = None


@dataclass(frozen=True)
class StageSpec:
    name: str
    entry: Callable[[Any, StageContext], StageResult]  # the stage function: run(cfg, ctx) -> StageResult
    # Dotted paths of the config slices that define the output. Their operational fields (marked on the
    # dataclasses, deepwriter.core.schema.operational) are left out of the key.
    config_paths: tuple
    needs: Callable[[Any], List[str]]
    input_files: Callable[[Any], List[Path]] = lambda cfg: []
    distributed: bool = False  # runs on every rank of a multi-process launch
    # Checks the stage's own inputs and settings before any stage runs (a check that needs the stage's
    # code: a pairs file with no usable pair, a batch that cannot be split); None: no such check.
    preflight: Optional[Callable[[Any], None]] = None
    # The share of items the stage may leave unfinished (failed model calls) and still finish.
    max_unfinished_share: Callable[[Any], float] = lambda cfg: 0.0
    # The model roles (models.<role>) the stage calls while it runs: a managed server of a role's
    # preset is up from the first stage that calls it to the last (deepwriter.serving.placement).
    roles: Callable[[Any], List[str]] = lambda cfg: []
    # The model config the stage calls in a role, where it is not models.<role> as it stands (eval's
    # model under test is the student's preset with the sft output's weights): what a managed server of
    # that role serves. None: models.<role>.
    model_for: Optional[Callable[[Any, StageContext, str], Any]] = None
    # The stage calls its roles in phases and brings their managed servers up and down itself through
    # ctx.serving (eval: the model under test, then the judge), so on a small machine one server at a
    # time runs. False: the runner brings them all up before the stage.
    serves_itself: bool = False
    # Under launcher=slurm the stage's job is a job array, one task per override listed here (`key=value`
    # that makes a run do its part, e.g. `synthesis.shard=1/4`); none: one job.
    array: Callable[[Any], List[str]] = lambda cfg: []


# The stages a recipe may run, in the order they run: the one list the recipe's check, the runner's
# stage table and the launcher's per-stage jobs config are drawn from.
STAGE_ORDER = ("synthesize", "mix", "sft", "eval")


# Set in the train command of one SLURM job of a run (deepwriter.cluster.launcher): the run manifest that
# job writes keeps the stages the run's earlier jobs ran.
JOB_ENV = "DEEPWRITER_JOB_OF_RUN"


def rank() -> int:
    """This process's rank in a multi-process launch (torchrun, deepspeed, SLURM under torchrun); 0 alone."""
    return int(os.environ.get("RANK", "0"))


# --- the manifest: what a finished stage folder says about itself --------------------------------------

MANIFEST = "manifest.json"


def read_manifest(folder: Path) -> Optional[Dict[str, Any]]:
    """A stage folder's (or run folder's) manifest, or None when there is none: the stage never
    finished there, or a run that adds to it has begun."""
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def write_stage_manifest(folder: Path, result: StageResult, **fields: Any) -> None:
    """Mark a stage folder finished: its key, config and inputs (`fields`), what it counted, measured
    and made (`result`), written atomically so a reader sees a whole manifest or none."""
    write_json_atomic(
        Path(folder) / MANIFEST,
        {
            "status": "complete",
            **fields,
            "counts": result.counts,
            "metrics": result.metrics,
            "artifacts": result.artifacts,
            "unfinished": result.unfinished,
        },
    )

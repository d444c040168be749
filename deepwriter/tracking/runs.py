"""W&B for every stage: one run per stage (job_type = stage), grouped by recipe.

Offline unless the user is logged in; `WANDB_MODE` in the environment wins. Offline runs land in the
stage folder and can be uploaded later with `wandb sync <stage>/wandb/offline-run-*`.
"""

from __future__ import annotations

import netrc
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

from deepwriter.config.root import RootConfig, to_plain
from deepwriter.core.contract import rank


def logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (FileNotFoundError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def resolve_mode(configured: str) -> str:
    env = os.environ.get("WANDB_MODE")
    if env:
        return env
    if configured == "auto":
        return "online" if logged_in() else "offline"
    return configured


class Tracker:
    """A thin wrapper so stages log without caring whether W&B is on, and only rank 0 logs."""

    def __init__(self, run: Optional[Any]):
        self.run = run

    @property
    def active(self) -> bool:
        return self.run is not None

    def log(self, data: Dict[str, Any], step: Optional[int] = None) -> None:
        if self.run is not None:
            self.run.log(data, step=step)

    def summary(self, data: Dict[str, Any]) -> None:
        if self.run is not None:
            for k, v in data.items():
                self.run.summary[k] = v

    def table(self, name: str, columns: list, rows: list) -> None:
        if self.run is not None:
            import wandb

            self.run.log({name: wandb.Table(columns=columns, data=rows)})

    def image(self, name: str, path: Path) -> None:
        if self.run is not None and Path(path).exists():
            import wandb

            self.run.log({name: wandb.Image(str(path))})


@contextmanager
def stage_tracker(cfg: RootConfig, stage: str, out_dir: Path) -> Iterator[Tracker]:
    mode = resolve_mode(cfg.logging.wandb_mode)
    if mode == "disabled" or rank() != 0:
        yield Tracker(None)
        return
    import wandb

    run = wandb.init(
        project=cfg.logging.project,
        entity=cfg.logging.entity,
        group=cfg.logging.group or cfg.recipe.name,
        job_type=stage,
        name=f"{cfg.recipe.name}-{stage}-{cfg.run_id}",
        config=to_plain(cfg),  # redacted: keys never reach W&B
        dir=str(out_dir),
        mode=mode,
        reinit="create_new",
        settings=wandb.Settings(silent=True, console="off"),
    )
    try:
        yield Tracker(run)
    finally:
        run.finish()

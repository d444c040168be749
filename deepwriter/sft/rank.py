"""What every rank started by deepwriter.sft.launch runs: `python -m deepwriter.sft.rank <stage>/launch`
reads the spec the stage wrote (the typed config, the stage folder, its inputs) and trains."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import List

from omegaconf import OmegaConf

from deepwriter.config.root import RootConfig
from deepwriter.sft import stage, trainer
from deepwriter.sft.launch import SPEC
from deepwriter.tracking.runs import stage_tracker


def main(argv: List[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec_dir = Path(argv[0])
    spec = json.loads((spec_dir / SPEC).read_text())
    cfg: RootConfig = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RootConfig), spec["config"]))
    out_dir = Path(spec["out_dir"])
    geometry = trainer.batch_geometry(cfg.sft, trainer.world_size_for(cfg.sft))
    with stage_tracker(cfg, stage="sft", out_dir=out_dir) as tracker:
        stage.train(cfg, out_dir, Path(spec["inputs"]["mix"]), tracker, Path(spec["run_dir"]), geometry)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Start the ranks of a multi-process SFT and run one of them.

`deepwriter.train` runs stages in one process. When `sft.num_processes x sft.num_nodes > 1` and no
launcher started us, the SFT stage writes its typed config to `<stage>/launch/spec.json` and runs

    torchrun --nnodes 1 --nproc_per_node N -m deepwriter.sft.rank <stage>/launch

(or, with `sft.launcher=deepspeed` and `sft.hostfile`, `deepspeed --hostfile H --num_nodes M
--num_gpus N --module deepwriter.sft.rank <stage>/launch`, which ssh-es to every host listed in the
hostfile, one line per node: `node-1 slots=8`; every host needs the same checkout, venv and a shared
filesystem for the run directory). Every rank reads the same spec, so they agree on the run id and
the stage folder. Rank 0 writes `result.json`, which the stage returns as its result.

The other way to run several ranks: start the train command once per rank with RANK/WORLD_SIZE/
MASTER_ADDR set (torchrun around it, or the sft job of launcher=slurm, whose tasks export them from
SLURM's variables: deepwriter.cluster.launcher); every rank then runs the stage itself.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import List

from omegaconf import OmegaConf

from deepwriter.config.root import RootConfig

log = logging.getLogger("deepwriter.sft")
SPEC = "spec.json"
RANK_MODULE = "deepwriter.sft.rank"  # what every started rank runs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_spec(cfg: RootConfig, ctx) -> Path:
    spec_dir = ctx.out_dir / "launch"
    spec_dir.mkdir(parents=True, exist_ok=True)
    # Not redacted: the ranks need the same config the parent has. Secrets are environment variable
    # names in this config, never values.
    plain = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)
    spec = {
        "config": plain,
        "out_dir": str(ctx.out_dir),
        "inputs": {k: str(v) for k, v in ctx.inputs.items()},
        "run_dir": str(ctx.run_dir),
        "key": ctx.key,
    }
    path = spec_dir / SPEC
    path.write_text(json.dumps(spec, indent=2))
    return spec_dir


def command(cfg: RootConfig, spec_dir: Path) -> List[str]:
    sft = cfg.sft
    if sft.launcher == "deepspeed":
        exe = shutil.which("deepspeed") or "deepspeed"
        cmd = [exe, "--num_gpus", str(sft.num_processes), "--num_nodes", str(sft.num_nodes)]
        if sft.hostfile:
            cmd += ["--hostfile", str(Path(sft.hostfile).expanduser())]
        else:
            cmd += ["--master_port", str(_free_port())]
        return cmd + ["--module", RANK_MODULE, str(spec_dir)]
    if sft.launcher != "torchrun":
        raise ValueError(f"sft.launcher: got {sft.launcher!r}; expected torchrun or deepspeed")
    if sft.num_nodes > 1:
        raise ValueError(
            "sft.num_nodes: torchrun from inside the stage starts one node only; for several nodes use "
            "sft.launcher=deepspeed with sft.hostfile, or start deepwriter.train under torchrun/srun on every "
            "node (launcher=slurm submits the sft stage as one job with a task per rank)"
        )
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        str(sft.num_processes),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        RANK_MODULE,
        str(spec_dir),
    ]


def launch(cfg: RootConfig, ctx) -> None:
    """Start all ranks and wait; a failed rank fails the stage with the command to rerun by hand."""
    spec_dir = write_spec(cfg, ctx)
    (ctx.out_dir / "result.json").unlink(missing_ok=True)
    cmd = command(cfg, spec_dir)
    env = {**os.environ, "DEEPWRITER_RUN_ID": str(cfg.run_id)}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    log.info("sft: starting %d rank(s): %s", cfg.sft.num_processes * cfg.sft.num_nodes, " ".join(cmd))
    rc = subprocess.call(cmd, env=env)
    if rc != 0:
        raise RuntimeError(f"sft: the training ranks failed (exit {rc}); command: {' '.join(cmd)}")

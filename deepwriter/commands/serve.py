"""Entry point: `python -m deepwriter.serve --model PRESET --port P --python .venv-serve/bin/python`
(what `make serve MODEL=PRESET PORT=P` runs): an OpenAI-compatible vLLM server for a model preset of
conf/model/, in the foreground.

The preset becomes vLLM's command line in deepwriter.serving.server (the same one the run's fleet
starts); this process then replaces itself with the server, so a signal to it reaches vLLM.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import List, Optional

from deepwriter.config.compose import compose, preflight
from deepwriter.config.llm import ModelConfig
from deepwriter.config.root import ConfigError, to_typed
from deepwriter.serving.server import server_command


def _preset(name: str) -> ModelConfig:
    override = f"model@models.generator={name}"
    error = preflight([override])  # an unknown preset: one line listing the ones there are
    if error:
        raise ConfigError(error.replace("model: ", "--model: ", 1))
    return to_typed(compose([override])).models.generator


def _has_cuda() -> bool:
    return shutil.which("nvidia-smi") is not None and os.system("nvidia-smi -L >/dev/null 2>&1") == 0


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deepwriter.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="smollm2-135m-vllm", help="a preset of conf/model/ (file name without .yaml)"
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--python", default=".venv-serve/bin/python", help="the Python of vLLM's own environment")
    parser.add_argument("--cache-dir", default=os.environ.get("DEEPWRITER_CACHE", "~/.cache/deepwriter"))
    parser.add_argument("--dry-run", action="store_true", help="print the server command instead of running it")
    args, extra = parser.parse_known_args(argv)
    try:
        cfg = _preset(args.model)
        if not Path(args.python).is_file():
            raise ConfigError(
                f"--python: {args.python} does not exist; `make serve-install` creates vLLM's environment"
            )
        cuda = _has_cuda()
        # the preset's engine arguments, as the run's fleet passes them, then the command line's
        engine = list(cfg.serving.engine_args) + extra
        cmd = server_command(cfg, args.python, args.port, args.host, args.cache_dir, cuda, engine)
    except ConfigError as exc:
        print(f"deepwriter.serve: config error: {exc}", file=sys.stderr)
        sys.exit(2)
    env = dict(os.environ)
    if not cuda:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    print(" ".join(cmd), flush=True)
    if args.dry_run:
        return
    os.execve(cmd[0], cmd, env)

"""Entry point: `python -m deepwriter.serve --model PRESET --port P --python .venv-serve/bin/python`
(what `make serve MODEL=PRESET PORT=P` runs): an OpenAI-compatible vLLM server for a model preset of
conf/model/, in the foreground.

vLLM lives in its own environment (`make serve-install` builds `.venv-serve`): it pins transformers
below this project's pin. This module runs in the project's environment only to turn the preset into
what vLLM loads — a hub id as it is, a local folder, or a GGUF file (the embedded SmolLM2 included)
converted once into a safetensors folder, the same copy the transformers backend loads — and then
replaces itself with the server process, so a signal to this process reaches vLLM.

The served model name is the preset's `endpoint.model` (what clients of the preset ask for), else its
name. On a machine without CUDA, vLLM's CPU build needs `VLLM_CPU_KVCACHE_SPACE` (GiB of KV cache,
default 2 here) and dies on a per-request seed: presets for it set `endpoint.send_seed: false`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import List, Optional

from deepwriter.config.llm import ModelConfig, ModelSource
from deepwriter.config.root import ConfigError

VLLM_MODULE = "vllm.entrypoints.openai.api_server"


def _preset(name: str) -> ModelConfig:
    from deepwriter.config.compose import compose, preflight
    from deepwriter.config.root import to_typed

    override = f"model@models.generator={name}"
    error = preflight([override])  # an unknown preset: one line listing the ones there are
    if error:
        raise ConfigError(error.replace("model: ", "--model: ", 1))
    return to_typed(compose([override])).models.generator


def served_name(cfg: ModelConfig) -> str:
    return cfg.endpoint.model or cfg.name


def _has_cuda() -> bool:
    return shutil.which("nvidia-smi") is not None and os.system("nvidia-smi -L >/dev/null 2>&1") == 0


def _vllm_dtype(cfg: ModelConfig, cuda: bool) -> str:
    """The preset's dtype; `auto` is decided the way the in-process backends decide it (bf16 where the
    machine computes it faster), so both backends score with the same precision. vLLM's CPU build
    has no float16."""
    if cfg.dtype != "auto":
        return cfg.dtype
    from deepwriter.llm.precision import pick_dtype

    return pick_dtype("cuda" if cuda else "cpu")[0]


def server_command(
    cfg: ModelConfig, python: str, port: int, host: str, cache_dir: str, cuda: bool, extra: List[str]
) -> List[str]:
    from deepwriter.llm import models

    if cfg.source == ModelSource.tiny:
        raise ConfigError(
            f"--model {cfg.name}: a tiny random model has no weights to serve; pick a preset with weights"
        )
    where, _ = models.resolve(cfg, cache_dir)  # converts a GGUF once; a hub id passes through
    cmd = [
        python,
        "-m",
        VLLM_MODULE,
        "--model",
        where,
        "--served-model-name",
        served_name(cfg),
        "--dtype",
        _vllm_dtype(cfg, cuda),
        "--max-model-len",
        str(cfg.max_context),
        "--host",
        host,
        "--port",
        str(port),
    ]
    if cfg.source == ModelSource.hub and cfg.revision:
        cmd += ["--revision", cfg.revision]
    if cfg.trust_remote_code:
        cmd.append("--trust-remote-code")
    return cmd + extra


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

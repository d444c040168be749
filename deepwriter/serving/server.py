"""The command line of an OpenAI-compatible vLLM server for a model preset of conf/model/: what
`python -m deepwriter.serve` (deepwriter.commands.serve, `make serve MODEL=PRESET PORT=P`) runs in the
foreground, and what the run's fleet starts for each replica (deepwriter.serving.fleet).

vLLM lives in its own environment (`make serve-install` builds `.venv-serve`): it pins transformers
below this project's pin. This module runs in the project's environment only to turn the preset into
what vLLM loads — a hub id as it is, a local folder, or a GGUF file (the embedded SmolLM2 included)
converted once into a safetensors folder, the same copy the transformers backend loads.

The served model name is the preset's `endpoint.model` (what clients of the preset ask for), else its
name. On a machine without CUDA, vLLM's CPU build needs `VLLM_CPU_KVCACHE_SPACE` (GiB of KV cache,
default 2 here) and dies on a per-request seed: presets for it set `endpoint.send_seed: false`.
"""

from __future__ import annotations

from typing import List

from deepwriter.config.llm import ModelConfig, ModelSource
from deepwriter.config.root import ConfigError
from deepwriter.llm import models
from deepwriter.llm.precision import pick_dtype

VLLM_MODULE = "vllm.entrypoints.openai.api_server"


def served_name(cfg: ModelConfig) -> str:
    return cfg.endpoint.model or cfg.name


def _vllm_dtype(cfg: ModelConfig, cuda: bool) -> str:
    """The preset's dtype; `auto` is decided the way the in-process backends decide it (bf16 where the
    machine computes it faster), so both backends score with the same precision. vLLM's CPU build
    has no float16."""
    if cfg.dtype != "auto":
        return cfg.dtype

    return pick_dtype("cuda" if cuda else "cpu")[0]


def server_command(
    cfg: ModelConfig, python: str, port: int, host: str, cache_dir: str, cuda: bool, extra: List[str]
) -> List[str]:

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

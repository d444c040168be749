"""Typed config of one model role (generator, scorer, student, judge) and how it is reached."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from deepwriter.core.schema import bounded, one_of, operational

LOGPROBS_APIS = ("completions_echo", "vllm_prompt_logprobs", "sglang")
MODEL_DTYPES = ("auto", "float32", "bfloat16", "float16")


class ModelSource(str, Enum):
    hub = "hub"  # a hub id, downloaded (or read from the HF cache when HF_HUB_OFFLINE=1)
    local = "local"  # a folder with config.json + weights
    gguf = "gguf"  # a .gguf file; converted once to a safetensors copy in the cache
    package_gguf = "package_gguf"  # a .gguf file shipped inside an installed Python package
    tiny = "tiny"  # a randomly initialised model built from `tiny_config` (tests, benchmarks)


class Backend(str, Enum):
    transformers = "transformers"  # in-process, CPU or GPU
    openai = "openai"  # any OpenAI-compatible server (vllm serve, sglang, a hosted API)


@dataclass
class EndpointConfig:
    """An OpenAI-compatible server. The key is read from the environment variable named here, never
    from the config itself, so it cannot end up in a dump, a manifest or W&B."""

    base_urls: List[str] = operational(default_factory=list)
    model: str = ""
    api_key_env: Optional[str] = operational(None)
    max_concurrency: int = bounded(8, ge=1, le=4096, operational=True)
    timeout_s: float = bounded(120.0, gt=0.0, le=86_400.0, operational=True)  # a day at most
    # A failed call (no answer, 408/429/5xx, a malformed body) is sent again up to this many times,
    # so at most max_retries + 1 attempts per call: the one retry policy of every model call.
    max_retries: int = bounded(6, ge=0, le=100, operational=True)
    backoff_s: float = bounded(1.0, ge=0.0, le=3600.0, operational=True)
    # How log-probs of a given text are obtained: completions_echo | vllm_prompt_logprobs | sglang
    logprobs_api: str = one_of("completions_echo", *LOGPROBS_APIS)
    # Send each request's sampling seed. vLLM on CPU dies on a per-request seed (its CPU generator has
    # no offset), so presets for it set false; samples are then not reproducible across runs.
    send_seed: bool = True


@dataclass
class ServingConfig:
    """How a run serves this preset itself (deepwriter.serving.fleet): replicas of the server `make serve`
    starts, started before the first stage that calls a role naming the preset and stopped after the
    last one. Roles that name the same preset share its replicas. How work is served never changes what
    it produces, so none of this is in a stage key."""

    # false: the endpoint's base_urls are servers someone else runs (the run starts nothing)
    managed: bool = False
    replicas: int = bounded(1, ge=1, le=4096)
    tensor_parallel: int = bounded(1, ge=1, le=64)  # vLLM's --tensor-parallel-size
    # GPUs each replica gets (CUDA_VISIBLE_DEVICES); null: tensor_parallel. On a node without GPUs a
    # replica of tensor_parallel 1 runs on the CPU (vLLM's CPU build).
    gpus_per_replica: Optional[int] = bounded(None, ge=1, le=64)
    base_port: int = bounded(8000, ge=1, le=65535)  # replica i listens on base_port + i
    engine_args: List[str] = field(default_factory=list)  # passed to the server as they are
    # from its start (a SLURM job: from RUNNING) until /v1/models answers (a day at most)
    startup_timeout_s: float = bounded(900.0, gt=0.0, le=86_400.0)
    # how long a replica's SLURM job may wait in the queue (PENDING) before it starts; its start-up
    # clock runs only once it runs (a week at most)
    queue_timeout_s: float = bounded(86_400.0, gt=0.0, le=604_800.0)
    # restarts of replicas that died, over the whole run, before a stage ends unfinished (exit 3)
    max_restarts: int = bounded(3, ge=0, le=1000)
    # A server command of your own instead of vLLM's (SGLang, a test server), one argument per item, with
    # {python} (this Python), {model} (the weights' folder or hub id), {served_name}, {name}, {host},
    # {port}, {tensor_parallel}, {cache_dir} filled in; empty: vLLM, as `make serve` starts it.
    command: List[str] = field(default_factory=list)


@dataclass
class RunServingConfig:
    """The run's own switch over managed serving (root key `serving`)."""

    # false: no preset's servers are started, whatever its serving.managed says; every endpoint's
    # base_urls are used as they are (servers of your own)
    managed: bool = True
    python: str = ".venv-serve/bin/python"  # the Python of vLLM's environment (`make serve-install`)
    host: str = "127.0.0.1"
    # GPUs the fleet may use; null: CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi lists, else none (CPU)
    gpus: Optional[List[int]] = None
    # Where each replica runs. local: a process on the node of the stage that calls it (on the GPUs
    # above); slurm: a SLURM job of its own (launcher.jobs.server asks for its resources, its GPUs are the
    # replica's gpus_per_replica / tensor_parallel), found through <run>/servers/<group>-<index>.addr;
    # auto: slurm inside a stage job of launcher=slurm, local otherwise.
    placement: str = one_of("auto", "auto", "local", "slurm")


@dataclass
class ModelConfig:
    name: str = "unnamed"
    source: ModelSource = ModelSource.hub
    # hub id, local folder, .gguf path, or (package_gguf) the package name
    path: str = ""
    gguf_file: Optional[str] = None
    revision: Optional[str] = None
    # auto: bfloat16 where this machine computes it faster than float32 (see llm/precision.py), else
    # float32; resolved before stage keys are made. HTTP backends ignore it.
    dtype: str = one_of("auto", *MODEL_DTYPES)
    trust_remote_code: bool = False
    backend: Backend = Backend.transformers
    # Kwargs of the transformers config class for source=tiny (model_type selects the class).
    tiny_config: Dict[str, Any] = field(default_factory=dict)
    # Context window used to reject over-long inputs before they reach the model.
    max_context: int = bounded(8192, ge=1, le=10_000_000)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    serving: ServingConfig = operational(default_factory=ServingConfig)


@dataclass
class ModelsConfig:
    generator: ModelConfig = field(default_factory=ModelConfig)
    scorer: ModelConfig = field(default_factory=ModelConfig)
    student: ModelConfig = field(default_factory=ModelConfig)
    judge: ModelConfig = field(default_factory=ModelConfig)

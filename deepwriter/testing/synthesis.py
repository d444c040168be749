"""The synthesize stage over the tiny random model, as the tests and benches set it up: a small
config, pairs files, a stage context, and PlanWriter (a stand-in generator whose plans pass the filters)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from omegaconf import OmegaConf

from deepwriter.config.llm import ModelConfig
from deepwriter.config.root import CONF_DIR, RootConfig
from deepwriter.core.contract import StageContext
from deepwriter.llm.base import Generation
from deepwriter.tracking.runs import Tracker

FIELDS = {"id": "id", "x": "request", "y": "answer", "category": "category"}


def tiny_model_config() -> ModelConfig:
    return OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(CONF_DIR / "model" / "tiny-qwen3.yaml"))
    )


def make_cfg(pairs_path: Path, cache: Path, **synth) -> RootConfig:
    cfg = RootConfig()
    cfg.models.generator = tiny_model_config()
    cfg.models.scorer = tiny_model_config()
    cfg.paths.cache_dir = str(cache)
    cfg.data.pairs.path = str(pairs_path)
    cfg.data.pairs.fields = dict(FIELDS)
    cfg.synthesis.max_steps = 1
    cfg.synthesis.initial.max_new_tokens = 24
    cfg.synthesis.refine.max_new_tokens = 16
    for k, v in synth.items():
        setattr(cfg.synthesis, k, v)
    return cfg


def write_pairs(path: Path, n: int, extra_lines=(), ids: str = "p{i:03d}") -> Path:
    """n small letter pairs (id, request, answer, category) and any extra raw lines, as JSONL."""
    with open(path, "w") as f:
        for i in range(n):
            f.write(
                json.dumps(
                    {
                        "id": ids.format(i=i),
                        "request": f"Write a short note number {i} about the sea.",
                        "answer": f"Dear reader,\n\nThe sea was calm on day {i}. The light was warm.",
                        "category": "letter",
                    }
                )
                + "\n"
            )
        for line in extra_lines:
            f.write(line + "\n")
    return path


def stage_context(out: Path) -> StageContext:
    """A synthesize stage's context writing to `out`, with W&B off."""
    return StageContext("synthesize", out, {}, out, Tracker(None), "test")


WORDS = (
    "sea harbour light morning reader boat tide gull salt wind rope pier lantern shell sand wave quiet "
    "warm letter calm evening cliff sail anchor shore drift current horizon fisher net mist spray stone "
    "lighthouse keeper bell deck mast cabin chart compass island bay dune foam pebble rock river mouth"
).split()


ONE_PARAGRAPH = "note number 3 "


class PlanWriter:
    """A stand-in generator that writes a plan of three paragraphs of varied words, for the first
    trajectory and for every rewrite. The tiny random model almost never emits a line break, so its
    z0 is a single segment and is discarded before any scoring; with this generator the kept path
    (scoring by the tiny model, search steps, quality filters, the score plot) runs. It carries the
    replaced generator's model id, so records name the configured model."""

    def __init__(self, model_id: str):
        self.model_id = model_id
        self.rng = random.Random(0)
        self.calls = 0

    def _text(self) -> str:
        return ", then\n\n".join(" ".join(self.rng.sample(WORDS, 20)) for _ in range(3)) + "."

    def generate(self, prompts, sampling, n=1, prefill=None, seeds=None):
        self.calls += len(prompts)
        rows = []
        for messages in prompts:
            texts = [", " + self._text() for _ in range(n)]
            if ONE_PARAGRAPH in json.dumps(messages):  # this pair's plan is one paragraph: discarded
                texts = [t.replace("\n\n", " ") for t in texts]
            rows.append([Generation(text=t, prompt_tokens=40, completion_tokens=len(t.split())) for t in texts])
        return rows


def keeping(cfg: RootConfig) -> RootConfig:
    """Settings under which PlanWriter's plans pass every filter: z0 of >= 40 generated tokens (it
    writes ~60 words), the rewrite turn prefilled with <refine> (no analysis to parse)."""
    cfg.synthesis.filters.min_think_tokens = 40
    cfg.synthesis.refine_analysis = False
    return cfg


# The loopback over the tiny model as a preset's `serving.command`, 0.3 s a request: slow enough for a
# kill, a signal or a scancel to land mid-stage
LOOPBACK_COMMAND = (
    '["{python}","-m","deepwriter.testing.loopback","--model","tiny-qwen3","--port","{port}",'
    '"--cache-dir","{cache_dir}","--latency-s","0.3"]'
)


def synthesis_overrides(
    runs: Path,
    cache: Path,
    pairs: Path,
    n: int,
    run_id: str,
    role_fields: list,
    stages: str = "synthesize",
    in_flight: int = 2,
) -> list:
    """`deepwriter.train` overrides: the demo's `stages` over `n` pairs of `pairs`, a short search, the
    generator and scorer the tiny model behind an OpenAI endpoint; `role_fields` ("endpoint.x=v",
    "serving.y=v") say where that endpoint is, for both roles."""
    out = [
        "+recipe=demo",
        f"run_id={run_id}",
        f"paths.runs_dir={runs}",
        f"paths.cache_dir={cache}",
        f"recipe.stages=[{stages}]",
        f"data.pairs.path={pairs}",
        "data.pairs.fields={id: id, x: request, y: answer, category: category}",
        f"synthesis.limit={n}",
        "synthesis.max_steps=1",
        "synthesis.initial.max_new_tokens=16",
        "synthesis.refine.max_new_tokens=8",
        f"synthesis.max_in_flight={in_flight}",
        "logging.wandb_mode=disabled",
    ]
    for role in ("generator", "scorer"):
        out += [
            f"model@models.{role}=tiny-qwen3",
            f"models.{role}.backend=openai",
            f"models.{role}.endpoint.model=tiny-qwen3",
            *(f"models.{role}.{field}" for field in role_fields),
        ]
    return out


def served_synthesis_overrides(
    runs: Path, cache: Path, pairs: Path, n: int, port: int, run_id: str, **endpoint: object
) -> list:
    """The synthesize stage alone (synthesis_overrides), its generator and scorer served by one managed
    loopback replica at `port` (the run starts, heals and stops it). `endpoint`: further endpoint fields of
    both roles (max_retries=1, ...)."""
    managed = [
        *(f"endpoint.{k}={v}" for k, v in endpoint.items()),
        "serving.managed=true",
        f"serving.base_port={port}",
        "serving.startup_timeout_s=180",
        f"serving.command={LOOPBACK_COMMAND}",
    ]
    return synthesis_overrides(runs, cache, pairs, n, run_id, managed)

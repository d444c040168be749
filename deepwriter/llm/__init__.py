"""Model backends behind the Generator/Scorer interface, chosen by `backend` in a model's config."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from deepwriter.config.llm import Backend, ModelConfig
from deepwriter.llm import models
from deepwriter.llm.base import Generator, Scorer
from deepwriter.llm.openai_http import OpenAIGenerator, OpenAIScorer


def make_generator(
    cfg: ModelConfig,
    cache_dir: str | Path,
    device: Optional[str] = None,
    batch_size: int = 8,
    measure_prompts: bool = False,
) -> Generator:
    """`measure_prompts` (a server backend): load the model's tokenizer so that a prompt over
    `max_context` is a verdict measured before sending (the synthesis search asks for it)."""
    if cfg.backend == Backend.openai:
        tokenizer = None
        if measure_prompts:
            tokenizer = models.load_tokenizer(cfg, cache_dir)
        return OpenAIGenerator(
            cfg.endpoint, model_id=cfg.endpoint.model or cfg.path, tokenizer=tokenizer, max_context=cfg.max_context
        )
    from deepwriter.llm.hf import TransformersGenerator, default_device  # torch, transformers: local models only

    model, tok = models.load(cfg, cache_dir, device=device or default_device())
    return TransformersGenerator(model, tok, model_id=cfg.name, batch_size=batch_size)


def make_scorer(cfg: ModelConfig, cache_dir: str | Path, device: Optional[str] = None) -> Scorer:
    if cfg.backend == Backend.openai:
        # The client renders the chat template itself, so the scorer's tokenizer is needed locally.
        return OpenAIScorer(
            cfg.endpoint,
            tokenizer=models.load_tokenizer(cfg, cache_dir),
            model_id=cfg.endpoint.model or cfg.path,
            max_context=cfg.max_context,
        )
    from deepwriter.llm.hf import TransformersScorer, default_device  # torch, transformers: local models only

    model, tok = models.load(cfg, cache_dir, device=device or default_device())
    return TransformersScorer(model, tok, model_id=cfg.name)

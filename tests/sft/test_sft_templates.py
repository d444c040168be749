"""The training chat template: exactly the assistant turn (thinking, answer, <|im_end|>) carries loss."""

from __future__ import annotations

import pytest

from deepwriter.llm.models import build_tiny_tokenizer
from deepwriter.sft.templates import (
    IM_END,
    TRAINING_TEMPLATE,
    TemplateError,
    apply_training_template,
    has_generation_markers,
    tokenize_with_labels,
)

MESSAGES = [
    {"role": "system", "content": "You are a careful writer."},
    {"role": "user", "content": "Write a poem about the sea."},
    {"role": "assistant", "content": "<think>\nThe reader wants calm.\n</think>\n\nThe sea is wide."},
]


@pytest.fixture()
def tok():
    t = build_tiny_tokenizer(1024)
    apply_training_template(t)
    return t


def test_render_and_loss_mask_cover_assistant_turn_only(tok):
    ids, labels = tokenize_with_labels(tok, MESSAGES)
    assert tok.decode(ids) == (
        "<|im_start|>system\nYou are a careful writer.<|im_end|>\n"
        "<|im_start|>user\nWrite a poem about the sea.<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nThe reader wants calm.\n</think>\n\nThe sea is wide.<|im_end|>\n"
    )
    trained = [i for i, label in enumerate(labels) if label != -100]
    # one contiguous span: the assistant content and its end marker, not the header, not the final newline
    assert trained == list(range(trained[0], trained[-1] + 1))
    assert tok.decode(ids[trained[0] : trained[-1] + 1]) == (
        "<think>\nThe reader wants calm.\n</think>\n\nThe sea is wide.<|im_end|>"
    )
    assert ids[trained[-1]] == tok.convert_tokens_to_ids(IM_END)
    assert tok.decode(ids[: trained[0]]).endswith("<|im_start|>assistant\n")
    assert trained[-1] == len(ids) - 2  # the trailing "\n" carries no loss
    assert all(labels[i] == ids[i] for i in trained)


def test_multi_turn_masks_every_assistant_turn(tok):
    convo = MESSAGES + [{"role": "user", "content": "Shorter."}, {"role": "assistant", "content": "Sea."}]
    ids, labels = tokenize_with_labels(tok, convo)
    text = tok.decode([t for t in labels if t != -100])
    assert text == "<think>\nThe reader wants calm.\n</think>\n\nThe sea is wide.<|im_end|>Sea.<|im_end|>"
    assert "Shorter" not in text and "careful" not in text


def test_trl_accepts_the_template(tok):
    from trl.chat_template_utils import has_generation_markers as trl_has_markers
    from trl.chat_template_utils import is_chat_template_stop_token_trained

    assert trl_has_markers(tok.chat_template)
    assert is_chat_template_stop_token_trained(tok)


def test_generation_prompt_and_eos(tok):
    assert tok.eos_token == IM_END
    prompt = tok.apply_chat_template(MESSAGES[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")


def test_base_tokenizer_without_chat_tokens_gets_them_added():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.train_from_iterator(
        ["plain base model text"] * 3,
        trainer=trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<eos>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    base = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>")
    assert base.chat_template is None
    tok, added = apply_training_template(base)
    assert added == ["<|im_start|>", "<|im_end|>"]
    assert tok.chat_template == TRAINING_TEMPLATE and tok.eos_token == IM_END and tok.pad_token == "<eos>"
    ids, labels = tokenize_with_labels(tok, MESSAGES)
    assert tok.convert_tokens_to_ids(IM_END) in [t for t in labels if t != -100]


def test_template_without_markers_is_refused():
    tok = build_tiny_tokenizer(1024)
    assert not has_generation_markers(tok.chat_template)
    with pytest.raises(TemplateError, match="generation"):
        apply_training_template(tok, "{% for m in messages %}{{ m['content'] }}{% endfor %}")

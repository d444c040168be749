"""The transformers backend: generation contracts and exact target scoring."""

from __future__ import annotations

import math

import pytest
import torch

from deepwriter.llm.base import Sampling, ScoreRequest, TokenLogprobs, clipped_mean_nll, scored_token_range
from deepwriter.llm.hf import TransformersGenerator, TransformersScorer, render_prompt

PROMPTS = [[{"role": "user", "content": "Write a line about rain."}], [{"role": "user", "content": "A toast, please."}]]


@pytest.fixture(scope="module")
def gen(tiny_model):
    model, tok = tiny_model
    return TransformersGenerator(model, tok, model_id="tiny")


def test_greedy_with_n_returns_n_identical_texts(gen):
    out = gen.generate(PROMPTS, Sampling(temperature=0, max_new_tokens=6), n=3)
    assert [len(g) for g in out] == [3, 3]
    assert all(len({x.text for x in g}) == 1 for g in out)
    assert all(x.completion_tokens == 6 and x.finish_reason == "length" for g in out for x in g)


def test_seeded_sampling_is_reproducible_and_prefill_is_not_repeated(gen):
    s = Sampling(temperature=1.0, top_p=0.95, max_new_tokens=8, seed=11)
    a = gen.generate(PROMPTS, s, n=2, prefill=["<think>\nOkay", "<think>\nAlright"])
    b = gen.generate(PROMPTS, s, n=2, prefill=["<think>\nOkay", "<think>\nAlright"])
    assert [[x.text for x in g] for g in a] == [[x.text for x in g] for g in b]
    assert not any(x.text.startswith("<think>") for g in a for x in g)


def _forward_logprobs(model, ids):
    """Log-prob of every token of `ids` but the first, from one full forward pass."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.float(), -1)[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()


def test_scorer_matches_a_full_forward_pass(tiny_model):
    model, tok = tiny_model
    scorer = TransformersScorer(model, tok, model_id="tiny")
    req = ScoreRequest(PROMPTS[0], "<think>\nshort plan\n</think>\n", "Soft rain on the roof.")
    lp = scorer.score([req])[0]
    text = render_prompt(tok, req.messages, req.assistant_prefix) + req.target
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    first, last = scored_token_range(enc["offset_mapping"], len(text) - len(req.target), len(text))
    ref = _forward_logprobs(model, enc["input_ids"])[first - 1 : last - 1]
    assert len(lp) == last - first > 3 and lp.context_tokens == first
    assert lp.logprobs == pytest.approx(ref, abs=1e-4)


def test_scored_token_range_is_the_references_rule():
    # tokens "ab" "cd" "e" "fg" at characters [0,2) [2,4) [4,5) [5,7)
    offsets = [(0, 2), (2, 4), (4, 5), (5, 7)]
    assert scored_token_range(offsets, 2, 5) == (1, 3)  # on token boundaries: exactly the target's tokens
    assert scored_token_range(offsets, 3, 5) == (1, 3)  # a token straddling the target's start counts
    assert scored_token_range(offsets, 2, 6) == (1, 4)  # and so does one straddling its end
    assert scored_token_range(offsets, 4, 4) == (2, 3)  # an empty target: the one token at its place
    # special tokens without characters (0, 0) before the text do not move the range
    assert scored_token_range([(0, 0)] + offsets, 2, 5) == (2, 4)
    # a tokenizer whose offsets leave out a token's leading space: the token before is taken (the
    # reference reads the same offsets, so the same token)
    assert scored_token_range([(0, 5), (6, 11)], 5, 11) == (0, 2)
    assert scored_token_range([], 0, 3) == (0, 0) and scored_token_range([(5, 7)], 2, 3) == (0, 0)


def straddling_request(tok, prompt, prefix: str, sentence: str, suffix: str = "") -> ScoreRequest:
    """A request whose target starts inside a token of `sentence` (as the whole rendered text
    tokenizes) and, when a suffix follows, ends inside one: the boundary cases of the scored-token rule.
    The text is the same whatever the split, so its tokens are too."""
    before = render_prompt(tok, prompt, prefix)
    full = before + sentence + suffix
    offsets = tok(full, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    inside = [(s, e) for s, e in offsets if s >= len(before) and e <= len(before) + len(sentence) and e - s >= 3]
    cut_start = inside[0][0] + 1
    cut_end = inside[-1][1] - 1 if suffix else len(before) + len(sentence)
    return ScoreRequest(prompt, prefix + full[len(before) : cut_start], full[cut_start:cut_end], full[cut_end:])


def test_tokens_straddling_the_targets_start_and_end_are_scored(tiny_model):
    model, tok = tiny_model
    scorer = TransformersScorer(model, tok, model_id="tiny")
    sentence = " The lighthouse keeper considered everything carefully tonight."
    req = straddling_request(tok, PROMPTS[0], "<think>\nplan\n</think>\n", sentence, "\n</answer>")
    text = render_prompt(tok, req.messages, req.assistant_prefix) + req.target + req.suffix
    start, end = len(text) - len(req.target + req.suffix), len(text) - len(req.suffix)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    first, last = scored_token_range(offsets, start, end)
    assert offsets[first][0] < start < offsets[first][1]  # the first scored token began in the context
    assert offsets[last - 1][0] < end < offsets[last - 1][1]  # the last one ends in the suffix
    lp = scorer.score([req])[0]
    assert lp.tokens == tok.convert_ids_to_tokens(enc["input_ids"][first:last])
    assert lp.logprobs == pytest.approx(_forward_logprobs(model, enc["input_ids"])[first - 1 : last - 1], abs=1e-4)
    # tokenizing context and target apart (the old rule) would score other tokens
    apart = tok(req.target, add_special_tokens=False)["input_ids"]
    assert apart != enc["input_ids"][first:last]


def test_clipped_mean_nll():
    lp = TokenLogprobs(tokens=list("abc"), logprobs=[-0.5, -3.0, 0.0])
    assert clipped_mean_nll(lp) == pytest.approx((0.5 + 2.0 + 0.0) / 3)
    assert clipped_mean_nll(lp, None, None) == pytest.approx(3.5 / 3)
    with pytest.raises(ValueError):
        clipped_mean_nll(TokenLogprobs())
    assert math.isfinite(clipped_mean_nll(TokenLogprobs(["x"], [-1e9])))


def test_per_prompt_seeds_make_a_prompts_samples_independent_of_its_batch(gen):
    """A prompt sampled with its own seed gives the same texts alone, first or last in a batch, and
    beside other prompts: the continuous scheduler's batches vary from run to run."""
    s = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=10)
    rain, toast = PROMPTS
    other = [{"role": "user", "content": "Describe, at some length, an old harbour town in winter."}]
    alone = gen.generate([rain], s, n=2, seeds=[7])
    first = gen.generate([rain, other, toast], s, n=2, seeds=[7, 8, 9])
    last = gen.generate([toast, other, rain], s, n=2, seeds=[9, 8, 7])
    texts = [x.text for x in alone[0]]
    assert texts == [x.text for x in first[0]] == [x.text for x in last[2]]
    assert [x.text for x in first[2]] == [x.text for x in last[0]]  # the toast, seed 9, either place
    assert texts[0] != texts[1]  # the n samples of one prompt are distinct streams
    assert [x.text for x in gen.generate([rain], s, n=2, seeds=[70])[0]] != texts


def test_row_seeded_sampler_draws_from_the_nucleus_at_its_frequencies():
    """The Gumbel-max sampler is temperature + top-p sampling: over many rows, tokens outside the
    nucleus never appear and those inside appear in proportion to their renormalised probability."""
    from deepwriter.llm.hf import RowSeededSampler

    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().repeat(4000, 1)
    picks = RowSeededSampler(range(4000), temperature=1.0, top_p=0.75)(None, logits).argmax(dim=-1)
    freq = torch.bincount(picks, minlength=4).float() / 4000
    # nucleus at 0.75: {0.5, 0.3} (0.5 alone is short of 0.75); renormalised 0.625 / 0.375
    assert freq[2] == 0 and freq[3] == 0
    assert abs(freq[0].item() - 0.625) < 0.03 and abs(freq[1].item() - 0.375) < 0.03
    # temperature 0.5 sharpens: p^2 renormalised over the full vocabulary
    hot = RowSeededSampler(range(4000), temperature=0.5, top_p=1.0)(None, logits).argmax(dim=-1)
    sharp = probs**2 / (probs**2).sum()
    freq = torch.bincount(hot, minlength=4).float() / 4000
    assert torch.allclose(freq, sharp, atol=0.03)

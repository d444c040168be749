"""The transformers backend: generation contracts and exact target scoring."""

from __future__ import annotations

import math

import pytest
import torch

from deepwriter.llm.base import Sampling, ScoreRequest, TokenLogprobs, clipped_mean_nll
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


def test_scorer_matches_a_full_forward_pass(tiny_model):
    model, tok = tiny_model
    scorer = TransformersScorer(model, tok, model_id="tiny")
    req = ScoreRequest(PROMPTS[0], "<think>\nshort plan\n</think>\n", "Soft rain on the roof.")
    lp = scorer.score([req])[0]
    ctx = tok(render_prompt(tok, req.messages, req.assistant_prefix), add_special_tokens=False)["input_ids"]
    tgt = tok(req.target, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ctx + tgt])).logits[0]
    ref = torch.log_softmax(logits.float(), -1)[len(ctx) - 1 : -1].gather(1, torch.tensor(tgt)[:, None])[:, 0]
    assert len(lp) == len(tgt)
    assert lp.logprobs == pytest.approx(ref.tolist(), abs=1e-4)


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

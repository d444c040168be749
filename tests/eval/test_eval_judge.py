"""The judge: JSON repair, re-asks, failed calls left unfinished, the disk cache, the constrained
local judge, and a real loopback HTTP judge server with injected faults."""

from __future__ import annotations

import json

import pytest

from deepwriter.config.eval import JudgeConfig, JudgePrice
from deepwriter.eval.benchmarks import hellobench as hb
from deepwriter.eval.benchmarks import longbench_write as lb
from deepwriter.eval.benchmarks import writingbench as wb
from deepwriter.eval.benchmarks.base import Item, Slot
from deepwriter.eval.judge import Judge
from deepwriter.eval.replies import extract_json, read_reply
from deepwriter.llm.base import Generation
from deepwriter.llm.constrained import ConstrainedJudgeBackend
from deepwriter.testing.judges import ScriptedJudge
from deepwriter.testing.repo import FIXTURES

FIX = FIXTURES / "bench"


def _lb_task(item_id="a", answer="Some answer."):
    return lb.judge_tasks(Item("lb", item_id, f"Write about {item_id}.", {"length": 50}), answer)[0]


def _judge(gen, tmp_path, **cfg) -> Judge:
    base = dict(max_concurrency=4, max_reasks=2)
    base.update(cfg)
    return Judge(lambda: gen, "scripted-judge", JudgeConfig(**base), tmp_path / "cache", constrained=False)


# --- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"a": 1}', {"a": 1}),
        ('Sure! ```json\n{"a": 1}\n``` hope that helps', {"a": 1}),
        ("{'a': 1, 'b': 'x'}", {"a": 1, "b": "x"}),  # a Python literal
        ('[{"checklist_id": 0, "evaluation_score": 1},]', [{"checklist_id": 0, "evaluation_score": 1}]),
        ('text {"score": 7, "reason": "ok",} more', {"score": 7, "reason": "ok"}),
    ],
)
def test_extract_json_repairs_common_mistakes(text, expected):
    assert extract_json(text) == expected


def test_extract_json_refuses_prose():
    with pytest.raises(ValueError, match="no JSON"):
        extract_json("The response is good, I give it a 4.")


def test_read_reply_checks_every_slot_against_its_allowed_values():
    task = _lb_task()
    good = {d: 4 for d in lb.DIMENSIONS}
    values, _ = read_reply(task, json.dumps({**good, "reason": "r"}))
    assert values == {d: 4.0 for d in lb.DIMENSIONS}
    with pytest.raises(ValueError, match="clarity: missing"):
        read_reply(task, json.dumps({d: 4 for d in lb.DIMENSIONS if d != "clarity"}))
    with pytest.raises(ValueError, match="relevance: 6 is out of range"):
        read_reply(task, json.dumps({**good, "relevance": 6}))
    with pytest.raises(ValueError, match="accuracy: 'good' is not a number"):
        read_reply(task, json.dumps({**good, "accuracy": "good"}))
    slot = Slot("s", hb.SCORES)
    assert slot.coerce("0.75") == 0.75 and slot.labels == ["0", "0.25", "0.5", "0.75", "1"]


@pytest.mark.parametrize(
    "reply",
    [
        # LongWriter's shape: the analysis is the JSON's first field (a raw line break inside it too)
        '{"Analysis": "Solid.\nBut thin in places.", "Relevance": 4, "Accuracy": 4, "Coherence": 4, '
        '"Clarity": 4, "Breadth and Depth": 4, "Reading Experience": 4}',
        # an analysis in prose first, quoting brackets and a small JSON fragment, then the verdict fenced
        "Analysis: the [Response] answers {the title} well; scores so far [4, 4].\n\n```json\n"
        '{"Analysis": "Solid.", "Relevance": 4, "Accuracy": 4, "Coherence": 4, "Clarity": 4, '
        '"Breadth and Depth": 4, "Reading Experience": 4}\n```',
        # prose analysis with an apostrophe and a quote, then a bare verdict with a trailing comma
        'The writer\'s "voice" is clear. Verdict: {"Relevance": 4, "Accuracy": 4, "Coherence": 4, "Clarity": 4, '
        '"Breadth and Depth": 4, "Reading Experience": 4, "Analysis": "Solid.",}',
    ],
)
def test_analysis_then_json_replies_parse(reply):
    values, reasons = read_reply(_lb_task(), reply)
    assert values == {d: 4.0 for d in lb.DIMENSIONS}
    assert reasons["relevance"].startswith("Solid.")  # the analysis is kept as the reason


def test_analysis_then_json_reports_the_verdicts_problem():
    reply = 'I count [1, 2] issues.\n{"Analysis": "ok", "Relevance": 4, "Accuracy": 9}'
    with pytest.raises(ValueError, match="accuracy: 9 is out of range.*coherence: missing"):
        read_reply(_lb_task(), reply)
    hb_item = Item("hb", "h", "Write.", {"checklists": ["a?", "b?"]})
    (task,) = hb.judge_tasks(hb_item, "Answer.")
    listed = "My reasoning first: item a is met {mostly}.\n[{'checklist_id': '0', 'reason': 'it\\'s met', "
    listed += "'evaluation_score': '1'}, {'checklist_id': '1', 'reason': 'no', 'evaluation_score': '0.25'}]"
    assert read_reply(task, listed)[0] == {"0": 1.0, "1": 0.25}  # a Python list after prose, as HelloBench asks


# --- free-JSON judge with a fake generator -----------------------------------------------------------


def test_bad_replies_are_asked_again_and_counted(tmp_path):
    gen = ScriptedJudge(bad_first={"Write about a.": ["I like it.", json.dumps({d: 9 for d in lb.DIMENSIONS})]})
    judge = _judge(gen, tmp_path)
    out = judge.run([_lb_task("a"), _lb_task("b")], show_progress=False)
    assert all(o.ok for o in out)
    assert out[0].reasks == 2 and out[0].calls == 3 and out[1].reasks == 0
    assert judge.stats.bad_replies == 2 and judge.stats.reasks == 2 and judge.stats.calls == 4
    assert out[0].reasons["relevance"] == "fine"


def test_a_judge_that_never_complies_is_a_recorded_failure(tmp_path):
    gen = ScriptedJudge(bad_first={"Write about a.": ["nope"] * 10})
    judge = _judge(gen, tmp_path, max_reasks=1)
    (o,) = judge.run([_lb_task("a")], show_progress=False)
    assert not o.ok and o.values == {} and o.error.startswith("bad reply: no JSON")
    assert judge.stats.failed == 1 and judge.stats.failures == {"bad reply": 1} and gen.calls == 2


class Flaky:
    model_id = "flaky"

    def __init__(self, fail_times, exc=True):
        self.fail_times, self.exc, self.calls = fail_times, exc, 0
        self.inner = ScriptedJudge()

    def generate(self, prompts, sampling, n=1, prefill=None, seeds=None):
        self.calls += 1
        if self.calls <= self.fail_times:
            if self.exc:
                raise ConnectionError("boom")
            return [[Generation(text="", finish_reason="error", error="HTTP 500")] for _ in prompts]
        return self.inner.generate(prompts, sampling, n)


@pytest.mark.parametrize("raise_exc", [True, False])
def test_a_failed_call_leaves_its_task_unfinished_with_no_retry_of_the_judges_own(tmp_path, raise_exc):
    """Retries belong to the endpoint (endpoint.max_retries); the judge sends each ask once. A call
    that fails is no verdict: the task is unfinished, not counted as a failure, and not cached, so a
    re-run with the judge back asks it again and finishes it."""
    gen = Flaky(fail_times=1, exc=raise_exc)
    judge = Judge(lambda: gen, "flaky", JudgeConfig(max_concurrency=1), tmp_path / "c", constrained=False)
    (o,) = judge.run([_lb_task()], show_progress=False)
    assert gen.calls == 1 and not o.ok and o.unfinished
    assert o.error.startswith("judge call failed: ") and ("boom" if raise_exc else "HTTP 500") in o.error
    assert judge.stats.unfinished == 1 and judge.stats.failed == 0 and judge.stats.call_errors == 1
    assert judge.stats.calls == 0 and (tmp_path / "c" / "calls.jsonl").read_text() == ""
    again = Judge(lambda: gen, "flaky", JudgeConfig(max_concurrency=1), tmp_path / "c", constrained=False)
    (o2,) = again.run([_lb_task()], show_progress=False)
    assert o2.ok and not o2.unfinished and gen.calls == 2


def test_a_judge_that_is_down_is_not_sent_every_task(tmp_path):
    """Once more tasks are unfinished than `stop_after` allows, the chunks not yet sent stay unsent."""
    gen = Flaky(fail_times=10**6, exc=False)
    judge = Judge(lambda: gen, "flaky", JudgeConfig(max_concurrency=1), tmp_path / "c", constrained=False)
    outs = judge.run([_lb_task(str(i)) for i in range(10)], show_progress=False, stop_after=0)
    assert gen.calls == 1  # one chunk of 4 x max_concurrency tasks went out, in one batched call
    assert all(o.unfinished for o in outs) and judge.stats.unfinished == 10
    assert sum(o.error.startswith("not sent: ") for o in outs) == 6
    allowed = Judge(
        lambda: Flaky(fail_times=10**6, exc=False),
        "flaky",
        JudgeConfig(max_concurrency=1),
        tmp_path / "c2",
        constrained=False,
    )
    outs = allowed.run([_lb_task(str(i)) for i in range(10)], show_progress=False, stop_after=None)
    assert not any(o.error.startswith("not sent: ") for o in outs)  # no budget given: every task is asked


def test_cache_makes_a_rerun_free_and_resumes_a_killed_run(tmp_path):
    tasks = [_lb_task(str(i)) for i in range(5)]
    prices = {"scripted-judge": JudgePrice(input_per_mtok=2.0, output_per_mtok=10.0)}
    gen = ScriptedJudge()
    first = _judge(gen, tmp_path, prices=prices).run(tasks, show_progress=False)
    assert gen.calls == 5 and all(o.calls == 1 for o in first)
    assert first[0].cost_usd == pytest.approx((100 * 2.0 + 20 * 10.0) / 1e6)
    cache = tmp_path / "cache" / "calls.jsonl"
    rec = json.loads(cache.read_text().splitlines()[0])
    assert {"model", "sample", "latency_s", "prompt_tokens", "completion_tokens", "seed", "temperature"} <= set(rec)

    factory_calls = []
    again = Judge(
        lambda: factory_calls.append(1), "scripted-judge", JudgeConfig(), tmp_path / "cache", constrained=False
    )
    second = again.run(tasks, show_progress=False)
    assert factory_calls == [] and again.stats.calls == 0 and again.stats.cache_hits == 5
    assert [o.values for o in second] == [o.values for o in first]

    # a run killed while writing: two complete entries and a torn third line
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:2]) + "\n" + lines[2][:30])
    gen3 = ScriptedJudge()
    resumed = _judge(gen3, tmp_path).run(tasks, show_progress=False)
    assert gen3.calls == 3 and all(o.ok for o in resumed)
    gen5 = ScriptedJudge()  # the entries written after the torn line are readable
    _judge(gen5, tmp_path).run(tasks, show_progress=False)
    assert gen5.calls == 0

    # another judge model, another temperature: no reuse
    gen4 = ScriptedJudge()
    _judge(gen4, tmp_path, temperature=0.7).run(tasks[:1], show_progress=False)
    assert gen4.calls == 1


def test_rate_limit_paces_call_starts(tmp_path):
    import time

    from deepwriter.eval.judge import RateLimiter

    limiter = RateLimiter(20.0)
    t0 = time.monotonic()
    for _ in range(6):
        limiter.wait()
    assert time.monotonic() - t0 >= 5 / 20 - 0.01
    gen = ScriptedJudge()
    judge = _judge(gen, tmp_path, rate_limit_rps=50.0)
    t0 = time.monotonic()
    assert all(o.ok for o in judge.run([_lb_task(str(i)) for i in range(6)], show_progress=False))
    assert time.monotonic() - t0 >= 5 / 50 - 0.01


# --- constrained local judge ---------------------------------------------------------------------


def test_constraint_automaton_on_token_ids():
    # fixed [1, 2], a choice among [7], [7, 8], [9]: no choice may end where another continues
    segments = [("fixed", [1, 2]), ("choice", [[7, 5], [7, 8, 5], [9, 5]]), ("fixed", [3])]
    nxt = ConstrainedJudgeBackend.allowed_next
    assert nxt(segments, [], eos=0) == [1]
    assert nxt(segments, [1], eos=0) == [2]
    assert nxt(segments, [1, 2], eos=0) == [7, 9]
    assert nxt(segments, [1, 2, 7], eos=0) == [5, 8]
    assert nxt(segments, [1, 2, 7, 8], eos=0) == [5]
    assert nxt(segments, [1, 2, 7, 8, 5], eos=0) == [3]
    assert nxt(segments, [1, 2, 9, 5, 3], eos=0) == [0]


def test_local_constrained_judge_always_parses_in_range(tiny_model, tmp_path):
    model, tok = tiny_model
    backend = ConstrainedJudgeBackend(model, tok, "tiny-qwen3", batch_size=4)
    hb_items = hb.load("hb", str(FIX / "hellobench"), tmp_path, [])
    wb_item = wb.load("wb", str(FIX / "writingbench.jsonl"), tmp_path, [])[0]
    tasks = [
        _lb_task("x", "A short answer."),
        _lb_task("y", "答案很短。"),
        hb.judge_tasks(hb_items[0], "Could you send it?")[0],
        *wb.judge_tasks(wb_item, "An outline.")[:2],
    ]
    for temperature in (0.0, 1.0):  # greedy and sampled: both stay inside the allowed values
        judge = Judge(
            lambda: backend,
            "tiny-qwen3",
            JudgeConfig(temperature=temperature, seed=3),
            tmp_path / f"c{temperature}",
            constrained=True,
        )
        outs = judge.run(tasks, show_progress=False)
        assert all(o.ok for o in outs), [o.error for o in outs]
        for task, o in zip(tasks, outs):
            assert set(o.values) == {s.name for s in task.slots}
            for s in task.slots:
                assert o.values[s.name] in s.allowed
            json.loads(o.raw)  # the forced JSON is valid as written
        assert judge.stats.calls == len(tasks)
    rerun = Judge(
        lambda: 1 / 0, "tiny-qwen3", JudgeConfig(temperature=1.0, seed=3), tmp_path / "c1.0", constrained=True
    )
    assert [o.values for o in rerun.run(tasks, show_progress=False)] == [o.values for o in outs]
    assert rerun.stats.calls == 0


class SchemaServer:
    """Stands for a server that decodes under the JSON schema it is sent (vLLM's structured output; the
    real one is in test_vllm_server.py): records the schemas and answers with the largest allowed value
    of each slot, or, as a server that ignores the schema, with ScriptedJudge's free reply."""

    def __init__(self, ignores_schema: bool = False):
        self.schemas, self.ignores_schema, self.free = [], ignores_schema, ScriptedJudge()

    def generate(self, prompts, sampling, n=1, json_schemas=None):
        self.schemas += list(json_schemas)
        if self.ignores_schema:
            return self.free.generate(prompts, sampling, n)
        reply = [json.dumps({k: max(v["enum"]) for k, v in s["properties"].items()}) for s in json_schemas]
        return [[Generation(text=r, prompt_tokens=50, completion_tokens=10)] * n for r in reply]


def test_json_schema_judge_sends_each_tasks_schema_and_reads_its_verdict(tmp_path):
    from deepwriter.eval.judge import verdict_schema

    hb_items = hb.load("hb", str(FIX / "hellobench"), tmp_path, [])
    wb_item = wb.load("wb", str(FIX / "writingbench.jsonl"), tmp_path, [])[0]
    tasks = [_lb_task("x"), hb.judge_tasks(hb_items[0], "Sent.")[0], *wb.judge_tasks(wb_item, "An outline.")[:2]]
    server = SchemaServer()
    judge = Judge(lambda: server, "served", JudgeConfig(), tmp_path / "c", constrained=False, json_schema=True)
    outs = judge.run(tasks, show_progress=False)
    assert server.schemas == [verdict_schema(t.slots) for t in tasks]
    lb_schema = server.schemas[0]
    assert lb_schema["required"] == [s.name for s in lb.SLOTS] and lb_schema["additionalProperties"] is False
    assert lb_schema["properties"]["relevance"] == {"enum": [1, 2, 3, 4, 5]}
    assert all(o.ok for o in outs) and judge.stats.bad_replies == 0
    for task, o in zip(tasks, outs):
        assert o.values == {s.name: max(s.allowed) for s in task.slots}
        assert set(o.reasons.values()) == {"JSON-schema judge: score only"}
    # the same tasks asked free are other calls (the mode is in the cache key), and free replies of a
    # server that ignored the schema are still read, by each benchmark's own reader
    free = ScriptedJudge()
    judge = Judge(lambda: free, "served", JudgeConfig(), tmp_path / "c", constrained=False)
    assert all(o.ok for o in judge.run(tasks, show_progress=False)) and free.calls == 4
    again = Judge(lambda: 1 / 0, "served", JudgeConfig(), tmp_path / "c", constrained=False, json_schema=True)
    assert [o.values for o in again.run(tasks, show_progress=False)] == [o.values for o in outs]
    assert again.stats.calls == 0 and again.stats.cache_hits == 4  # and each mode finds its own replies
    ignored = SchemaServer(ignores_schema=True)
    judge = Judge(lambda: ignored, "served", JudgeConfig(), tmp_path / "d", constrained=False, json_schema=True)
    assert all(o.ok for o in judge.run(tasks, show_progress=False)) and len(ignored.schemas) == 4


def test_json_schema_goes_out_as_the_openai_response_format():
    from deepwriter.config.llm import EndpointConfig
    from deepwriter.eval.judge import verdict_schema
    from deepwriter.llm.base import Sampling
    from deepwriter.llm.openai_http import OpenAIGenerator

    gen = OpenAIGenerator(EndpointConfig(base_urls=["http://127.0.0.1:9/v1"], api_key_env=None), "m")
    schema = verdict_schema(lb.SLOTS)
    body = gen._body([{"role": "user", "content": "Judge."}], None, Sampling(), 1, schema)
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "verdict", "schema": schema, "strict": True},
    }
    assert "response_format" not in gen._body([{"role": "user", "content": "Judge."}], None, Sampling(), 1)


# --- a real loopback HTTP judge with faults ---------------------------------------------------------


def test_http_judge_survives_faults_and_counts_them(tmp_path):
    from deepwriter.config.llm import EndpointConfig
    from deepwriter.llm.openai_http import OpenAIGenerator
    from deepwriter.testing.loopback import FaultPlan, start_server

    scripted = ScriptedJudge(
        bad_first={
            "Write about t3.": ["not json at all"],
            "Write about t5.": [json.dumps({d: 0 for d in lb.DIMENSIONS})],
        }
    )
    # Timing-robust on a loaded machine: the timeout leaves a healthy (instant) reply seconds of
    # margin, so no good reply is ever lost to it (a lost reply would have consumed a scripted bad
    # reply server-side); the hang lasts far longer than the timeout (the server's shutdown ends it);
    # and 6 retries let one task absorb all six planned faults whatever order requests arrive in.
    plan = FaultPlan(
        sequence=["429", "500", "nonjson", "truncate", "drop", "hang"],
        retry_after_s=0.05,
        hang_s=120.0,
        always_for={"Write about doomed.": "500"},
    )
    with start_server(scripted, faults=plan) as server:
        endpoint = EndpointConfig(
            base_urls=[server.url],
            model="scripted-judge",
            max_concurrency=4,
            timeout_s=4.0,
            max_retries=6,
            backoff_s=0.01,
        )
        client = OpenAIGenerator(endpoint, model_id="scripted-judge")
        judge = Judge(
            lambda: client, "scripted-judge", JudgeConfig(max_concurrency=4), tmp_path / "cache", constrained=False
        )
        tasks = [_lb_task(f"t{i}") for i in range(8)] + [_lb_task("doomed")]
        outs = judge.run(tasks, show_progress=False)
        assert all(o.ok for o in outs[:8]), [o.error for o in outs]
        assert all(set(o.values) == set(lb.DIMENSIONS) for o in outs[:8])
        doomed = outs[8]
        assert not doomed.ok and doomed.unfinished and "gave up after 7 attempts" in doomed.error
        assert judge.stats.failed == 0 and judge.stats.unfinished == 1 and judge.stats.ok == 8
        assert judge.stats.bad_replies == 2 and judge.stats.reasks == 2
        # The six planned faults, and the doomed task's calls: max_retries + 1 = 7 attempts, no more
        # (one retry policy: the judge adds none on top of the endpoint's).
        assert server.stats.faults["500"] == 1 + 7 and sum(server.stats.faults.values()) == 6 + 7
        requests_before = server.stats.requests

        again = Judge(lambda: client, "scripted-judge", JudgeConfig(), tmp_path / "cache", constrained=False)
        outs2 = again.run(tasks[:8], show_progress=False)
        assert server.stats.requests == requests_before and again.stats.calls == 0
        assert [o.values for o in outs2] == [o.values for o in outs[:8]]


def test_local_judge_fails_an_over_long_task_alone(tiny_model, tmp_path):
    model, tok = tiny_model
    backend = ConstrainedJudgeBackend(model, tok, "tiny-qwen3")
    long_answer = "word " * (model.config.max_position_embeddings + 10)
    judge = Judge(lambda: backend, "tiny-qwen3", JudgeConfig(), tmp_path / "c", constrained=True)
    short, too_long = judge.run([_lb_task("s", "Short."), _lb_task("l", long_answer)], show_progress=False)
    assert short.ok and not too_long.ok and too_long.unfinished  # no verdict on what the judge cannot see
    assert too_long.error.startswith("local judge failed: ValueError: the judge prompt has")
    assert judge.stats.unfinished == 1 and judge.stats.failed == 0
    assert judge.stats.calls == 1  # the failure is not cached


@pytest.mark.parametrize("status", ["401", "404"])
def test_a_judge_endpoint_that_refuses_stops_at_its_first_answer(tmp_path, status):
    """A wrong key or model name is no outage: the judge stops at the first refusal with the endpoint's
    line, instead of sending every task and leaving each one unfinished."""
    from deepwriter.config.llm import EndpointConfig
    from deepwriter.llm.openai_http import OpenAIGenerator
    from deepwriter.llm.openai_http.transport import EndpointRefused
    from deepwriter.testing.loopback import FaultPlan, start_server

    with start_server(ScriptedJudge(), faults=FaultPlan(always_for={"Write about": status})) as server:
        endpoint = EndpointConfig(base_urls=[server.url], model="scripted-judge", max_concurrency=1, max_retries=3)
        client = OpenAIGenerator(endpoint, model_id="scripted-judge")
        cfg = JudgeConfig(max_concurrency=1)
        judge = Judge(lambda: client, "scripted-judge", cfg, tmp_path / "c", constrained=False)
        with pytest.raises(EndpointRefused, match=f"HTTP {status}"):
            judge.run([_lb_task(f"t{i}") for i in range(6)], show_progress=False)
        assert server.stats.faults[status] == 1 and server.stats.requests == 1

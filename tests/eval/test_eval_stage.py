"""The whole eval stage: tiny-qwen3 answers the fixture benchmarks, a real loopback HTTP judge with
injected faults scores them; outputs, counts, resume and the cached re-run."""

from __future__ import annotations

import json

import pytest

from deepwriter.config.eval import BenchmarkConfig, HelloBenchConfig
from deepwriter.config.llm import Backend, EndpointConfig, ModelSource
from deepwriter.core.contract import StageContext
from deepwriter.testing.judges import ScriptedJudge
from deepwriter.testing.repo import FIXTURES, compose_typed

FIX = FIXTURES / "bench"


class RecordingTracker:
    def __init__(self):
        self.tables, self.logs, self.images, self.summaries = {}, [], [], {}

    def log(self, data, step=None):
        self.logs.append(data)

    def table(self, name, columns, rows):
        self.tables[name] = (columns, rows)

    def image(self, name, path):
        self.images.append(name)

    def summary(self, data):
        self.summaries.update(data)


def _cfg(tmp_path, model_cache, judge_url):
    cfg = compose_typed(
        "model@models.student=tiny-qwen3",
        "eval=shared",
        "eval.model_under_test=student",
        f"paths.cache_dir={model_cache}",
        f"paths.data_dir={tmp_path}/data",
        "eval.batch_size=2",
        "eval.judge.max_concurrency=4",
    )
    gen = dict(max_new_tokens=12, temperature=0.8, top_p=0.95)
    cfg.eval.benchmarks = {
        "longbench_write": BenchmarkConfig(
            kind="longbench_write", path=str(FIX / "longbench_write.jsonl"), limit=2, **gen
        ),
        "hellobench": HelloBenchConfig(
            kind="hellobench",
            path=str(FIX / "hellobench"),
            limit=None,
            **gen,
            groups={"HB-A": ["chat"], "HB-B": ["heuristic_text_generation"]},
        ),
        "writingbench": BenchmarkConfig(kind="writingbench", path=str(FIX / "writingbench.jsonl"), limit=None, **gen),
    }
    cfg.models.judge.backend = Backend.openai
    # The timeout must pass a slow but healthy reply on a loaded 2-core machine (the server shares
    # this process with the tiny model) and still catch the injected hang, which lasts longer. A
    # healthy reply the client gave up on would hide the scripted bad first reply from the counts.
    cfg.models.judge.endpoint = EndpointConfig(
        base_urls=[judge_url],
        model="scripted-judge",
        max_concurrency=4,
        timeout_s=5.0,
        # enough attempts for one task to meet every fault of the plan's sequence: calls go out per
        # benchmark (each its own sampling), so a small benchmark's few tasks may meet several in a row
        max_retries=5,
        backoff_s=0.01,
        api_key_env=None,
    )
    return cfg


@pytest.mark.slow  # starts a run or a server: `make test` only, not test-fast
def test_eval_stage_against_a_faulty_http_judge(tmp_path, model_cache):
    from deepwriter.eval import stage
    from deepwriter.testing.loopback import FaultPlan, start_server

    # The judge misbehaves: transport faults, a reply with no JSON, an out-of-range score, and one
    # WritingBench query whose every call fails: that item is unfinished (no score, no failure), which
    # max_unfinished_share=0.2 allows here; with 0 the stage fails.
    scripted = ScriptedJudge(
        bad_first={
            "Write a sonnet about trains.": ['{"score": 11, "reason": "too good"}'],
            "Rewrite in plain English": ["Looks fine to me."],
        }
    )
    plan = FaultPlan(
        sequence=["429", "500", "nonjson", "truncate", "hang"],
        retry_after_s=0.05,
        hang_s=12.0,
        always_for={"lesson plan on fractions": "500"},
    )
    out = tmp_path / "eval"
    out.mkdir()
    with start_server(scripted, faults=plan) as server:
        cfg = _cfg(tmp_path, model_cache, server.url)
        cfg.eval.max_unfinished_share = 0.2
        tracker = RecordingTracker()
        ctx = StageContext("eval", out, {}, tmp_path, tracker, "key")
        result = stage.run(cfg, ctx)

        c = result.counts
        assert c["items"] == 2 + 3 + 4 and c["generated"] == 9
        assert c["judge_tasks"] == 2 + 3 + 4 * 5
        assert c["judge_failures"] == 0 and c["unfinished"] == 1  # the doomed query: no verdict at all
        assert result.unfinished["ids"] == ["writingbench/4"] and "HTTP 500" in result.unfinished["last_error"]
        assert c["judge_reasks"] == 2
        assert sum(server.stats.faults.values()) >= 5
        summary = json.loads((out / "summary.json").read_text())
        js = summary["judge_stats"]
        assert js["bad_replies"] == 2 and js["ok"] == c["judge_tasks"] - 5 and js["unfinished"] == 5
        assert summary["benchmarks"]["writingbench"]["unfinished"] == ["4"] and summary["unfinished"]["count"] == 1

        # each benchmark's judge sampling reached the HTTP judge, as its reference sets it (the seed
        # where the reference sends none: eval.judge.seed)
        sent = {}
        for prompt, s in scripted.samplings:
            bench = "lb" if "six dimensions" in prompt else "hb" if "checklist items to assess" in prompt else "wb"
            sent.setdefault(bench, set()).add((s.temperature, s.top_p, s.max_new_tokens, s.seed))
        seed = cfg.eval.judge.seed
        assert sent == {"lb": {(0.5, 1.0, 1024, seed)}, "hb": {(0.8, 1.0, 4096, 42)}, "wb": {(1.0, 0.95, 2048, seed)}}
        assert summary["benchmarks"]["hellobench"]["judge_settings"]["seed"] == 42

        # scores follow from the scripted judge: LB dims all 4 -> S_q 75; HB all 0.75 -> 75; WB 7
        lb = summary["benchmarks"]["longbench_write"]["summary"]
        assert lb["S_q"] == pytest.approx(75.0) and lb["judged"] == 2
        assert lb["S"] == pytest.approx((lb["S_l"] + 75.0) / 2)
        hb = summary["benchmarks"]["hellobench"]["summary"]
        assert hb["overall"] == pytest.approx(75.0) and hb["overall_rescaled"] == pytest.approx(0.0)
        wbs = summary["benchmarks"]["writingbench"]["summary"]
        assert wbs["failures"] == 0 and wbs["scored"] == 3
        assert "E" not in wbs["domains"]  # its only item is unfinished: no score, not a zero
        assert wbs["domains"]["A"]["score"] == pytest.approx(7.0)
        assert summary["headline"]["LB"] == pytest.approx(lb["S"])
        assert summary["headline"]["HB-A"] == pytest.approx(75.0) and summary["headline"]["WB-D"] == pytest.approx(70.0)

        # per-item records carry answers, the judge's reasons and the failure
        wb_items = [json.loads(l) for l in (out / "items" / "writingbench.jsonl").read_text().splitlines()]
        assert [r["id"] for r in wb_items] == ["1", "2", "3"]  # the unfinished one has no record
        sonnet = next(r for r in wb_items if r["id"] == "3")
        # the bad first reply goes to whichever of the sonnet's criteria is asked first (they are judged
        # concurrently): that one criterion is re-asked once, and every criterion ends with a real verdict
        reasks = {k: v["reasks"] for k, v in sonnet["judge"].items()}
        assert sorted(reasks.values()) == [0] * (len(reasks) - 1) + [1], reasks
        assert all(c["reason"] == "solid" for c in sonnet["criteria"])
        gens = [json.loads(l) for l in (out / "items" / "longbench_write.generations.jsonl").read_text().splitlines()]
        assert [g["id"] for g in gens] == ["0000", "0001"] and all(g["model"] == "tiny-qwen3" for g in gens)

        # tables, plots, W&B
        md = (out / "tables" / "paper.md").read_text()
        assert md.splitlines()[0] == "| run | LB | HB-A | HB-B | WB-A | WB-D |"  # no finished E item
        assert "HB-A = mean of the HelloBench subset means of chat (HelloBench defines" in md  # the configured groups
        assert "HB-B = mean of the HelloBench subset means of heuristic_text_generation (HelloBench" in md
        # the paper's figures beside the run's, marked as the paper's, in a table of their own
        reported = md.split("### Reported in the REER paper (not this run)")[1]
        assert "| paper: DeepWriter-8B | 91.28 | 82.60 | 87.48 | 72.20 |  |  | 70.60 |  | 72.30 |" in reported
        assert "arXiv 2509.06160" in reported and "| run |" not in reported
        assert tracker.summaries["paper/DeepWriter-8B/LB"] == pytest.approx(91.28)
        assert tracker.summaries["paper/GPT-4o/HB-A"] == pytest.approx(83.7)
        assert not any(k.startswith("eval/") and "paper" in k for k in tracker.summaries)
        assert tracker.tables["eval/paper_reported"][1][0][0] == "paper: DeepWriter-8B"
        assert (out / "tables" / "paper.csv").exists() and "rescaled (x−75)·4" in (
            out / "tables" / "details.md"
        ).read_text()
        assert (out / "plots" / "radar.png").stat().st_size > 1000
        assert (out / "plots" / "writingbench_domains.png").exists()
        assert set(tracker.tables) == {
            "eval/longbench_write/items",
            "eval/hellobench/items",
            "eval/writingbench/items",
            "eval/paper_reported",
        }
        assert any("eval/LB" in d for d in tracker.logs) and "eval/plot_radar" in tracker.images
        assert set(result.artifacts.values()) >= {"summary.json", "tables/paper.md", "plots/radar.png"}
        for rel in result.artifacts.values():
            assert (out / rel).exists(), rel

        # a re-run: nothing generated, only the unfinished tasks go back to the judge, each sent
        # max_retries + 1 = 6 times (the endpoint's retries, no judge retries on top)
        requests = server.stats.requests
        again = stage.run(cfg, StageContext("eval", out, {}, tmp_path, RecordingTracker(), "key"))
        assert again.counts["generated"] == 0 and again.counts["unfinished"] == 1
        assert again.counts["judge_cache_hits"] == c["judge_tasks"] - 5 + 2  # + the two re-asked first replies
        assert again.counts["judge_calls"] == 0 and again.counts["judge_failures"] == 0
        assert server.stats.requests - requests == 5 * 6
        assert json.loads((out / "summary.json").read_text())["headline"] == summary["headline"]

        # with no unfinished item allowed the stage fails, naming the count and the server's error
        from deepwriter.core.errors import UnfinishedError

        cfg.eval.max_unfinished_share = 0.0
        with pytest.raises(UnfinishedError, match=r"^eval: 1 of 9 items unfinished: .*HTTP 500"):
            stage.run(cfg, StageContext("eval", out, {}, tmp_path, RecordingTracker(), "key"))


def test_eval_stage_cached_rerun_makes_zero_judge_calls_and_resumes_generation(tmp_path, model_cache):
    from deepwriter.eval import stage
    from deepwriter.testing.loopback import start_server

    out = tmp_path / "eval"
    out.mkdir()
    with start_server(ScriptedJudge()) as server:
        cfg = _cfg(tmp_path, model_cache, server.url)
        cfg.eval.benchmarks = {
            "demo": BenchmarkConfig(
                kind="longbench_write", path="pkg://deepwriter/eval/demo/prompts.jsonl", max_new_tokens=8
            )
        }
        first = stage.run(cfg, StageContext("eval", out, {}, tmp_path, RecordingTracker(), "k"))
        assert first.counts["generated"] == 3 and first.counts["judge_calls"] == 3
        assert set(first.metrics) == {"demo"}

        # a killed run: one answer written, one torn line
        gen_file = out / "items" / "demo.generations.jsonl"
        lines = gen_file.read_text().splitlines()
        gen_file.write_text(lines[0] + "\n" + lines[1][:20])
        requests = server.stats.requests
        second = stage.run(cfg, StageContext("eval", out, {}, tmp_path, RecordingTracker(), "k"))
        assert second.counts["generated"] == 2  # the torn and the missing one
        # same sampling seed per item position: the answers and so the judge prompts are the same again
        assert second.counts["judge_calls"] + second.counts["judge_cache_hits"] == 3
        third = stage.run(cfg, StageContext("eval", out, {}, tmp_path, RecordingTracker(), "k"))
        assert third.counts["generated"] == 0 and third.counts["judge_calls"] == 0
        assert server.stats.requests == requests + second.counts["judge_calls"]


def test_model_under_test_is_the_sft_output_or_the_student(tmp_path):
    from deepwriter.config.root import ConfigError
    from deepwriter.eval.stage import model_under_test

    cfg = compose_typed("model@models.student=tiny-qwen3")
    ctx = StageContext("eval", tmp_path, {"sft": tmp_path / "abcdef0123"}, tmp_path, None, "k")
    m = model_under_test(cfg, ctx)
    assert (
        m.source == ModelSource.local
        and m.path == str(tmp_path / "abcdef0123" / "model")
        and m.backend == Backend.transformers
    )
    cfg.eval.model_under_test = "student"
    assert model_under_test(cfg, ctx) is cfg.models.student
    cfg.eval.model_under_test = "teacher"
    with pytest.raises(ConfigError, match="eval.model_under_test"):
        model_under_test(cfg, ctx)


class ThinkingWriter:
    """A model under test behind an HTTP endpoint that thinks before it answers."""

    model_id = "writer"

    def __init__(self):
        self.samplings = []

    def generate(self, prompts, sampling, n=1, prefill=None, seeds=None):
        from deepwriter.llm.base import Generation

        self.samplings.append(sampling)
        return [
            [
                Generation(
                    text=f"<think>\nsecret plan {i}\n</think>\n\nThe answer is here.",
                    prompt_tokens=10,
                    completion_tokens=12,
                )
            ]
            for i, _ in enumerate(prompts)
        ]


def test_http_model_under_test_thinking_is_kept_but_never_judged(tmp_path, model_cache):
    from deepwriter.eval import stage
    from deepwriter.testing.loopback import start_server

    writer, judge = ThinkingWriter(), ScriptedJudge()
    with start_server(writer) as wserver, start_server(judge) as jserver:
        cfg = _cfg(tmp_path, model_cache, jserver.url)
        cfg.eval.benchmarks["longbench_write"].temperature = 0.5
        cfg.eval.benchmarks["writingbench"].temperature = 0.7
        cfg.models.student.backend = Backend.openai
        cfg.models.student.endpoint = EndpointConfig(
            base_urls=[wserver.url],
            model="writer",
            api_key_env=None,
            max_concurrency=4,
            timeout_s=5.0,
            max_retries=1,
            backoff_s=0.01,
        )
        out = tmp_path / "eval"
        out.mkdir()
        result = stage.run(cfg, StageContext("eval", out, {}, tmp_path, RecordingTracker(), "k"))
    assert result.counts["generated"] == 9 and result.counts["judge_failures"] == 0
    recs = [json.loads(l) for l in (out / "items" / "longbench_write.jsonl").read_text().splitlines()]
    assert recs[0]["answer"] == "The answer is here." and recs[0]["thinking"] == "secret plan 0"
    assert recs[0]["produced_length"] == 4 and recs[0]["think_closed"] is True
    assert judge.seen and not any("secret plan" in p or "<think>" in p for p in judge.seen)
    assert sorted({s.temperature for s in writer.samplings}) == [0.5, 0.7, 0.8]  # each benchmark's own sampling
    assert {s.max_new_tokens for s in writer.samplings} == {12}
    wb_recs = [json.loads(l) for l in (out / "items" / "writingbench.jsonl").read_text().splitlines()]
    assert wb_recs and all(r["answer"] == "The answer is here." for r in wb_recs)  # WritingBench's own cut


def test_each_benchmark_judges_the_part_of_the_output_its_own_code_cuts():
    from deepwriter.eval.benchmarks import hellobench, longbench_write, writingbench
    from deepwriter.eval.stage import judged_answer

    # a thinking block closed without a blank line: WritingBench (evaluate_benchmark.py) judges the whole
    # output; the others judge the answer after the last </think>
    rec = {"output": "<think>\nplan\n</think>\nThe answer.", "answer": "The answer."}
    assert judged_answer(writingbench, rec) == "<think>\nplan\n</think>\nThe answer."
    assert judged_answer(longbench_write, rec) == judged_answer(hellobench, rec) == "The answer."
    rec = {"output": "<think>\np</think>\n\nA </think>\n\nB", "answer": "B"}
    assert judged_answer(writingbench, rec) == "A </think>\n\nB"  # cut at the first close


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>\nplan\n</think>\n\nAnswer.", ("plan", "Answer.", True)),
        ("plan after a prefilled tag\n</think>\nAnswer.", ("plan after a prefilled tag", "Answer.", True)),
        ("<think>\nran out of tokens while thinking", ("ran out of tokens while thinking", "", False)),
        ("Just an answer.", ("", "Just an answer.", True)),
        ("<think>\na</think>\nb</think>\nthe answer", ("a</think>\nb", "the answer", True)),  # the last close
    ],
)
def test_think_split_and_the_turn_format_round_trip(text, expected):
    from deepwriter.core import think

    assert tuple(think.split(text)) == expected
    thinking, answer, closed = expected
    if closed and thinking:
        assert think.split(think.turn(thinking, answer)) == (thinking, answer, True)
    assert think.turn("t", "a") == "<think>\nt\n</think>\n\na"


class SeedDependentJudge(ScriptedJudge):
    """Scores LongBench-Write's dimensions by the sampling seed (2, 3, 4, 2, …): judge samples differ."""

    def reply(self, messages, sampling=None) -> str:
        self.score = 2 + (sampling.seed % 3)
        return super().reply(messages, sampling)


@pytest.mark.slow  # the tiny model answers, a loopback judge is asked three times per item
def test_judge_samples_each_task_judged_n_times_scored_as_their_mean_with_intervals(tmp_path, model_cache):
    from deepwriter.eval import stage
    from deepwriter.testing.loopback import start_server

    out = tmp_path / "eval"
    out.mkdir()
    judge = SeedDependentJudge()
    with start_server(judge) as server:
        cfg = _cfg(tmp_path, model_cache, server.url)
        cfg.eval.benchmarks = {
            "demo": BenchmarkConfig(
                kind="longbench_write", path="pkg://deepwriter/eval/demo/prompts.jsonl", max_new_tokens=8
            )
        }
        once = stage.run(cfg, StageContext("eval", out, {}, tmp_path, RecordingTracker(), "k"))
        assert once.counts["judge_calls"] == 3

        # three judgments per task: the first is the one already cached (its key is unchanged), two are new
        cfg.eval.judge_samples = 3
        tracker = RecordingTracker()
        thrice = stage.run(cfg, StageContext("eval", out, {}, tmp_path, tracker, "k"))
        c = thrice.counts
        assert c["generated"] == 0 and c["judge_tasks"] == 9
        assert c["judge_calls"] == 6 and c["judge_cache_hits"] == 3
        seed = cfg.eval.judge.seed
        assert {s.seed for _, s in judge.samplings} == {seed, seed + 1, seed + 2}  # each sample its own seed
        again = stage.run(cfg, StageContext("eval", out, {}, tmp_path, RecordingTracker(), "k"))
        assert again.counts["judge_calls"] == 0 and again.counts["judge_cache_hits"] == 9

    recs = [json.loads(line) for line in (out / "items" / "demo.jsonl").read_text().splitlines()]
    scores = [2 + (s % 3) for s in (seed, seed + 1, seed + 2)]  # dimension scores of the three judgments
    for r in recs:
        assert [j["S_q"] for j in r["judge_samples"]] == [(v - 1) * 25 for v in scores]
        assert r["S_q"] == pytest.approx(sum((v - 1) * 25 for v in scores) / 3)  # the item scores their mean
        assert set(r["judge"]) == {"quality", "quality@1", "quality@2"}
    summary = json.loads((out / "summary.json").read_text())
    iv = summary["intervals"]["demo"]
    assert summary["judge_samples"] == 3 and iv["samples"] == 3 and iv["n"] == 3
    assert iv["low"] <= summary["headline"]["demo"] <= iv["high"]
    assert tracker.summaries["eval/demo_ci_low"] == iv["low"] and tracker.summaries["eval/demo_ci_high"] == iv["high"]
    md = (out / "tables" / "paper.md").read_text()
    assert f"| {summary['headline']['demo']:.2f} [{iv['low']:.2f}, {iv['high']:.2f}] |" in md
    assert "95% bootstrap interval" in md
    # the judge's agreement with itself: its samples differ by seed alone, never by item, so α ≈ 0
    agree = summary["benchmarks"]["demo"]["judge_agreement"]
    assert agree["items"] == 3 and agree["judgments_per_item"] == 3 and agree["alpha"] < 0.1
    assert [d["spread"] for d in agree["most_disagreed"]] == [50.0] * 3
    assert tracker.summaries["eval/demo/judge_alpha"] == agree["alpha"]


class PanelScriptedJudge(ScriptedJudge):
    """Scores each demo prompt its own way (poem 1, email 3, explanation 5 on every dimension); asked
    with another seed (the panel's second judge), it gives the explanation 1 instead: the one item on
    which the panel disagrees."""

    BY_PROMPT = {"first snow": 1, "Thursday's meeting": 3, "sky is blue": 5}

    def __init__(self, base_seed):
        super().__init__()
        self.base_seed = base_seed

    def reply(self, messages, sampling=None) -> str:
        first = next(m["content"] for m in messages if m["role"] == "user")
        self.score = next(v for k, v in self.BY_PROMPT.items() if k in first)
        if sampling.seed != self.base_seed and "sky is blue" in first:
            self.score = 1
        return super().reply(messages, sampling)


@pytest.mark.slow  # the tiny model answers, a loopback judge is asked as two judges of a panel
def test_judge_panel_each_judge_kept_with_its_agreement_and_cached(tmp_path, model_cache):
    from deepwriter.config.eval import PanelJudgeConfig
    from deepwriter.eval import agreement, stage
    from deepwriter.testing.loopback import start_server

    out = tmp_path / "eval"
    out.mkdir()
    cfg = _cfg(tmp_path, model_cache, "http://127.0.0.1:1")  # the URL is set below, once the server is up
    judge = PanelScriptedJudge(base_seed=cfg.eval.judge.seed)
    with start_server(judge) as server:
        cfg.models.judge.endpoint.base_urls = [server.url]
        cfg.eval.benchmarks = {
            "demo": BenchmarkConfig(
                kind="longbench_write", path="pkg://deepwriter/eval/demo/prompts.jsonl", max_new_tokens=8
            )
        }
        cfg.eval.panel = [PanelJudgeConfig(label="reseeded", seed_offset=7)]
        tracker = RecordingTracker()
        first = stage.run(cfg, StageContext("eval", out, {}, tmp_path, tracker, "k"))
        assert first.counts["judge_calls"] == 3 and first.counts["panel_judge_calls"] == 3
        assert {s.seed for _, s in judge.samplings} == {cfg.eval.judge.seed, cfg.eval.judge.seed + 7}
        again = stage.run(cfg, StageContext("eval", out, {}, tmp_path, RecordingTracker(), "k"))
        assert again.counts["judge_calls"] == 0 and again.counts["panel_judge_calls"] == 0  # both cached

    recs = {r["id"]: r for r in (json.loads(line) for line in (out / "items" / "demo.jsonl").read_text().splitlines())}
    assert {i: (r["S_q"], r["panel"]["reseeded"]) for i, r in recs.items()} == {
        "demo-poem": (0.0, 0.0),
        "demo-email": (50.0, 50.0),
        "demo-explain": (100.0, 0.0),
    }
    summary = json.loads((out / "summary.json").read_text())
    assert summary["panel"] == ["judge", "reseeded"]
    assert summary["headline"]["demo"] is not None  # the headline is models.judge's alone
    agree = summary["benchmarks"]["demo"]["panel_agreement"]
    assert agree["judges"] == ["judge", "reseeded"] and agree["items"] == 3
    assert agree["alpha"] == pytest.approx(agreement.alpha([[0, 50, 100], [0, 50, 0]]))
    assert agree["alpha"] < 0.5
    top = agree["most_disagreed"][0]
    assert top == {"id": "demo-explain", "spread": 100.0, "scores": {"judge": 100.0, "reseeded": 0.0}}
    assert [d["spread"] for d in agree["most_disagreed"][1:]] == [0.0, 0.0]
    assert tracker.summaries["eval/demo/panel_alpha"] == agree["alpha"]
    assert summary["panel_stats"]["reseeded"]["cache_hits"] == 3  # the re-run's summary


def test_a_panel_judge_that_would_repeat_models_judge_is_refused_before_any_work():
    from deepwriter.config.eval import PanelJudgeConfig
    from deepwriter.config.root import ConfigError, RootConfig
    from deepwriter.eval import stage

    cfg = RootConfig()
    cfg.eval.panel = [PanelJudgeConfig(label="again")]
    with pytest.raises(ConfigError, match=r"eval.panel\[0\]: models.judge asked the same way"):
        stage.preflight(cfg)
    cfg.eval.panel = [PanelJudgeConfig(label="judge", seed_offset=1)]
    with pytest.raises(ConfigError, match=r"eval.panel\[0\].label: 'judge' is taken"):
        stage.preflight(cfg)

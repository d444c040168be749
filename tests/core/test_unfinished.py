"""A failure is never a result: stages that call models over HTTP leave the items whose calls failed
unfinished, exit non-zero through the real CLI, and a re-run does exactly the missing items. The
loopback server injects the faults a real server cannot be made to produce on cue (the real vLLM
outage is in test_vllm_server.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deepwriter.config.llm import Backend, EndpointConfig
from deepwriter.core.errors import UnfinishedError
from deepwriter.core.files import resolve_data_path
from deepwriter.core.records import read_records
from deepwriter.core.unfinished import Unfinished
from deepwriter.pipeline import runner as pipeline
from deepwriter.synthesis import store
from deepwriter.testing.repo import REPO, NullTracker, compose_typed
from deepwriter.testing.synthesis import write_pairs


def _pairs(path: Path, n: int) -> Path:
    return write_pairs(path, n, ids="p{i}")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_budget_arithmetic():
    u = Unfinished("s", "pairs", total=10, max_share=0.2)
    assert u.allowed == 2 and not u.over_budget()
    u.add("a", "boom")
    u.add("b", "")  # an item never started keeps the last real error
    u.check()  # 2 of 10 allowed
    assert u.as_dict() == {"count": 2, "total": 10, "max_share": 0.2, "ids": ["a", "b"], "last_error": "boom"}
    with pytest.raises(UnfinishedError, match=r"^s: 3 of 10 pairs unfinished: .*\(last: boom\)"):
        u.check(not_started=1)  # items never started always fail the stage
    u.add("c", "boom again")
    assert u.over_budget()
    with pytest.raises(UnfinishedError, match="3 of 10 pairs"):
        u.check()
    Unfinished("s", "pairs", total=3).check()  # nothing unfinished: fine


def _http_cfg(tmp_path: Path, model_cache: Path, url: str, *overrides: str):
    pairs = _pairs(tmp_path / "pairs.jsonl", 4)
    cfg = compose_typed(
        "+recipe=demo",
        "recipe.stages=[synthesize]",
        "model@models.generator=tiny-qwen3",
        "model@models.scorer=tiny-qwen3",
        f"paths.cache_dir={model_cache}",
        f"paths.runs_dir={tmp_path}/runs",
        f"data.pairs.path={pairs}",
        "synthesis.max_steps=1",
        "synthesis.initial.max_new_tokens=16",
        "synthesis.refine.max_new_tokens=8",
        "run_id=r",
        *overrides,
    )
    for role in ("generator", "scorer"):
        m = getattr(cfg.models, role)
        m.backend = Backend.openai
        m.endpoint = EndpointConfig(
            base_urls=[url],
            model="tiny-qwen3",
            api_key_env=None,
            max_concurrency=4,
            timeout_s=30.0,
            max_retries=1,
            backoff_s=0.01,
            logprobs_api="vllm_prompt_logprobs",
        )
    return cfg


@pytest.mark.slow  # starts a run or a server: `make test` only, not test-fast
def test_synthesis_over_http_leaves_failed_pairs_unfinished_and_resumes_them(tmp_path, model_cache, tiny_model):
    from deepwriter.llm.hf import TransformersGenerator, TransformersScorer
    from deepwriter.testing.loopback import FaultPlan, start_server

    model, tok = tiny_model
    backends = (TransformersGenerator(model, tok, "tiny-qwen3"), TransformersScorer(model, tok, "tiny-qwen3"))
    # every generate call of pair p2 fails: its search stops at the first call
    with start_server(*backends, faults=FaultPlan(always_for={"number 2 about": "503"})) as sick:
        cfg = _http_cfg(tmp_path, model_cache, sick.url)
        with pytest.raises(UnfinishedError, match=r"^synthesize: 1 of 4 pairs unfinished: .*HTTP 503") as err:
            pipeline.run_pipeline(cfg, NullTracker)
        assert sick.stats.faults["503"] == 2  # max_retries + 1 attempts, then the pair is left
    assert "re-run the same command" in str(err.value)
    st = pipeline.plan(cfg)["synthesize"]
    assert not st.finished() and not (st.out_dir / "manifest.json").exists()
    recs = list(read_records(store.shard_path(st.out_dir, 0, 1)))
    assert sorted(r["id"] for r in recs) == ["p0", "p1", "p3"]  # the rest are whole records

    # Allowed one unfinished pair in four: finished, listed, and a later stage's key says so.
    with start_server(*backends, faults=FaultPlan(always_for={"number 2 about": "503"})) as sick:
        shared = dataclasses.replace(cfg, synthesis=dataclasses.replace(cfg.synthesis, max_unfinished_share=0.25))
        shared.models.generator.endpoint.base_urls = [sick.url]
        shared.models.scorer.endpoint.base_urls = [sick.url]
        pipeline.run_pipeline(shared, NullTracker)
    manifest = json.loads((st.out_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["pairs"] == 3
    assert manifest["unfinished"]["ids"] == ["p2"] and manifest["unfinished"]["count"] == 1
    partial_mix_key = pipeline.plan(shared)["mix"].key
    assert pipeline.plan(shared)["mix"].input_hashes["stage:synthesize"] == st.key + "+unfinished:1"
    assert pipeline.plan(shared)["synthesize"].finished() and not pipeline.plan(cfg)["synthesize"].finished()

    # The server is well again and no unfinished pair is allowed: exactly p2 is searched.
    with start_server(*backends) as well:
        cfg.models.generator.endpoint.base_urls = [well.url]
        cfg.models.scorer.endpoint.base_urls = [well.url]
        pipeline.run_pipeline(cfg, NullTracker)
        chats = well.stats.by_path["/v1/chat/completions"]
    recs = list(read_records(store.shard_path(st.out_dir, 0, 1)))
    assert sorted(r["id"] for r in recs) == ["p0", "p1", "p2", "p3"] and len(recs) == 4
    assert recs[-1]["id"] == "p2" and chats >= 1
    manifest = json.loads((st.out_dir / "manifest.json").read_text())
    assert manifest["unfinished"] is None and manifest["counts"]["pairs"] == 4 and manifest["timing"]["resumed"]
    assert pipeline.plan(cfg)["mix"].key != partial_mix_key  # the mix of the whole output is another mix


@pytest.mark.slow  # starts a run or a server: `make test` only, not test-fast
def test_dead_server_stops_the_stage_after_one_batch_and_the_cli_exits_3(tmp_path, model_cache):
    """Nothing listens at the endpoint: the first batch's pairs fail after their retries, no other batch
    is started, and the CLI prints one line and exits 3."""
    from deepwriter.testing.vllm_server import free_port

    pairs = _pairs(tmp_path / "pairs.jsonl", 6)
    url = f"http://127.0.0.1:{free_port()}/v1"
    overrides = [
        "+recipe=demo",
        "recipe.stages=[synthesize]",
        f"paths.cache_dir={model_cache}",
        f"paths.runs_dir={tmp_path}/runs",
        f"data.pairs.path={pairs}",
        "synthesis.max_in_flight=2",
        "model@models.generator=tiny-qwen3",
        "model@models.scorer=tiny-qwen3",
        "models.generator.backend=openai",
        "models.scorer.backend=openai",
        f"models.generator.endpoint.base_urls=[{url}]",
        f"models.scorer.endpoint.base_urls=[{url}]",
        "models.generator.endpoint.max_retries=2",
        "models.generator.endpoint.backoff_s=0.01",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "deepwriter.train", *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    assert done.returncode == 3, done.stderr[-2000:]
    lines = [x for x in done.stderr.splitlines() if x.startswith("deepwriter:")]
    assert len(lines) == 1 and lines[0].startswith("deepwriter: unfinished: synthesize: 6 of 6 pairs unfinished")
    assert "ConnectError" in lines[0] and "re-run the same command" in lines[0]
    log = done.stdout + done.stderr  # Hydra sends the log to stdout
    assert "not starting the other 4" in log  # one batch of 2 was tried, then it stopped
    assert log.count("retry 2/2") == 2  # 2 pairs x (max_retries=2): attempts are the config's


def test_eval_model_under_test_failures_are_unfinished_items(tmp_path, model_cache, tiny_model):
    from deepwriter.config.eval import BenchmarkConfig
    from deepwriter.core.contract import StageContext
    from deepwriter.eval import stage
    from deepwriter.llm.hf import TransformersGenerator
    from deepwriter.testing.loopback import FaultPlan, start_server
    from deepwriter.tracking.runs import Tracker

    model, tok = tiny_model
    writer = TransformersGenerator(model, tok, "writer")
    cfg = compose_typed(
        "model@models.judge=tiny-qwen3",
        "eval.model_under_test=student",
        f"paths.cache_dir={model_cache}",
        "eval.batch_size=1",
    )
    cfg.eval.benchmarks = {
        "demo": BenchmarkConfig(
            kind="longbench_write", path="pkg://deepwriter/eval/demo/prompts.jsonl", max_new_tokens=8
        )
    }
    out = tmp_path / "eval"
    out.mkdir()
    prompts = [
        json.loads(x)["prompt"]
        for x in (resolve_data_path("pkg://deepwriter/eval/demo/prompts.jsonl")).read_text().splitlines()
    ]
    with start_server(writer, faults=FaultPlan(always_for={prompts[1][:30]: "500"})) as server:
        cfg.models.student.backend = Backend.openai
        cfg.models.student.endpoint = EndpointConfig(
            base_urls=[server.url], model="writer", api_key_env=None, max_retries=1, backoff_s=0.01
        )
        # the second item fails; with no unfinished item allowed the third is not started
        with pytest.raises(UnfinishedError, match=r"^eval: 2 of 3 items unfinished: .*model under test: .*HTTP 500"):
            stage.run(cfg, StageContext("eval", out, {}, tmp_path, Tracker(None), "k"))
    gens = [json.loads(x) for x in (out / "items" / "demo.generations.jsonl").read_text().splitlines()]
    assert [g["id"] for g in gens] == ["demo-poem"] and gens[0]["output"]  # no empty "answer" to judge
    assert not (out / "summary.json").exists()
    with start_server(writer) as server:
        cfg.models.student.endpoint.base_urls = [server.url]
        result = stage.run(cfg, StageContext("eval", out, {}, tmp_path, Tracker(None), "k"))
    assert result.counts["generated"] == 2 and result.counts["items"] == 3 and result.unfinished is None
    assert result.counts["judge_tasks"] == 3 and result.counts["unfinished"] == 0

"""The synthesize stage end to end over the tiny random model: shards, resume after kill -9, bad
input in strict and lenient mode, over-long answers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from deepwriter.config import ConfigError, RootConfig
from deepwriter.contract import StageContext
from deepwriter.llm.config import ModelConfig
from deepwriter.pairs.read import DataError
from deepwriter.records import RecordLog, RecordLogError, read_records
from deepwriter.synthesis import stage, store
from deepwriter.tracking import Tracker

REPO = Path(__file__).resolve().parent.parent
FIELDS = {"id": "id", "x": "request", "y": "answer", "category": "category"}


def tiny_model_config() -> ModelConfig:
    return OmegaConf.to_object(
        OmegaConf.merge(
            OmegaConf.structured(ModelConfig), OmegaConf.load(REPO / "deepwriter/conf/model/tiny-qwen3.yaml")
        )
    )


def make_cfg(pairs_path: Path, cache: Path, **synth) -> RootConfig:
    cfg = RootConfig()
    cfg.models.generator = tiny_model_config()
    cfg.models.scorer = tiny_model_config()
    cfg.paths.cache_dir = str(cache)
    cfg.data.pairs.path = str(pairs_path)
    cfg.data.pairs.fields = dict(FIELDS)
    cfg.synthesis.max_steps = 1
    cfg.synthesis.initial.max_new_tokens = 24
    cfg.synthesis.refine.max_new_tokens = 16
    for k, v in synth.items():
        setattr(cfg.synthesis, k, v)
    return cfg


def write_pairs(path: Path, n: int, extra_lines=()) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            f.write(
                json.dumps(
                    {
                        "id": f"p{i:03d}",
                        "request": f"Write a short note number {i} about the sea.",
                        "answer": f"Dear reader,\n\nThe sea was calm on day {i}. The light was warm.",
                        "category": "letter",
                    }
                )
                + "\n"
            )
        for line in extra_lines:
            f.write(line + "\n")
    return path


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ctx(out: Path) -> StageContext:
    return StageContext("synthesize", out, {}, out, Tracker(None), "test")


def test_stage_writes_records_and_resumes_without_work(tmp_path, model_cache, monkeypatch):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 3)
    cfg = make_cfg(pairs, model_cache)
    out = tmp_path / "out"
    res = stage.run(cfg, ctx(out))
    recs = list(read_records(store.shard_path(out, 0, 1)))
    assert sorted(r["id"] for r in recs) == ["p000", "p001", "p002"]
    for r in recs:
        assert set(r["verdict"]) == {"kept", "reason"} and r["models"]["generator"] == "tiny-qwen3"
        assert r["category"] == "letter" and r["answer_id"] == r["id"]  # one request per answer
    assert res.counts["pairs"] == 3 and res.counts["kept"] + res.counts["discarded"] == 3
    assert sum(v for k, v in res.counts.items() if k.startswith("discarded_")) == res.counts["discarded"]
    scored = [r for r in recs if r["scores"]]
    if scored:
        assert (out / res.artifacts["score_plot"]).stat().st_size > 1000
    # A second run finds every pair done and loads no model.
    monkeypatch.setattr(stage, "build_backends", lambda cfg: pytest.fail("backends built on a finished shard"))
    res2 = stage.run(cfg, ctx(out))
    assert res2.counts["pairs"] == 3
    assert len(list(read_records(store.shard_path(out, 0, 1)))) == 3


def test_shards_split_the_pairs_deterministically(tmp_path, model_cache, monkeypatch):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 20)
    seen = []
    for i in range(3):
        cfg = make_cfg(pairs, model_cache, shard=f"{i}/3")
        from deepwriter.pairs.read import load_pairs

        got, skipped = load_pairs(cfg.data.pairs, True)
        seen.append({p.id for p in stage.select_pairs(cfg, got, skipped)})
    assert set().union(*seen) == {f"p{i:03d}" for i in range(20)}
    assert sum(len(s) for s in seen) == 20 and all(seen)
    with pytest.raises(ConfigError, match="synthesis.shard"):
        stage.select_pairs(make_cfg(pairs, model_cache, shard="3/3"), got, [])


def test_bad_input_strict_error_names_file_line_and_field(tmp_path, model_cache):
    bad = write_pairs(
        tmp_path / "pairs.jsonl", 2, ['{"id": "p000", "request": "dup", "answer": "dup", "category": "c"}']
    )
    cfg = make_cfg(bad, model_cache)
    with pytest.raises(DataError, match=rf"{bad}:3: field 'id'"):
        stage.run(cfg, ctx(tmp_path / "out"))


def test_bad_input_lenient_is_a_counted_skip(tmp_path, model_cache):
    bad = write_pairs(
        tmp_path / "pairs.jsonl", 2, ['{"id": "p000", "request": "dup", "answer": "dup", "category": "c"}', "{not json"]
    )
    cfg = make_cfg(bad, model_cache, search=False)
    cfg.data.strict = False
    res = stage.run(cfg, ctx(tmp_path / "out"))
    assert res.counts["skipped_input"] == 2 and res.counts["pairs"] == 2
    assert any(":3: field 'id'" in s for s in res.metrics["skipped_reasons"])


def test_duplicate_ids_are_caught_even_when_the_loader_lets_them_through(tmp_path, model_cache):
    from deepwriter.pairs.read import Pair

    pairs = [Pair("a", "x", "y", {"where": "f.jsonl:1"}), Pair("a", "x", "y", {"where": "f.jsonl:2"})]
    cfg = make_cfg(tmp_path / "unused.jsonl", model_cache)
    with pytest.raises(DataError, match=r"f.jsonl:2: field 'id': duplicate id 'a' \(first at f.jsonl:1\)"):
        stage.select_pairs(cfg, pairs, [])
    cfg.data.strict = False
    skipped = []
    assert [p.id for p in stage.select_pairs(cfg, pairs, skipped)] == ["a"] and len(skipped) == 1


def test_answer_longer_than_scorer_context(tmp_path, model_cache):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 2)
    cfg = make_cfg(pairs, model_cache, search=False)
    cfg.models.scorer.max_context = 5
    with pytest.raises(DataError, match=rf"{pairs}:1: field 'y': \d+ tokens, longer than the scorer's max_context"):
        stage.run(cfg, ctx(tmp_path / "strict"))
    cfg.data.strict = False
    res = stage.run(cfg, ctx(tmp_path / "lenient"))
    assert res.counts["skipped_input"] == 2 and res.counts["pairs"] == 0
    cfg.models.scorer.max_context = 4096
    cfg.models.generator.max_context = 4096  # same config as the scorer: weights are shared
    res = stage.run(cfg, ctx(tmp_path / "lenient"))
    assert res.counts["skipped_input"] == 0 and res.counts["pairs"] == 2


def test_torn_last_line_is_truncated_and_resumed(tmp_path):
    path = tmp_path / "shards" / "shard-00000-of-00001.jsonl"
    with RecordLog(path) as w:
        w.append({"id": "a", "v": 1})
        w.append({"id": "b", "v": 2})
    with open(path, "ab") as f:
        f.write(b'{"id": "c", "v": 3, "z_fi')  # a write cut by kill -9
    with RecordLog(path) as w:
        assert set(w.done) == {"a", "b"} and w.truncated_bytes == len(b'{"id": "c", "v": 3, "z_fi')
        w.append({"id": "c", "v": 3})
        with pytest.raises(RecordLogError, match="already written"):
            w.append({"id": "a", "v": 9})
    assert [r["id"] for r in read_records(path)] == ["a", "b", "c"]
    assert path.read_bytes().endswith(b"}\n")


RUNNER = """
import json, sys
from pathlib import Path
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
from test_synthesis_stage import make_cfg, ctx
from deepwriter.synthesis import stage
cfg = make_cfg(Path({pairs!r}), Path({cache!r}), search=False)
cfg.synthesis.initial.max_new_tokens = 8
res = stage.run(cfg, ctx(Path({out!r})))
print(json.dumps(res.counts))
"""


@pytest.mark.slow  # two fresh interpreters importing torch + transformers: ~20-40 s
def test_kill_9_mid_run_then_restart_loses_and_duplicates_nothing(tmp_path, model_cache):
    n = 16
    pairs = write_pairs(tmp_path / "pairs.jsonl", n)
    out = tmp_path / "out"
    script = tmp_path / "runner.py"
    script.write_text(
        RUNNER.format(repo=str(REPO), tests=str(REPO / "tests"), pairs=str(pairs), cache=str(model_cache), out=str(out))
    )
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    shard = store.shard_path(out, 0, 1)
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if shard.exists() and shard.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = shard.read_bytes().count(b"\n")
    assert 3 <= before < n
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    ids = [r["id"] for r in read_records(shard)]
    assert sorted(ids) == [f"p{i:03d}" for i in range(n)]
    assert json.loads(done.stdout.decode().strip().splitlines()[-1])["pairs"] == n


def test_logs_to_wandb_offline(tmp_path, model_cache, monkeypatch):
    from deepwriter.tracking import stage_tracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    pairs = write_pairs(tmp_path / "pairs.jsonl", 2)
    cfg = make_cfg(pairs, model_cache, search=False)
    out = tmp_path / "out"
    out.mkdir()
    with stage_tracker(cfg, "synthesize", out) as tracker:
        assert tracker.active
        res = stage.run(cfg, StageContext("synthesize", out, {}, out, tracker, "test"))
    assert res.counts["pairs"] == 2
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert runs and runs[0].stat().st_size > 0


def test_prepared_sources_feed_the_search(tmp_path, model_cache):
    """A long-text source (answers without requests) goes through deepwriter.pairs.prepare first:
    reverse queries and category labels by the stage's own models, then the search."""
    book = REPO / "tests/fixtures/data/sources"
    books = sorted(book.glob("*.txt"))
    assert books, "fixture book missing"
    cfg = make_cfg(books[0], model_cache, limit=2)
    cfg.data.pairs.kind = "long_text"
    cfg.data.pairs.fields = {}
    cfg.data.pairs.long_text.target_words = 120
    cfg.data.pairs.long_text.min_words = 40
    cfg.data.label_categories = True
    cfg.data.taxonomy = {"Artistic": ["creative & narrative", "poetry & lyrics"], "Ordinary Life": ["personal letters"]}
    cfg.data.queries.max_new_tokens = 12
    cfg.data.queries.min_words = 1
    cfg.data.queries.copy_ngram = 50
    cfg.data.strict = False
    out = tmp_path / "out"
    stage.run(cfg, ctx(out))
    prepared = [json.loads(line) for line in open(out / "prepared" / "pairs.jsonl")]
    assert prepared and all(p["request"] and p["answer"] for p in prepared)
    labels = {c for cats in cfg.data.taxonomy.values() for c in cats}
    assert all(p["category"] in labels for p in prepared)
    recs = list(read_records(store.shard_path(out, 0, 1)))
    assert 1 <= len(recs) <= 2
    by_id = {p["id"]: p for p in prepared}
    for r in recs:
        assert r["x"] == by_id[r["id"]]["request"] and r["category"] == by_id[r["id"]]["category"]
        assert r["answer_id"] == by_id[r["id"]]["answer_id"]

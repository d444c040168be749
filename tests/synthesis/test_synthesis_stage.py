"""The synthesize stage end to end over the tiny random model: shards, resume after kill -9, bad
input in strict and lenient mode, over-long answers."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from deepwriter.config.root import ConfigError
from deepwriter.core.contract import StageContext
from deepwriter.core.records import RecordLog, RecordLogError, read_records
from deepwriter.pairs.read import DataError
from deepwriter.synthesis import stage, store
from deepwriter.testing.repo import REPO
from deepwriter.testing.synthesis import (
    PlanWriter,
    keeping,
    make_cfg,
    write_pairs,
)
from deepwriter.testing.synthesis import stage_context as ctx

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def plan_writer(monkeypatch):
    """The stage's own backends, with the generator swapped for a PlanWriter (the scorer stays)."""
    built = []
    real = stage.build_backends

    def build(cfg):
        generator, scorer = real(cfg)
        built.append(PlanWriter(generator.model_id))
        return built[-1], scorer

    monkeypatch.setattr(stage, "build_backends", build)
    return built


def test_stage_writes_records_and_resumes_without_work(tmp_path, model_cache, monkeypatch, plan_writer):
    from deepwriter.synthesis import filters

    pairs = write_pairs(tmp_path / "pairs.jsonl", 4)
    cfg = keeping(make_cfg(pairs, model_cache))
    out = tmp_path / "out"
    res = stage.run(cfg, ctx(out))
    assert len(plan_writer) == 1 and plan_writer[0].calls > 0
    recs = list(read_records(store.shard_path(out, 0, 1)))
    assert sorted(r["id"] for r in recs) == ["p000", "p001", "p002", "p003"]
    for r in recs:
        assert set(r["verdict"]) == {"kept", "reason"} and r["models"]["generator"] == "tiny-qwen3"
        assert r["category"] == "letter" and r["answer_id"] == r["id"]  # one request per answer
    c = res.counts
    assert c["pairs"] == 4 and (c["kept"], c["discarded"]) == (3, 1), c
    # the one-paragraph plan is discarded before any scoring, and counted once, under its reason
    (single,) = [r for r in recs if r["id"] == "p003"]
    assert single["verdict"] == {"kept": False, "reason": filters.SINGLE_SEGMENT} and single["scores"] == []
    assert {k: v for k, v in c.items() if k.startswith("discarded_") and v} == {
        "discarded_before_search": 1,
        f"discarded_{filters.SINGLE_SEGMENT}": 1,
    }
    assert sum(c.get(f"discarded_{reason}", 0) for reason in filters.REASONS) == c["discarded"]
    # the kept path ran: every other pair was scored by the tiny model, searched for a step and kept
    recs = [r for r in recs if r["id"] != "p003"]
    for r in recs:
        assert r["verdict"] == {"kept": True, "reason": None}
        assert r["num_segments"] >= 2 and r["z_final"]
        assert len(r["scores"]) == 2 and all(math.isfinite(s) and 0 <= s <= 2 for s in r["scores"])
        assert r["scores"][1] <= r["scores"][0]  # a rewrite is taken only when strictly better
        assert [s["step"] for s in r["steps"]] == [1] and len(r["steps"][0]["candidates"]) == 2
        assert all(cand["score"] is not None for cand in r["steps"][0]["candidates"])
    assert c["steps"] == 3 and res.metrics["mean_score_z0"] == pytest.approx(sum(r["scores"][0] for r in recs) / 3)
    assert (out / res.artifacts["score_plot"]).stat().st_size > 1000
    # A second run finds every pair done and loads no model.
    monkeypatch.setattr(stage, "build_backends", lambda cfg: pytest.fail("backends built on a finished shard"))
    res2 = stage.run(cfg, ctx(out))
    assert res2.counts == c
    assert len(list(read_records(store.shard_path(out, 0, 1)))) == 4


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


def test_a_stage_split_into_shards_is_whole_once_the_worker_of_its_last_shard_ends(
    tmp_path, model_cache, plan_writer, monkeypatch
):
    """synthesis.shards=3 in one process writes the three shards; a worker of one shard each (the tasks of
    a job array, in any order) writes its own, and the last to end gives the whole stage's result."""
    from deepwriter.llm import models

    built, tokenizer = stage.build_backends, models.load_tokenizer
    loaded = {}  # the four runs share one load of the tiny model (each worker of a real array loads its own)
    monkeypatch.setattr(
        stage, "build_backends", lambda cfg: loaded.get("both") or loaded.setdefault("both", built(cfg))
    )
    monkeypatch.setattr(
        models, "load_tokenizer", lambda *a: loaded.get("tok") or loaded.setdefault("tok", tokenizer(*a))
    )
    pairs = write_pairs(tmp_path / "pairs.jsonl", 3)  # one pair in each of shards 0, 1, 2
    alone = stage.run(keeping(make_cfg(pairs, model_cache, shards=3)), ctx(tmp_path / "alone"))
    assert alone.part is None and (alone.counts["pairs"], alone.counts["kept"], alone.counts["discarded"]) == (3, 3, 0)
    names = sorted(p.name for p in (tmp_path / "alone" / "shards").glob("*.jsonl"))
    assert names == [f"shard-0000{i}-of-00003.jsonl" for i in range(3)]
    out = tmp_path / "split"
    results = [stage.run(keeping(make_cfg(pairs, model_cache, shards=3, shard=f"{i}/3")), ctx(out)) for i in (2, 0, 1)]
    assert [r.part for r in results] == ["shard 2/3; 2 to come", "shard 0/3; 1 to come", None]
    assert {k: results[-1].counts[k] for k in ("pairs", "kept", "discarded")} == {"pairs": 3, "kept": 3, "discarded": 0}
    for i in range(3):
        ids = sorted(r["id"] for r in read_records(store.shard_path(out, i, 3)))
        assert ids == sorted(r["id"] for r in read_records(store.shard_path(tmp_path / "alone", i, 3))) and ids
    # the folder keeps its split: another would not see these records and would do their pairs again
    with pytest.raises(ConfigError, match=r"synthesis.shards: .* split 3 ways.*synthesis.shards=3"):
        stage.run(keeping(make_cfg(pairs, model_cache, shards=2)), ctx(out))
    with pytest.raises(ConfigError, match="synthesis.shard: 1/2 is a share of 2 shards, but synthesis.shards is 3"):
        stage.select_pairs(make_cfg(pairs, model_cache, shards=3, shard="1/2"), [], [])


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
import json, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from deepwriter.testing.synthesis import make_cfg, stage_context as ctx
from deepwriter.synthesis import stage, store
from deepwriter.testing.synthesis import (
    ONE_PARAGRAPH,
    PlanWriter,
    keeping,
    make_cfg,
    tiny_model_config,
    write_pairs,
)
from deepwriter.testing.synthesis import stage_context as ctx
cfg = make_cfg(Path({pairs!r}), Path({cache!r}), search=False, max_in_flight={batch})
cfg.synthesis.initial.max_new_tokens = 8
if sys.argv[1:] == ["--stall"]:
    # Once the first batch is on disk, the next batch's generation never returns: the parent's
    # kill -9 lands mid-run however slowly or quickly this machine runs.
    shard = store.shard_path(Path({out!r}), 0, 1)
    real = stage.build_backends
    def stalling(cfg):
        generator, scorer = real(cfg)
        generate = generator.generate
        def stall(*a, **k):
            if shard.exists() and shard.read_bytes().count(b"\\n") >= {batch}:
                time.sleep(3600)
            return generate(*a, **k)
        generator.generate = stall
        return generator, scorer
    stage.build_backends = stalling
res = stage.run(cfg, ctx(Path({out!r})))
print(json.dumps(res.counts))
"""


@pytest.mark.slow  # two fresh interpreters importing torch + transformers: ~20-40 s
@pytest.mark.timeout(660)  # two bounded waits of 300 s inside: the run until the kill, the restart
def test_kill_9_mid_run_then_restart_loses_and_duplicates_nothing(tmp_path, model_cache):
    n, batch = 16, 4
    pairs = write_pairs(tmp_path / "pairs.jsonl", n)
    out = tmp_path / "out"
    script = tmp_path / "runner.py"
    script.write_text(
        RUNNER.format(
            repo=str(REPO),
            tests=str(REPO / "tests"),
            pairs=str(pairs),
            cache=str(model_cache),
            out=str(out),
            batch=batch,
        )
    )
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    shard = store.shard_path(out, 0, 1)
    proc = subprocess.Popen(
        [sys.executable, str(script), "--stall"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    # Wait (no wall-clock bound on the run itself, only a generous deadline) for the first batch's
    # records to start landing, then kill: anywhere from mid-batch to the stall before batch two.
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if shard.exists() and shard.read_bytes().count(b"\n") >= 1:
            break
        time.sleep(0.05)
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert alive, "the runner exited before it could be killed: " + proc.stderr.read().decode()[-2000:]
    before = shard.read_bytes().count(b"\n")
    assert 1 <= before <= batch  # the kill landed inside the run: the second batch never started
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    ids = [r["id"] for r in read_records(shard)]
    assert sorted(ids) == [f"p{i:03d}" for i in range(n)]  # every pair once: none lost, none twice
    assert json.loads(done.stdout.decode().strip().splitlines()[-1])["pairs"] == n


def test_logs_to_wandb_offline(tmp_path, model_cache, monkeypatch, plan_writer):
    from deepwriter.testing.wandb_offline import read_wandb_offline
    from deepwriter.tracking.runs import stage_tracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    pairs = write_pairs(tmp_path / "pairs.jsonl", 2)
    cfg = keeping(make_cfg(pairs, model_cache))
    out = tmp_path / "out"
    out.mkdir()
    with stage_tracker(cfg, "synthesize", out) as tracker:
        assert tracker.active
        res = stage.run(cfg, StageContext("synthesize", out, {}, out, tracker, "test"))
    assert res.counts["pairs"] == 2 and res.counts["kept"] == 2
    (path,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    run = read_wandb_offline(path)
    assert run["job_type"] == "synthesize" and run["group"] == cfg.recipe.name
    assert run["config"]["synthesis"]["max_steps"] == cfg.synthesis.max_steps  # the whole config is logged
    # one point per record, with that record's figures
    recs = {r["id"]: r for r in read_records(store.shard_path(out, 0, 1))}
    points = [h for h in run["history"] if "synthesize/kept" in h]
    want = sorted((len(r["steps"]), 1, r["scores"][0], r["scores"][-1]) for r in recs.values())
    got = sorted(
        (h["synthesize/steps"], h["synthesize/kept"], h["synthesize/score_z0"], h["synthesize/score_final"])
        for h in points
    )
    assert got == want  # JSON keeps a float exactly
    # the score plot as an image (its file beside the run), the records as a table
    (image,) = [h["synthesize/score_vs_step"] for h in run["history"] if "synthesize/score_vs_step" in h]
    assert image["_type"] == "image-file" and (path.parent / "files" / image["path"]).stat().st_size == image["size"]
    (table,) = [h["synthesize/trajectories"] for h in run["history"] if "synthesize/trajectories" in h]
    assert table["_type"] == "table-file" and table["nrows"] == 2
    # and the stage's means in the summary
    for k in ("mean_score_z0", "mean_score_final", "acceptance_rate"):
        assert run["summary"][f"synthesize/{k}"] == pytest.approx(res.metrics[k]), k
    # the fleets' utilisation and throughput: live with each record, final in the summary
    fleet = res.metrics["fleet"]
    assert fleet["pairs"] == 2 and fleet["generator_calls"] >= 1 and fleet["scorer_calls"] >= 1
    assert 0 < fleet["generator_busy_share"] <= 1 and 0 < fleet["scorer_busy_share"] <= 1
    assert [h["synthesize/fleet/pairs"] for h in points] == [1, 2]
    for k in ("pairs_per_min", "generator_busy_share", "scorer_busy_share", "scorer_tokens_per_s"):
        assert run["summary"][f"synthesize/fleet/{k}"] == pytest.approx(fleet[k]), k


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


def test_the_progress_bar_shows_no_mean_score_until_a_pair_is_scored():
    """The first pairs to finish are often discarded before scoring: the bar said `before=nan, after=nan`."""
    from deepwriter.synthesis.stage import _Running

    running = _Running()
    running.add({"scores": [], "steps": []})  # discarded before scoring (one segment)
    assert running.postfix() == {"scored": "0"}
    running.add({"scores": [1.5, 1.25], "steps": [{}, {}], "accepted_edits": [{}]})
    assert running.postfix() == {"scored": "1", "before": "1.500", "after": "1.250", "accept": "50%"}

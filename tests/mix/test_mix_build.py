"""The mix stage: trajectories + public reasoning -> chat dataset, with dedup, decontamination,
length filter, counts, ablations; decontamination checked on the real benchmark files."""

from __future__ import annotations

import dataclasses
import functools
import json
import random
import shutil

import pytest

from deepwriter.testing.repo import FIXTURES, SEED_PAIRS, bench_overrides, compose_typed

FIX = FIXTURES / "data"


@pytest.fixture(scope="module")
def bench_prompts(shared_dir):
    from deepwriter.config.root import expand
    from deepwriter.eval.benchmarks import benchmark_prompts

    cfg = compose_typed(*bench_overrides(shared_dir))
    return benchmark_prompts(cfg.eval, expand(cfg.paths.data_dir))


@pytest.fixture(scope="module")
def tokenizer(tiny_model_cfg, model_cache):
    from deepwriter.llm.models import load_tokenizer

    return load_tokenizer(tiny_model_cfg, model_cache)


def _synthetic():
    from deepwriter.mix.build import load_trajectories

    recs, skipped, not_kept = load_trajectories(FIX / "shards", "z_final", strict=True)
    assert not skipped and not_kept == 1
    return recs


def _public():
    from deepwriter.config.data import SourceConfig
    from deepwriter.mix.public import load_public

    recs, _ = load_public(
        SourceConfig(
            name="fx-reasoning",
            path=str(FIX / "reasoning.jsonl"),
            fields={"id": "qid", "x": "question", "think": "reasoning", "y": "answer"},
        ),
        True,
    )
    return recs


@functools.lru_cache(maxsize=1)
def _taxonomy():
    return compose_typed().data.taxonomy


def _mix(tokenizer, strict=True, max_length=4096, prompts=None, **overrides):
    from deepwriter.config.data import MixConfig
    from deepwriter.mix.build import build_mix
    from deepwriter.synthesis.prompts import strip_reflection

    cfg = dataclasses.replace(MixConfig(), **overrides)
    taxonomy = _taxonomy()
    return build_mix(
        _synthetic(),
        _public(),
        cfg,
        taxonomy=taxonomy,
        benchmark_prompts=prompts or {},
        tokenizer=tokenizer,
        max_length=max_length,
        strict=strict,
        strip_reflection=strip_reflection,
    )


def test_duplicates_are_removed_and_listed(tokenizer):
    res = _mix(tokenizer)
    ids = sorted(r["id"] for r in res.rows)
    assert ids == ["r1", "r2", "r3", "t0", "t1", "t3", "t4"]
    assert [(d["id"], d["duplicate_of"]) for d in res.removed["exact_duplicate"]] == [("t6", "t0")]
    near = res.removed["near_duplicate"]
    assert [(d["id"], d["duplicate_of"]) for d in near] == [("t5", "t1")] and near[0]["jaccard"] >= 0.8
    assert res.counts["total"] == 7 and res.counts["synthetic"] == 4 and res.counts["public"] == 3


def test_counts_shuffle_and_shortfall(tokenizer):
    a = _mix(tokenizer, synthetic=2, public=1, seed=3)
    assert a.counts["synthetic"] == 2 and a.counts["public"] == 1 and len(a.rows) == 3
    b = _mix(tokenizer, synthetic=2, public=1, seed=3)
    assert [r["id"] for r in a.rows] == [r["id"] for r in b.rows]
    orders = {tuple(r["id"] for r in _mix(tokenizer, seed=s).rows) for s in range(4)}
    assert len(orders) > 1
    assert len(_mix(tokenizer, total=5).rows) == 5
    assert _mix(tokenizer, synthetic=0).counts["synthetic"] == 0

    from deepwriter.pairs.read import DataError

    with pytest.raises(DataError, match="field 'synthetic': 9 requested, 4 available"):
        _mix(tokenizer, synthetic=9)
    lenient = _mix(tokenizer, strict=False, synthetic=9)
    assert lenient.counts["synthetic"] == 4 and lenient.counts["shortfall_synthetic"] == 5


def test_ablations(tokenizer):
    res = _mix(tokenizer, drop_groups=["Artistic"])
    assert {r["category"] for r in res.rows} == {"business correspondence", "reasoning"}
    assert len(res.removed["category_ablation"]) == 5  # t0 t1 t4 t5 t6 are creative & narrative

    from deepwriter.pairs.read import DataError

    with pytest.raises(DataError, match="unknown group 'Poetry'"):
        _mix(tokenizer, drop_groups=["Poetry"])

    plain = {r["id"]: r["think"] for r in _mix(tokenizer).rows}
    stripped = {r["id"]: r["think"] for r in _mix(tokenizer, strip_reflection=True).rows}
    assert "Hmm" in plain["t0"] and "Wait" in plain["t0"]
    assert "Hmm" not in stripped["t0"] and "Wait" not in stripped["t0"]
    assert stripped["r1"] == plain["r1"]  # public data is not touched

    full = _mix(tokenizer)
    synth_think = sorted(
        r["think_tokens"] for r in _mix(tokenizer, drop_above_quantile=1.0).rows if r["kind"] == "synthetic"
    )
    short = _mix(tokenizer, drop_above_quantile=0.5)
    kept = [r["think_tokens"] for r in short.rows if r["kind"] == "synthetic"]
    assert kept and max(kept) <= sorted(synth_think)[len(synth_think) // 2] < synth_think[-1]
    assert short.counts["public"] == full.counts["public"] == 3


def test_token_length_filter_uses_the_student_tokenizer(tokenizer):
    from deepwriter.mix.build import assistant_content

    res = _mix(tokenizer)
    r = next(r for r in res.rows if r["id"] == "t0")
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": r["x"]}, {"role": "assistant", "content": assistant_content(r["think"], r["y"])}],
        tokenize=False,
    )
    assert r["tokens"] == len(tokenizer(text, add_special_tokens=False)["input_ids"])
    limit = sorted(x["tokens"] for x in res.rows)[3]
    cut = _mix(tokenizer, max_length=limit)
    assert all(x["tokens"] <= limit for x in cut.rows) and len(cut.rows) == 4
    assert len(cut.removed["too_long"]) == 3 and "sft.max_length" in cut.removed["too_long"][0]["reason"]


def test_samples_over_max_length_are_counted_and_may_keep_a_shorter_thinking(tokenizer):
    from deepwriter.mix.build import answer_bucket

    full = {r["id"]: r for r in _mix(tokenizer).rows}
    limit = sorted(r["tokens"] for r in full.values())[3]
    over = [r for r in full.values() if r["tokens"] > limit]
    dropped = _mix(tokenizer, max_length=limit)
    assert dropped.counts["over_max_length"] == 3 and dropped.counts["over_max_length_kept_thinking_cut"] == 0
    by_cat = {}
    for r in over:
        by_cat[r["category"] or "uncategorised"] = by_cat.get(r["category"] or "uncategorised", 0) + 1
    assert dropped.over_max_length["by_category"] == by_cat
    assert sum(dropped.over_max_length["by_answer_words"].values()) == 3 and answer_bucket("word " * 4500) == "4000+"
    assert answer_bucket("word " * 600) == "500-2000" and answer_bucket("") == "0-500"

    kept = _mix(tokenizer, max_length=limit, over_max_length="truncate_thinking")
    rows = {r["id"]: r for r in kept.rows}
    cut = [r for r in over if r["id"] in rows]
    assert kept.counts["over_max_length"] == 3 and kept.counts["over_max_length_kept_thinking_cut"] == len(cut) > 0
    assert len(kept.removed.get("too_long", [])) == 3 - len(cut)
    for r in cut:  # the answer and request whole, the thinking a prefix of the original, the sample within the limit
        got = rows[r["id"]]
        assert got["y"] == r["y"] and got["x"] == r["x"] and got["tokens"] <= limit
        assert r["think"].startswith(got["think"]) and len(got["think"]) < len(r["think"])
        assert got["think_truncated_from"] == r["tokens"]


def test_bad_shard_line_is_named(tmp_path):
    from deepwriter.mix.build import load_trajectories
    from deepwriter.pairs.read import DataError

    shards = tmp_path / "shards"
    shutil.copytree(FIX / "shards", shards)
    with open(shards / "shard-00001-of-00002.jsonl", "a") as f:
        f.write('{"id": "t9", "x": "cut off')
    with pytest.raises(DataError, match=r"shard-00001-of-00002\.jsonl:4: field '<line>': malformed JSON"):
        load_trajectories(shards, "z_final", strict=True)
    recs, skipped, _ = load_trajectories(shards, "z0", strict=False)
    assert len(skipped) == 1 and next(r for r in recs if r["id"] == "t0")["think"].startswith("Initial plan 0")


# --- decontamination on the real benchmark files ------------------------------------------------


def test_seed_pairs_are_caught_against_hellobench_prompts(shared_dir, bench_prompts):
    from deepwriter.config.data import DecontamConfig
    from deepwriter.mix.decontam import BenchmarkIndex

    hello = {k: v for k, v in bench_prompts.items() if "hellobench" in k}
    assert sum(map(len, hello.values())) >= 500
    index = BenchmarkIndex(hello, DecontamConfig())
    seeds = [json.loads(line) for line in (shared_dir / SEED_PAIRS).read_text().splitlines()]
    assert len(seeds) == 547
    missed = [s["id"] for s in seeds if index.match(s["query"]) is None]
    assert missed == []
    # Re-cased, re-spaced, re-punctuated and wrapped in a new first sentence: still caught.
    rng = random.Random(0)

    def reword(q):
        ws = q.split()
        for _ in range(max(1, len(ws) // 20)):
            ws[rng.randrange(len(ws))] = "indeed"
        return "Hi! Could you do this for me?\n" + "  ".join(ws).upper() + " Thanks."

    missed = [s["id"] for s in seeds if index.match(reword(s["query"])) is None]
    assert len(missed) <= 0.02 * len(seeds), missed[:5]


def test_new_requests_are_not_flagged(bench_prompts):
    from deepwriter.config.data import DecontamConfig, SourceConfig
    from deepwriter.mix.decontam import BenchmarkIndex
    from deepwriter.pairs.read import load_pairs

    index = BenchmarkIndex(bench_prompts, DecontamConfig())
    demo, _ = load_pairs(
        SourceConfig(path="pkg://deepwriter/data/demo/pairs.jsonl", fields={"x": "request", "y": "answer"}), True
    )
    assert [index.match(p.x) for p in demo] == [None] * 8
    # The HelloBench template with a topic of our own is not a copy of any prompt.
    own = (
        "You should write a detailed response to the following question on travel.\n[Question]: What should a "
        "first-time visitor pack for a week of hiking in the Faroe Islands in late autumn?\n[Requirements]:\n"
        "1. The answer should be long enough to provide a comprehensive response.\n"
    )
    assert index.match(own) is None


# --- the stage end to end ----------------------------------------------------------------------


@pytest.mark.slow  # starts a run or a server: `make test` only, not test-fast
def test_mix_stage_end_to_end_and_rerun(tmp_path, shared_dir, model_cache):
    import datasets

    from deepwriter.core.contract import StageContext
    from deepwriter.mix.stage import run
    from deepwriter.tracking.runs import Tracker

    shards = tmp_path / "synth" / "shards"
    shutil.copytree(FIX / "shards", shards)
    seeds = [json.loads(line) for line in (shared_dir / SEED_PAIRS).read_text().splitlines()[:3]]
    with open(shards / "shard-00001-of-00002.jsonl", "a") as f:
        for s in seeds:  # planted contamination: a benchmark prompt with an answer
            f.write(
                json.dumps(
                    {
                        "id": "c-" + s["id"],
                        "x": s["query"],
                        "y": s["solution"],
                        "z0": "plan",
                        "z_final": "plan",
                        "category": "essay & argument",
                        "scores": [1.0],
                        "verdict": {"kept": True, "reason": None},
                    }
                )
                + "\n"
            )
    cfg = compose_typed(
        "model@models.student=tiny-qwen3",
        f"paths.cache_dir={model_cache}",
        *bench_overrides(shared_dir),
        "sft.max_length=2048",
    )
    out = tmp_path / "mix"
    out.mkdir()
    ctx = StageContext("mix", out, {"synthesize": tmp_path / "synth"}, tmp_path, Tracker(None), "k")
    res = run(cfg, ctx)
    c = res.counts
    assert (c["synthetic"], c["public"], c["total"]) == (4, 8, 12)
    assert c["removed_contaminated"] == 3 and c["removed_exact_duplicate"] == 1 and c["removed_near_duplicate"] == 1
    dropped = [json.loads(line) for line in (out / "dropped" / "contaminated.jsonl").read_text().splitlines()]
    assert sorted(d["id"] for d in dropped) == sorted("c-" + s["id"] for s in seeds)
    assert all(d["benchmark"] == "hellobench" and d["score"] >= 0.5 for d in dropped)

    ds = datasets.load_from_disk(str(out / "dataset"))
    assert sorted(ds.column_names) == ["category", "id", "messages", "source"] and len(ds) == 12
    row = next(r for r in ds if r["id"] == "t0")
    assert row["source"] == "synthetic" and row["category"] == "creative & narrative"
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    assert row["messages"][1]["content"].startswith("<think>\nOkay, I am given scene 0.")
    assert "\n</think>\n\nScene 0. word0_0" in row["messages"][1]["content"]
    assert {r["source"] for r in ds} == {"synthetic", "demo-reasoning"}

    card = (out / "DATA_CARD.md").read_text()
    assert "| synthetic | creative & narrative | 3 |" in card and "| contaminated | 3 |" in card
    assert (out / "plots" / "token_lengths.png").stat().st_size > 1000
    assert res.artifacts["dataset"] == "dataset"

    # A finished output is reported again, not rebuilt; a stale temporary folder is ignored.
    mtime = (out / "dataset" / "dataset_info.json").stat().st_mtime
    again = run(cfg, ctx)
    assert again.counts == res.counts and (out / "dataset" / "dataset_info.json").stat().st_mtime == mtime
    shutil.rmtree(out / "dataset")
    (out / "dataset.tmp").mkdir()
    (out / "dataset.tmp" / "junk").write_text("half-written")
    third = run(cfg, ctx)
    assert third.counts == res.counts and not (out / "dataset.tmp").exists()
    assert [r["id"] for r in datasets.load_from_disk(str(out / "dataset"))] == [r["id"] for r in ds]


def test_public_only_mix_needs_no_synthesis(tmp_path, model_cache):
    import datasets

    from deepwriter.mix.stage import run
    from deepwriter.pipeline.runner import StageContext, plan
    from deepwriter.tracking.runs import Tracker

    cfg = compose_typed(
        "model@models.student=tiny-qwen3",
        f"paths.cache_dir={model_cache}",
        "data.mix.synthetic=0",
        "data.mix.decontam.enabled=false",
        f"paths.stage_store={tmp_path}/store",
    )
    assert plan(cfg)["mix"].needs == []
    ctx = StageContext("mix", tmp_path, {}, tmp_path, Tracker(None), "k")
    res = run(cfg, ctx)
    assert res.counts["synthetic"] == 0 and res.counts["public"] == 8
    assert len(datasets.load_from_disk(str(tmp_path / "dataset"))) == 8


def test_chinese_prompts_are_matched_by_characters(bench_prompts):
    from deepwriter.config.data import DecontamConfig
    from deepwriter.mix.decontam import BenchmarkIndex

    zh = [p for p in bench_prompts["longbench_write"] if not p.isascii()]
    assert len(zh) >= 10
    index = BenchmarkIndex(bench_prompts, DecontamConfig())
    assert all(index.match("你好！请帮我完成这个任务：\n" + p) is not None for p in zh)
    assert index.match("请写一首关于秋天落叶和远方故乡的短诗，大约八行，语气安静。") is None


def test_category_outside_the_taxonomy_is_an_error_or_a_counted_drop(tiny_model):
    from deepwriter.config.data import MixConfig
    from deepwriter.mix.build import build_mix
    from deepwriter.pairs.read import DataError

    rec = {
        "id": "t1",
        "x": "Write a poem.",
        "think": "I plan the poem. " * 5,
        "y": "Roses bloom.",
        "category": "haiku battles",
        "source": "synthetic",
        "where": "shard.jsonl:3",
    }
    taxonomy = {"Artistic": ["poetry & lyrics"]}
    kwargs = dict(taxonomy=taxonomy, benchmark_prompts={}, tokenizer=tiny_model[1], max_length=4096)
    with pytest.raises(DataError, match=r"shard.jsonl:3: field 'category'"):
        build_mix([dict(rec)], [], MixConfig(), strict=True, **kwargs)
    result = build_mix(
        [dict(rec), {**rec, "id": "t2", "category": "poetry & lyrics", "where": "shard.jsonl:4"}],
        [],
        MixConfig(),
        strict=False,
        **kwargs,
    )
    assert [r["id"] for r in result.rows] == ["t2"]
    assert [d["id"] for d in result.removed["category_outside_taxonomy"]] == ["t1"]


def test_one_answer_under_several_requests_survives_near_dedup(tokenizer):
    """Records sharing an answer id (extra requests for one answer) are meant; the same answer under
    another answer id is still a near duplicate."""
    from deepwriter.config.data import MixConfig
    from deepwriter.mix.build import build_mix

    answer = " ".join(
        f"The harbour wall took the storm's {w} blow at dawn and held."
        for w in ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
    )
    think = "I plan the scene, then the turn, then the calm after it. " * 8

    def rec(rid, x, aid):
        return {
            "id": rid,
            "x": x,
            "think": think,
            "y": answer,
            "category": "creative & narrative",
            "source": "synthetic",
            "answer_id": aid,
        }

    recs = [
        rec("a", "Write a short story about a harbour in a storm.", "a"),
        rec("a-x1", "Could you tell a tale of a sea wall at dawn during a gale?", "a"),
        rec("b", "Write a short story about a harbour in a storm, please.", "b"),
    ]
    cfg = dataclasses.replace(MixConfig(), synthetic=None, public=0, total=None)
    res = build_mix(
        recs, [], cfg, taxonomy=_taxonomy(), benchmark_prompts={}, tokenizer=tokenizer, max_length=4096, strict=True
    )
    assert sorted(r["id"] for r in res.rows) == ["a", "a-x1"]
    assert [(d["id"], d["duplicate_of"]) for d in res.removed["near_duplicate"]] == [("b", "a")]

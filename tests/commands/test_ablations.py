"""Acceptance tests of the ablation recipes: the real recipe configs, the real mix stage, synthesis
shards shaped like the search's output. Each ablation's data must differ from the full recipe's in
exactly the way the paper's ablation means, and stages must be shared (or not) through content keys.
Also: every recipe is a make target with the documented expansion."""

from __future__ import annotations

import functools
import json
import random
import re
import subprocess
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from deepwriter.testing.repo import FIXTURES, REPO, compose_typed

FIX = FIXTURES / "data"
ABLATIONS = sorted(p.stem for p in (REPO / "recipes").glob("ablation-*.yaml"))
SYNTH_SHARED = [
    "ablation-no-search",
    "ablation-no-literature",
    "ablation-short-trajectories",
    "ablation-long-trajectories",
]

# Categories from several taxonomy groups; the first four belong to the Artistic group.
CATEGORIES = [
    "creative & narrative",
    "poetry & lyrics",
    "essay & argument",
    "scriptwriting",
    "business correspondence",
    "reports & proposals",
    "science explainer",
    "technical documentation",
    "personal letters & messages",
    "travel & lifestyle",
    "legal documents",
    "writing for children",
    "political speech",
    "product & advertising copy",
]
WORDS = (
    "harbor lantern orchard meadow copper velvet thunder saffron glacier ember willow canyon falcon marble "
    "quartz juniper beacon tundra cobalt harvest compass lagoon prairie summit ribbon cedar delta fjord "
    "garnet hollow island jasmine kettle ledger mosaic nectar oasis pepper quiver riddle sonnet timber "
    "umbrella vessel walnut yarrow zephyr anchor bramble cinder dune fable gravel hazel ivory jetty kiln "
    "lichen mantle nickel opal pebble quill rustle shale thistle urchin vapor wicker yonder zinnia"
).split()
# Openings as the reflection prompt asks for them ("Hmm, maybe...", "Wait, ...", "But wait...").
DOUBTS = ["Hmm, maybe", "Wait,", "But wait...", "Alternatively,", "Actually,", "Hold on,", "Hmm..."]
PLAN = [
    "the reader wants the {a} before the {b}.",
    "I will open with the {a} and let the {b} follow.",
    "the core objective is to make the {a} feel earned, so the {b} comes late.",
    "the structure should move from the {a} to the {b} and then back.",
]


def _sentence(rng: random.Random, with_doubt: bool) -> str:
    text = rng.choice(PLAN).format(a=rng.choice(WORDS), b=rng.choice(WORDS))
    return f"{rng.choice(DOUBTS)} {text}" if with_doubt else text[0].upper() + text[1:]


def _thinking(rng: random.Random, opening: str, sentences: int) -> str:
    # Every third sentence hesitates: reflection phrases at the start, in the middle and near the end.
    return " ".join([opening] + [_sentence(rng, with_doubt=(k % 3 == 0)) for k in range(sentences)])


def write_synthesis_shards(folder: Path, n: int = 40, seed: int = 0) -> List[dict]:
    """A synthesize stage folder as the search writes it: shards/shard-*.jsonl, one record a line.
    Thinking lengths spread from a single sentence to sixteen; z0 and z_final differ."""
    rng = random.Random(seed)
    sizes = [1 + round(15 * (i / (n - 1)) ** 1.5) for i in range(n)]
    rng.shuffle(sizes)
    records = []
    for i in range(n):
        cat = CATEGORIES[i % len(CATEGORIES)]
        topic = " ".join(rng.sample(WORDS, 8))
        y = f"Piece {i}. " + " ".join(rng.choice(WORDS) for _ in range(30))
        z0 = _thinking(rng, f"Initial plan {i}: Hmm, I start with the {rng.choice(WORDS)}.", max(1, sizes[i] // 2))
        z_final = _thinking(rng, f"Okay, I am given request {i}. Wait, the reader comes first.", sizes[i])
        records.append(
            {
                "id": f"s{i:02d}",
                "x": f"Write a {cat} piece ({i}) about {topic}.",
                "y": y,
                "z0": z0,
                "z_final": z_final,
                "category": cat,
                "scores": [2.5, 2.2, 2.0 - 0.01 * i],
                "verdict": {"kept": True, "reason": None},
                "candidates": [],
                "accepted_edits": [1],
                "seed": seed,
            }
        )
    shards = folder / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    half = n // 2
    for k, part in enumerate((records[:half], records[half:])):
        with open(shards / f"shard-{k:05d}-of-00002.jsonl", "w") as f:
            for r in part:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return records


@functools.lru_cache(maxsize=None)
def _compose(recipe: str, scale: str = "demo", *overrides: str):
    return compose_typed(f"+recipe={recipe}", f"scale={scale}", *overrides)


@functools.lru_cache(maxsize=None)
def _keys(recipe: str, scale: str) -> Dict[str, str]:
    from deepwriter.pipeline.runner import plan

    return {name: st.key for name, st in plan(_compose(recipe, scale)).items()}


# --- the mix stage on every recipe ---------------------------------------------------------------


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthesize")
    return folder, {r["id"]: r for r in write_synthesis_shards(folder)}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_cfg, model_cache):
    from deepwriter.llm.models import load_tokenizer

    return load_tokenizer(tiny_model_cfg, model_cache)


def _split_think(content: str):
    m = re.fullmatch(r"<think>\n(.*)\n</think>\n\n(.*)", content, flags=re.S)
    assert m, content[:200]
    return m.group(1), m.group(2)


@pytest.fixture(scope="module")
def mixed(synth, tmp_path_factory, model_cache):
    """recipe -> (cfg, StageResult, rows) of the real mix stage, each run once."""
    import datasets

    from deepwriter.mix.stage import run
    from deepwriter.pipeline.runner import StageContext, plan
    from deepwriter.tracking.runs import Tracker

    synth_dir, _ = synth
    done = {}

    def get(recipe: str):
        if recipe not in done:
            cfg = _compose(
                recipe,
                "demo",
                "model@models.student=tiny-qwen3",
                f"paths.cache_dir={model_cache}",
                "data.public.name=fx-reasoning",
                f"data.public.path={FIX / 'reasoning.jsonl'}",
                "data.public.fields={id:qid,x:question,think:reasoning,y:answer}",
            )
            out = tmp_path_factory.mktemp(f"mix-{recipe}")
            inputs = {n: synth_dir for n in plan(cfg)["mix"].needs}
            res = run(cfg, StageContext("mix", out, inputs, out, Tracker(None), "test"))
            rows = []
            for r in datasets.load_from_disk(str(out / "dataset")):
                think, answer = _split_think(r["messages"][1]["content"])
                rows.append(
                    {"id": r["id"], "source": r["source"], "category": r["category"], "think": think, "y": answer}
                )
            done[recipe] = (cfg, res, rows)
        return done[recipe]

    return get


def _synthetic(rows):
    return {r["id"]: r for r in rows if r["source"] == "synthetic"}


def test_full_mix_takes_every_searched_trajectory(mixed, synth):
    _, records = synth
    cfg, res, rows = mixed("full")
    syn = _synthetic(rows)
    assert sorted(syn) == sorted(records) and res.counts["public"] == 3, json.dumps(res.counts)
    assert not any(k.startswith("removed_") and v for k, v in res.counts.items()), res.counts
    assert all(syn[i]["think"] == records[i]["z_final"] and syn[i]["y"] == records[i]["y"] for i in syn)


def test_no_search_uses_the_initial_trajectories(mixed, synth):
    _, records = synth
    cfg, _, rows = mixed("ablation-no-search")
    assert cfg.data.mix.trajectory_field == "z0"
    syn, full = _synthetic(rows), _synthetic(mixed("full")[2])
    assert sorted(syn) == sorted(full)
    for i, r in syn.items():
        assert r["think"] == records[i]["z0"] != full[i]["think"]
        assert r["y"] == full[i]["y"]  # only the thinking changes


def test_no_literature_drops_the_artistic_group(mixed):
    cfg, res, rows = mixed("ablation-no-literature")
    artistic = set(cfg.data.taxonomy["Artistic"])
    assert {"creative & narrative", "poetry & lyrics", "essay & argument", "scriptwriting"} <= artistic
    full_syn = _synthetic(mixed("full")[2])
    n_artistic = sum(r["category"] in artistic for r in full_syn.values())
    assert n_artistic >= 8
    assert not any(r["category"] in artistic for r in rows)
    assert res.counts["removed_category_ablation"] == n_artistic
    assert len(_synthetic(rows)) == len(full_syn) - n_artistic
    assert {r["category"] for r in _synthetic(rows).values()} == {r["category"] for r in full_syn.values()} - artistic


def _think_tokens(tokenizer, rows) -> List[int]:
    return sorted(len(tokenizer(r["think"], add_special_tokens=False)["input_ids"]) for r in _synthetic(rows).values())


def test_short_and_long_trajectories_cut_at_the_median(mixed, tokenizer):
    full = _think_tokens(tokenizer, mixed("full")[2])
    assert full[-1] > 8 * full[0]  # the fixture's lengths really spread
    median = float(np.quantile(full, 0.5))
    short_cfg, short_res, short_rows = mixed("ablation-short-trajectories")
    long_cfg, long_res, long_rows = mixed("ablation-long-trajectories")
    assert short_cfg.data.mix.drop_above_quantile == 0.5 and long_cfg.data.mix.drop_below_quantile == 0.5
    short, long_ = _think_tokens(tokenizer, short_rows), _think_tokens(tokenizer, long_rows)
    assert short and long_
    assert short[-1] <= median < full[-1] and long_[0] >= median > full[0]
    assert abs(len(short) - len(full) / 2) <= 2 and abs(len(long_) - len(full) / 2) <= 2
    # Between them every trajectory is kept somewhere; public data is never cut by length.
    assert set(_synthetic(short_rows)) | set(_synthetic(long_rows)) == set(_synthetic(mixed("full")[2]))
    assert short_res.counts["public"] == long_res.counts["public"] == 3
    assert short_res.counts["removed_length_ablation"] + len(short) == len(full)


def test_no_synthetic_is_public_only_without_synthesis(mixed):
    from deepwriter.pipeline.runner import plan

    cfg, res, rows = mixed("ablation-no-synthetic")
    assert plan(cfg)["mix"].needs == [] and "synthesize" not in cfg.recipe.stages
    assert rows and {r["source"] for r in rows} == {"fx-reasoning"}
    assert res.counts["synthetic"] == 0 and res.counts["loaded_synthetic"] == 0 and res.counts["public"] == 3


def test_no_reflection_has_no_reflection_phrases(mixed, synth):
    from deepwriter.synthesis.prompts import find_reflections

    _, records = synth
    full_syn = _synthetic(mixed("full")[2])
    assert all(find_reflections(r["think"]) for r in full_syn.values())
    cfg, res, rows = mixed("ablation-no-reflection")
    assert cfg.synthesis.reflection is False and cfg.data.mix.strip_reflection is True
    syn = _synthetic(rows)
    assert sorted(syn) == sorted(full_syn)
    leftovers = {i: r["think"] for i, r in syn.items() if find_reflections(r["think"])}
    assert leftovers == {}
    # What remains is the plan itself, re-capitalised.
    s = next(iter(sorted(syn)))
    assert syn[s]["think"].startswith(f"Okay, I am given request {int(s[1:])}. The reader comes first.")
    public = {r["id"]: r["think"] for r in rows if r["source"] != "synthetic"}
    assert public == {r["id"]: r["think"] for r in mixed("full")[2] if r["source"] != "synthetic"}


def test_no_reflection_strips_the_prompts_own_example_phrases():
    from deepwriter.synthesis.prompts import find_reflections, strip_reflection

    text = (
        "Hmm, maybe I should open with the sea. Let me think... Let me think about the reader. "
        "Let me reconsider the tone."
    )
    out = strip_reflection(text)
    assert find_reflections(out) == []
    assert out == "I should open with the sea. Thinking about the reader. Reconsidering the tone."


# --- stage sharing through content keys ----------------------------------------------------------


@pytest.mark.parametrize("scale", ["demo", "full"])
@pytest.mark.slow  # starts a run or a server: `make test` only, not test-fast
def test_ablations_share_synthesis_with_full_and_differ_in_the_mix(scale):
    full = _keys("full", scale)
    for recipe in SYNTH_SHARED:
        assert _keys(recipe, scale)["synthesize"] == full["synthesize"], recipe
    assert _keys("ablation-no-reflection", scale)["synthesize"] != full["synthesize"]
    for recipe in ABLATIONS:
        assert _keys(recipe, scale)["mix"] != full["mix"], recipe
    mixes = [_keys(r, scale)["mix"] for r in ABLATIONS]
    assert len(set(mixes)) == len(ABLATIONS)


def test_demo_recipe_is_full_at_demo_scale():
    assert _keys("demo", "demo") == _keys("full", "demo")
    assert _keys("full", "demo")["synthesize"] != _keys("full", "full")["synthesize"]


# --- the Makefile --------------------------------------------------------------------------------


def _make_n(*args: str) -> List[str]:
    out = subprocess.run(["make", "-n", *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_every_recipe_is_a_make_target():
    recipes = sorted(p.stem for p in (REPO / "recipes").glob("*.yaml"))
    assert {"full", "demo", *ABLATIONS} <= set(recipes)
    for recipe in recipes:
        lines = _make_n(recipe, "ARGS=scale=demo")
        pat = rf"\S*python\S* -m deepwriter\.train \+recipe={re.escape(recipe)} scale=demo"
        assert any(re.fullmatch(pat, line.strip()) for line in lines), (recipe, lines)


def test_ablations_demo_runs_every_ablation():
    from deepwriter.commands.ablations import all_ablations

    assert all_ablations() == ABLATIONS
    lines = [ln for ln in _make_n("ablations-demo") if "-m deepwriter.ablations" in ln]
    assert len(lines) == 1, lines
    args = lines[0].split("-m deepwriter.ablations", 1)[1].split()
    assert args[:2] == ["--scale", "demo"] and sorted(args[2:]) == ABLATIONS

"""The authors' synthesis output files as the mix's synthetic part: the field mapping, every malformed
case (named in strict mode, counted otherwise), the mix stage's dependencies and key, and a mix built
from reference-format files next to one built from our shards of the same content."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from deepwriter.core.badinput import DataError
from deepwriter.core.errors import ConfigError
from deepwriter.mix.reference import load_reference_outputs
from deepwriter.testing.repo import FIXTURES, SEED_PAIRS, compose_typed
from deepwriter.testing.repo import bench_overrides as _bench_overrides

FIX = FIXTURES / "data"


def reference_memory(rec: Dict[str, Any], rank: int = 0) -> Dict[str, Any]:
    """What the authors' code writes for one request, built from one of our kept records: the input
    item's fields, their bookkeeping, and one `alist` entry (refined when our search accepted edits)."""
    z0, z_final = rec["z0"], rec["z_final"]
    entry: Dict[str, Any] = {
        "ntokens": 412,
        "initial_response": f"{z0}\n</think>\n<answer>\n{rec['y']}\n</answer>",
        "answer": rec["y"],
        "initial_ppl": [rec.get("scores", [2.0])[0], [{"logprob": -0.5}]],
        "generator": "Qwen2.5-32B-Instruct",
        "thinking_segments": [z0],
    }
    if z_final != z0:
        entry["refine_thinking_step_No.1"] = {"segment_to_refine": z0, "choice": "refinement_No.0"}
        entry["corrected_thinking"] = [s + "\n" for s in z_final.split("\n\n")]  # their segments, unstripped
        entry["finalized_avg_token_logp"] = rec.get("scores", [2.0, 1.5])[-1]
    return {
        "uid": rec["id"],
        "old_solution": None,
        "is_chinese": False,
        "q": rec["x"],
        "ref": rec["y"],
        "history": [],
        "question": rec["x"],
        "index": rec["id"],
        "extra_info": {"index": rec["id"]},
        "category": rec.get("category"),
        "gen_role": "initial_thinking_en",
        "generator": "Qwen2.5-32B-Instruct",
        "alist": [entry],
    }


def write_reference_output(folder: Path, rec: Dict[str, Any], rank: int = 0, text: Optional[str] = None) -> Path:
    """One output file, named and laid out as theirs: one indented JSON object and a newline."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"synth_{rec['id']}_rk{rank}_meta.jsonl"
    body = text if text is not None else json.dumps(reference_memory(rec, rank), indent=2, ensure_ascii=False)
    path.write_text(body + "\n", encoding="utf-8")
    return path


def shard_records(shard_dir: Path):
    return [json.loads(line) for p in sorted(shard_dir.glob("*.jsonl")) for line in p.read_text().splitlines()]


GOOD = {
    "id": "g1",
    "x": "Write a letter to a friend about moving abroad.",
    "y": "Dear Sam, the boxes are packed.",
    "z0": "Okay, I am given a letter. I will start warm.",
    "z_final": "Okay, I am given a letter.\n\nHmm, maybe I start with the boxes. Wait, warmth first.",
    "category": "personal letters & messages",
    "scores": [1.8, 1.2],
}


def test_their_thinking_is_read_as_their_search_read_it(tmp_path):
    """S40: a <think> the model wrote itself stays in z0 (their search scored and split it so); S41: the
    corrected segments rejoined with blank lines, an empty one (an empty rewrite that won) keeping them."""
    memory = reference_memory({**GOOD, "z_final": GOOD["z0"]})
    entry = memory["alist"][0]
    entry["initial_response"] = "Alright, <think> the user wants a letter.\n\nWarm first.\n</think>\n<answer>\nDear Sam"
    entry["corrected_thinking"] = ["Alright, the plan.\n", "", "  Warm first. "]
    entry["finalized_avg_token_logp"] = 1.1
    write_reference_output(tmp_path, GOOD, text=json.dumps(memory, indent=2))
    (z0_rec,), _, _ = load_reference_outputs(tmp_path, "z0", strict=True)
    assert z0_rec["think"] == "Alright, <think> the user wants a letter.\n\nWarm first."
    (final,), _, _ = load_reference_outputs(tmp_path, "z_final", strict=True)
    assert final["think"] == "Alright, the plan.\n\n\n\nWarm first."


def test_fields_map_to_our_record(tmp_path):
    write_reference_output(tmp_path, GOOD)
    write_reference_output(tmp_path, {**GOOD, "id": 7, "z_final": GOOD["z0"], "category": None})
    recs, skipped, not_kept = load_reference_outputs(tmp_path, "z_final", strict=True)
    assert skipped == [] and not_kept == 0
    by_id = {r["id"]: r for r in recs}
    g = by_id["g1"]
    assert (g["x"], g["y"], g["category"], g["source"]) == (GOOD["x"], GOOD["y"], GOOD["category"], "synthetic")
    assert g["think"] == GOOD["z_final"] and g["refined"] is True
    assert (g["score_z0"], g["score_final"]) == (1.8, 1.2)
    assert g["where"] == str(tmp_path / "synth_g1_rk0_meta.jsonl")
    # not refined (their early stop): the initial thinking; an integer uid is an id; no category
    s = by_id["7"]
    assert s["think"] == GOOD["z0"] and s["refined"] is False and s["category"] == "uncategorised"
    assert s["score_final"] == s["score_z0"] == 1.8
    initial, _, _ = load_reference_outputs(tmp_path, "z0", strict=True)
    assert {r["id"]: r["think"] for r in initial} == {"g1": GOOD["z0"], "7": GOOD["z0"]}


def test_best_of_several_rollouts_is_taken(tmp_path):
    mem = reference_memory(GOOD)
    worse = {**mem["alist"][0], "corrected_thinking": ["a worse plan"], "finalized_avg_token_logp": 1.9}
    mem["alist"] = [worse, mem["alist"][0]]
    write_reference_output(tmp_path, GOOD, text=json.dumps(mem, indent=2))
    recs, _, _ = load_reference_outputs(tmp_path, "z_final", strict=True)
    assert recs[0]["think"] == GOOD["z_final"] and recs[0]["score_final"] == 1.2


def _malformed(tmp_path: Path):
    """(file text, field named, words of the reason) for every malformed case."""
    good = json.dumps(reference_memory(GOOD), indent=2)
    mem = reference_memory(GOOD)

    def without(*path):
        m = json.loads(good)
        obj = m
        for p in path[:-1]:
            obj = obj[p]
        del obj[path[-1]]
        return json.dumps(m, indent=2)

    bad_entry = json.loads(good)
    bad_entry["alist"][0]["corrected_thinking"] = "one string, not a list"
    return [
        ("this is not JSON at all", "<file>", "malformed JSON"),
        (good[: len(good) // 2], "<file>", "cut short"),
        (json.dumps([mem]), "<file>", "expected one JSON object, got list"),
        (without("q"), "q", "missing"),
        (without("ref"), "ref", "missing"),
        (without("uid"), "uid", "missing"),
        (without("alist"), "alist", "not finished"),
        (without("alist", 0, "initial_response"), "alist[0].initial_response", "missing"),
        (json.dumps(bad_entry), "alist[0].corrected_thinking", "expected a list of strings"),
    ]


def test_each_malformed_file_is_named_in_strict_mode(tmp_path):
    for i, (text, field, words) in enumerate(_malformed(tmp_path)):
        folder = tmp_path / f"case{i}"
        path = write_reference_output(folder, GOOD, text=text)
        with pytest.raises(DataError) as err:
            load_reference_outputs(folder, "z_final", strict=True)
        assert err.value.where.startswith(str(path)) and err.value.field == field, (i, str(err.value))
        assert words in err.value.reason, (i, str(err.value))
        assert "\n" not in str(err.value)


def test_malformed_files_are_counted_skips_in_lenient_mode(tmp_path):
    cases = _malformed(tmp_path)
    for i, (text, _, _) in enumerate(cases):
        write_reference_output(tmp_path, {**GOOD, "id": f"bad{i}"}, text=text)
    write_reference_output(tmp_path, GOOD)
    write_reference_output(tmp_path, GOOD, rank=1)  # the same uid from another rank: a duplicate
    (tmp_path / "synth_raw_rk0_meta.jsonl").write_bytes(b'{"q": "\xff\xfe"}')
    recs, skipped, _ = load_reference_outputs(tmp_path, "z_final", strict=False)
    assert [r["id"] for r in recs] == ["g1"]
    assert len(skipped) == len(cases) + 2
    assert sorted(s.field for s in skipped) == sorted([c[1] for c in cases] + ["id", "<file>"])
    assert any("duplicate id 'g1'" in s.reason and "rk1" in s.where for s in skipped)
    assert any("not valid UTF-8" in s.reason for s in skipped)


def test_a_folder_without_output_files_is_an_error_in_both_modes(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    for strict in (True, False):
        with pytest.raises(DataError, match="no \\*_meta.jsonl files"):
            load_reference_outputs(tmp_path, "z_final", strict=strict)


def _cfg(tmp_path: Path, *extra: str):
    return compose_typed(
        "data.mix.trajectories_from.kind=reference_output",
        f"paths.stage_store={tmp_path}/store",
        *extra,
    )


def test_the_mix_needs_no_synthesis_and_its_key_follows_the_folder(tmp_path):
    from deepwriter.pipeline.runner import plan

    folder = tmp_path / "ref_out"
    write_reference_output(folder, GOOD)
    cfg = _cfg(tmp_path, f"data.mix.trajectories_from.path={folder}")
    first = plan(cfg)["mix"]
    assert first.needs == [] and f"file:{folder}" in first.input_hashes
    write_reference_output(folder, {**GOOD, "id": "g2"})
    assert plan(cfg)["mix"].key != first.key  # a changed folder re-runs the mix
    ours = plan(compose_typed(f"paths.stage_store={tmp_path}/store"))["mix"]
    assert ours.needs == ["synthesize"]


def test_a_missing_folder_stops_before_work_naming_the_key(tmp_path):
    from deepwriter.mix.stage import preflight

    with pytest.raises(ConfigError, match=r"^data\.mix\.trajectories_from\.path: not set"):
        preflight(_cfg(tmp_path))
    with pytest.raises(ConfigError, match=r"^data\.mix\.trajectories_from\.path: no such folder"):
        preflight(_cfg(tmp_path, f"data.mix.trajectories_from.path={tmp_path}/absent"))
    with pytest.raises(ConfigError, match="data.mix.trajectories_from.kind"):
        compose_typed("data.mix.trajectories_from.kind=ours")


@pytest.mark.slow  # starts a run or a server: `make test` only, not test-fast
def test_reference_files_and_our_shards_give_the_same_mix(tmp_path, shared_dir, model_cache, capsys):
    """The fixture shards (with planted benchmark contamination) mixed as they are, and written as
    the authors' output files and mixed from those: equal counts through every filter, equal rows."""
    import datasets

    from deepwriter.core.contract import StageContext
    from deepwriter.mix.stage import run
    from deepwriter.tracking.runs import Tracker

    shards = tmp_path / "synth" / "shards"
    shutil.copytree(FIX / "shards", shards)
    seeds = [json.loads(line) for line in (shared_dir / SEED_PAIRS).read_text().splitlines()[:3]]
    with open(shards / "shard-00001-of-00002.jsonl", "a") as f:
        for s in seeds:  # benchmark prompts with answers: decontamination must catch them in both
            row = {"id": "c-" + s["id"], "x": s["query"], "y": s["solution"], "z0": "plan", "z_final": "plan"}
            row.update(category="essay & argument", scores=[1.0], verdict={"kept": True, "reason": None})
            f.write(json.dumps(row) + "\n")
    folder = tmp_path / "reference_output"
    kept = [r for r in shard_records(shards) if r["verdict"]["kept"]]
    for r in kept:  # their code writes no file for a request it drops
        write_reference_output(folder, r)

    base = (
        "model@models.student=tiny-qwen3",
        f"paths.cache_dir={model_cache}",
        *_bench_overrides(shared_dir),
        "sft.max_length=2048",
    )
    sources = (
        ("our shards", (), {"synthesize": tmp_path / "synth"}),
        (
            "reference files",
            ("data.mix.trajectories_from.kind=reference_output", f"data.mix.trajectories_from.path={folder}"),
            {},
        ),
    )
    # the default filters, then the ablation filters on top (reflection stripped, longest thinking out)
    settings = {"filters": (), "ablations": ("data.mix.strip_reflection=true", "data.mix.drop_above_quantile=0.7")}
    results = {}
    for setting, knobs in settings.items():
        for name, extra, inputs in sources:
            out = tmp_path / setting / name.replace(" ", "_")
            out.mkdir(parents=True)
            cfg = compose_typed(*base, *knobs, *extra)
            ctx = StageContext("mix", out, inputs, tmp_path, Tracker(None), "k")
            results[setting, name] = (run(cfg, ctx).counts, out)
        ours, theirs = results[setting, "our shards"][0], results[setting, "reference files"][0]
        with capsys.disabled():
            print(f"\n{setting}:\n| count | our shards | reference files |\n|---|---|---|")
            for k in sorted(set(ours) | set(theirs)):
                print(f"| {k} | {ours.get(k)} | {theirs.get(k)} |")
        # The differences are upstream of the mix: a shard also holds the record its search dropped, and
        # imported trajectories meet the quality filters our search applied to its own (these, kept by
        # a search, pass them all: the count says so).
        assert ours["not_kept_by_search"] == 1 and theirs["not_kept_by_search"] == 0
        assert theirs["quality_checked"] == theirs["loaded_synthetic"] and theirs["quality_filtered"] == 0
        upstream = ("not_kept_by_search", "quality_checked", "quality_filtered")
        same = {k: v for k, v in ours.items() if k not in upstream}
        assert same == {k: v for k, v in theirs.items() if k not in upstream}, setting
        assert theirs["removed_contaminated"] == 3 and theirs["removed_exact_duplicate"] == 1
        assert theirs["removed_near_duplicate"] == 1 and theirs["total"] == 8 + theirs["synthetic"]
    assert results["filters", "reference files"][0]["synthetic"] == 4
    assert results["ablations", "reference files"][0]["removed_length_ablation"] >= 1

    for setting in settings:
        a = datasets.load_from_disk(str(results[setting, "our shards"][1] / "dataset"))
        b = datasets.load_from_disk(str(results[setting, "reference files"][1] / "dataset"))
        assert a.to_list() == b.to_list(), setting
    card = (results["filters", "reference files"][1] / "DATA_CARD.md").read_text()
    assert f"the reference code's output files in `{folder}`" in card


def test_the_stage_counts_a_bad_file_in_lenient_mode_and_stops_on_it_in_strict(tmp_path, model_cache):
    from deepwriter.core.contract import StageContext
    from deepwriter.mix.stage import run
    from deepwriter.tracking.runs import Tracker

    folder = tmp_path / "ref_out"
    write_reference_output(folder, GOOD)
    cut = write_reference_output(folder, {**GOOD, "id": "g2"}, text=json.dumps(reference_memory(GOOD), indent=2)[:300])
    opts = (
        "model@models.student=tiny-qwen3",
        f"paths.cache_dir={model_cache}",
        "data.mix.decontam.enabled=false",
        f"data.mix.trajectories_from.path={folder}",
    )
    with pytest.raises(DataError, match=rf"^{cut}: field '<file>': malformed JSON .*cut short"):
        run(_cfg(tmp_path, *opts), StageContext("mix", tmp_path / "a", {}, tmp_path, Tracker(None), "k"))
    out = tmp_path / "b"
    out.mkdir()
    res = run(_cfg(tmp_path, *opts, "data.strict=false"), StageContext("mix", out, {}, tmp_path, Tracker(None), "k"))
    assert res.counts["skipped_bad_records"] == 1 and res.counts["synthetic"] == 1
    (skip,) = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert skip["where"].startswith(str(cut)) and skip["field"] == "<file>" and "cut short" in skip["reason"]


@pytest.mark.slow  # starts a run or a server: `make test` only, not test-fast
def test_listing_synthesize_beside_imported_trajectories_stops_before_work(tmp_path, model_cache):
    """Synthesize listed before the mix; with trajectories imported (or none taken) nothing would read
    the search's output: the run stops with one line naming recipe.stages and the stages to run. (Tiny
    models: a run that does not stop is over soon.)"""
    import os
    import subprocess
    import sys

    from deepwriter.testing.repo import REPO

    folder = tmp_path / "ref_out"
    write_reference_output(folder, GOOD)
    imported = ("data.mix.trajectories_from.kind=reference_output", f"data.mix.trajectories_from.path={folder}")
    tiny = ["recipe.stages=[synthesize,mix]", f"paths.cache_dir={model_cache}", "synthesis.limit=1"]
    tiny += [f"model@models.{role}=tiny-qwen3" for role in ("generator", "scorer", "student")]
    tiny += ["synthesis.initial.max_new_tokens=8", "synthesis.max_steps=0", "data.mix.decontam.enabled=false"]
    for extra, why in (
        (imported, "data.mix.trajectories_from.kind=reference_output imports the trajectories"),
        (("data.mix.synthetic=0",), "data.mix.synthetic=0 takes no trajectories"),
    ):
        runs = tmp_path / "runs"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "deepwriter.train",
                "+recipe=demo",
                f"paths.runs_dir={runs}",
                "run_id=r",
                *tiny,
                *extra,
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=240,  # it stops before any work; two runs stay inside the test's 600 s
            env={**os.environ, "WANDB_MODE": "disabled"},
        )
        lines = [x for x in done.stderr.splitlines() if x.startswith("deepwriter:")]
        assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
        assert lines[0].startswith("deepwriter: config error: recipe.stages: lists 'synthesize', but " + why)
        assert lines[0].endswith("drop it: recipe.stages=[mix]"), lines[0]
        assert not (runs / "_stages").exists()  # no stage began


def test_imported_trajectories_meet_the_papers_quality_filters_unless_switched_off(tmp_path, model_cache):
    """The authors' output, imported: a looping trajectory and one still reflecting at its end are
    removed by the same filters our search applies (each listed with its reason, counted), by default;
    `quality_filters=false` takes them as they are; the switch is in the mix's key."""
    from deepwriter.core.contract import StageContext
    from deepwriter.mix.stage import run
    from deepwriter.pipeline.runner import plan
    from deepwriter.synthesis import filters
    from deepwriter.tracking.runs import Tracker

    plan_text = "Okay, a letter to Sam about moving abroad: the boxes, the new street, and a warm close."
    looping = {**GOOD, "id": "loop", "z_final": "I plan the letter. " + "the boxes are packed and " * 20}
    late = {**GOOD, "id": "late", "z_final": plan_text + " I open with the news. Hmm."}
    clean = {**GOOD, "id": "clean", "z_final": plan_text}
    for rec, topic in ((looping, "a harbour town"), (late, "a winter in Oslo"), (clean, "a desert road trip")):
        # requests and answers of their own: the near-duplicate filter must not be what removes them
        rec.update(x=f"Write a letter to a friend about {topic}.", y=f"Dear Sam, {topic} changed my year.")
    fc = compose_typed().synthesis.filters
    assert filters.after_search(looping["z_final"], fc, "en") == filters.REPETITION  # what the fixtures are
    assert filters.after_search(late["z_final"], fc, "en") == filters.LATE_REFLECTION
    assert filters.after_search(clean["z_final"], fc, "en") is None
    folder = tmp_path / "ref_out"
    for rec in (looping, late, clean):
        write_reference_output(folder, rec)
    opts = (
        "model@models.student=tiny-qwen3",
        f"paths.cache_dir={model_cache}",
        "data.mix.decontam.enabled=false",
        f"data.mix.trajectories_from.path={folder}",
    )
    results = {}
    for name, extra in (("on", ()), ("off", ("data.mix.trajectories_from.quality_filters=false",))):
        out = tmp_path / name
        out.mkdir()
        cfg = _cfg(tmp_path, *opts, *extra)
        res = run(cfg, StageContext("mix", out, {}, tmp_path, Tracker(None), "k"))
        results[name] = (res.counts, out, plan(cfg)["mix"].key)
    on, out, key_on = results["on"]
    assert on["quality_checked"] == 3 and on["quality_filtered"] == 2 and on["synthetic"] == 1
    assert on["removed_repetition"] == 1 and on["removed_late_reflection"] == 1
    for reason, rid in (("repetition", "loop"), ("late_reflection", "late")):
        (dropped,) = [json.loads(x) for x in (out / "dropped" / f"{reason}.jsonl").read_text().splitlines()]
        assert dropped["id"] == rid and reason in dropped["reason"]
    card = (out / "DATA_CARD.md").read_text()
    assert "3 imported trajectories checked, 2 removed (late_reflection 1, repetition 1)" in card
    off, out, key_off = results["off"]
    assert off["synthetic"] == 3 and "quality_checked" not in off and key_off != key_on
    assert "quality_filters=false" in (out / "DATA_CARD.md").read_text()

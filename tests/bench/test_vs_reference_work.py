"""The head-to-head bench's reading of the search work each side did (bench/vs_reference.py): which pairs
reached a rewrite step, how many steps and scored rewrites, from our records and from the authors' output
files, and the goal's figure that follows (pairs per minute only where the work was the same)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.vs_reference import like_for_like, our_search_work, their_search_work

PAIRS = [{"id": i} for i in ("a", "b", "c")]


def _their_file(folder, uid, steps):
    """One of their `<prefix>_<uid>_rk0_meta.jsonl` files: one rollout, `steps` rewrite steps, each with
    the number of scored rewrites given."""
    entry = {"initial_response": "z0</think>answer", "initial_ppl": [1.5, []]}
    for i, scored in enumerate(steps, start=1):
        entry[f"refine_thinking_step_No.{i}"] = {"possible_refinements": [{str(k): {}} for k in range(scored)]}
    (folder / f"reer_{uid}_rk0_meta.jsonl").write_text(json.dumps({"uid": uid, "q": "x", "ref": "y", "alist": [entry]}))


def _our_record(pid, steps):
    return {
        "id": pid,
        "steps": [{"candidates": [{"score": 1.0}] * scored + [{"score": None}] * (2 - scored)} for scored in steps],
    }


def test_both_sides_work_is_read_and_the_goal_figure_follows_it(tmp_path):
    # theirs: a searched for two steps (1 and 0 rewrites scored), b reached the search but stopped before
    # a step (z0 under the threshold), c dropped before scoring (no file)
    _their_file(tmp_path, "a", [1, 0])
    _their_file(tmp_path, "b", [])
    theirs = their_search_work(tmp_path, PAIRS)
    assert (theirs.searched, theirs.steps, theirs.scored_rewrites) == (["a"], 2, 1)
    ours = our_search_work([_our_record("a", [2, 0]), _our_record("b", []), _our_record("c", [1])])
    assert (ours.searched, ours.steps, ours.scored_rewrites) == (["a", "c"], 3, 3)
    verdict = like_for_like(ours, theirs)
    assert verdict["searched_by_both"] == ["a"] and verdict["searched_only_by_deepwriter"] == ["c"]
    assert not verdict["same_work"] and verdict["goal_figure"] is None  # no like-for-like figure
    # the same pairs for the same steps: pairs per minute compare the same work
    same = like_for_like(our_search_work([_our_record("a", [0, 0])]), theirs)
    assert same["same_work"] and same["goal_figure"] == "pairs_per_min"


def test_their_scores_of_the_same_triples_are_kept_and_of_other_triples_computed_again(tmp_path, monkeypatch):
    """A run cut short during our half of the agreement keeps the authors' scores (minutes of their
    scorer); `--agreement-only` then scores only our half. Other triples are never given old scores."""
    from bench import vs_reference

    runs = []

    def their_scorer(cmd, **kwargs):  # bench._reference_scoring: one score per triple in the file
        triples = json.loads(Path(cmd[3]).read_text())
        Path(cmd[4]).write_text(json.dumps([{"score": len(t["z"])} for t in triples]))
        runs.append(len(triples))
        return 0

    monkeypatch.setattr(vs_reference, "run_group", their_scorer)
    monkeypatch.setattr(vs_reference._reference_env, "ensure", lambda: "python")
    first = [{"x": "x", "y": "y", "z": "zz"}]
    assert vs_reference.their_scores(first, "model", 1, tmp_path) == [{"score": 2}]
    assert vs_reference.their_scores(first, "model", 1, tmp_path) == [{"score": 2}]
    assert runs == [1]
    other = first + [{"x": "x", "y": "y", "z": "zzz"}]
    assert vs_reference.their_scores(other, "model", 1, tmp_path) == [{"score": 2}, {"score": 3}]
    assert runs == [1, 2]


def test_the_runs_figures_are_written_before_the_agreement_that_may_be_cut_short(tmp_path, monkeypatch):
    """The two searches take most of a run (a real one: 20 min): their figures are on disk before the
    agreement starts, so a time limit during it loses only the agreement (`--agreement-only` redoes it)."""
    import pytest

    from bench import vs_reference
    from deepwriter.llm import models

    class Server:
        url, startup_s = "http://127.0.0.1:1/v1", [1.0]

        def kill(self):
            pass

    meter = {k: 0.0 for k in (*vs_reference.COUNTERS, "calls", "failed_calls")}
    counts = {"kept": 0, "discarded_single_segment": 2}
    monkeypatch.setattr(vs_reference.signal, "signal", lambda *a: None)  # main's SIGTERM handler: not in pytest
    monkeypatch.setattr(vs_reference._reference_env, "ensure", lambda: "python")
    monkeypatch.setattr(models, "resolve", lambda preset, cache: ("model-dir", {}))
    monkeypatch.setattr(vs_reference, "start_server", lambda *a: Server())
    monkeypatch.setattr(vs_reference, "scrape", lambda root: dict(meter))
    monkeypatch.setattr(
        vs_reference,
        "run_reference",
        lambda pairs, work, *a: {"process_wall_s": 60.0, "search_wall_s": 60.0, "out": work, "too_short": 0},
    )
    monkeypatch.setattr(
        vs_reference,
        "run_deepwriter",
        lambda *a: {"process_wall_s": 30.0, "search_wall_s": 30.0, "counts": counts, "records": [], "cfg": None},
    )

    def cut_short(*a):
        raise TimeoutError("the bench's time limit")

    monkeypatch.setattr(vs_reference, "agreement", cut_short)
    out = tmp_path / "result.json"
    with pytest.raises(TimeoutError):
        vs_reference.main(["--pairs", "2", "--work", str(tmp_path / "w"), "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["agreement"] is None and written["speedup_all_pairs_per_run"] == [2.0]
    assert [r["pairs_per_min"] for r in (written["rows"]["reference"][0], written["rows"]["deepwriter"][0])] == [2, 4]
    assert "| pairs_per_min |" in out.with_suffix(".md").read_text()

    # --agreement-only on the same folder completes that result rather than replacing it
    w = tmp_path / "w"
    (w / "reference-0").mkdir(exist_ok=True)
    (w / "deepwriter-0" / "synthesize" / "shards").mkdir(parents=True)
    (w / "deepwriter-0" / "synthesize" / "shards" / "shard-00000-of-00001.jsonl").write_text("")
    (w / "deepwriter-0" / "pairs.jsonl").write_text(json.dumps({"id": "a"}) + "\n")
    agree = {"within_tolerance": 20, "triples": 20, "english": 14, "chinese": 6, "one_segment_y": 0}
    agree.update(max_abs_diff=0.0, mean_abs_diff=0.0, wording_effect_mean=0.0, wording_effect_sd=0.0)
    agree.update(wording_effect_max_abs=0.0)
    monkeypatch.setattr(vs_reference, "deepwriter_config", lambda *a: None)
    monkeypatch.setattr(vs_reference, "agreement", lambda *a: agree)
    vs_reference.main(["--agreement-only", "--work", str(w), "--out", str(out)])
    completed = json.loads(out.read_text())
    assert completed["agreement"] == agree and completed["rows"] == written["rows"]
    assert "score agreement: 20/20" in out.with_suffix(".md").read_text()

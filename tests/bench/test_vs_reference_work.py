"""The head-to-head bench's reading of the search work each side did (bench/vs_reference.py): which pairs
reached a rewrite step, how many steps and scored rewrites, from our records and from the authors' output
files, and the goal's figure that follows (pairs per minute only where the work was the same)."""

from __future__ import annotations

import json

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
        triples = json.loads(open(cmd[3]).read())
        open(cmd[4], "w").write(json.dumps([{"score": len(t["z"])} for t in triples]))
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

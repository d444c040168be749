"""The REER reference's input formats as pair sources: a JSON list of {index, question, solution},
Parquet with the index under extra_info.index, and solutions that carry their thinking (y is what
follows the last </think>). Malformed cases name file and field, or are counted skips."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from deepwriter.config.data import SourceConfig
from deepwriter.core.badinput import DataError
from deepwriter.pairs.read import load_pairs
from deepwriter.testing.repo import REPO, compose_typed

REF_FIELDS = {"id": "index", "x": "question", "y": "solution"}


def _src(path, fields=REF_FIELDS):
    return SourceConfig(name="ref", path=str(path), fields=dict(fields))


def test_json_list_of_the_reference_format(tmp_path):
    f = tmp_path / "QAcollection.json"
    rows = [
        {"index": 0, "question": "Write a haiku about rain.", "solution": "Rain on the tin roof"},
        {"index": 1, "question": "写一首诗", "solution": "<think>\n先想想读者\n</think>\n\n春风又绿江南岸"},
    ]
    f.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    pairs, skipped = load_pairs(_src(f), strict=True)
    assert skipped == [] and [p.id for p in pairs] == ["0", "1"]
    assert pairs[0].y == "Rain on the tin roof" and "answer_after_think" not in pairs[0].meta
    assert pairs[1].y == "春风又绿江南岸" and pairs[1].meta["answer_after_think"] is True
    assert pairs[1].meta["where"] == f"{f}:[1]"


def test_nothing_after_think_and_bad_items_name_file_and_field(tmp_path):
    f = tmp_path / "ref.json"
    f.write_text(json.dumps([{"index": 0, "question": "q", "solution": "<think>only thinking</think>  \n"}]))
    with pytest.raises(DataError, match=rf"{f}:\[0\].*'y'.*nothing after the last </think>"):
        load_pairs(_src(f), strict=True)
    both = tmp_path / "both.json"
    both.write_text(json.dumps(json.loads(f.read_text()) + [["not", "an", "object"]]))
    pairs, skipped = load_pairs(_src(both), strict=False)  # lenient: counted skips, each named
    assert pairs == [] and len(skipped) == 2
    text = [str(s) for s in skipped]
    assert any(f"{both}:[1]" in t and "expected a JSON object, got list" in t for t in text)
    assert any(f"{both}:[0]" in t and "nothing after the last </think>" in t for t in text)


def test_wrong_top_level_type_and_a_file_cut_short(tmp_path):
    obj = tmp_path / "obj.json"
    obj.write_text(json.dumps({"data": [{"index": 0, "question": "q", "solution": "s"}]}))
    with pytest.raises(DataError, match=r"obj.json:1.*'<file>'.*expected a JSON list of objects, got dict"):
        load_pairs(_src(obj), strict=True)
    cut = tmp_path / "cut.json"
    cut.write_text('[{"index": 0, "question": "q", "solution": "s"}, {"index": 1, "quest')
    with pytest.raises(DataError, match=r"cut.json:1.*malformed JSON"):
        load_pairs(_src(cut), strict=True)
    # JSON Lines saved as .json still read, one object per line
    lines = tmp_path / "lines.json"
    rows = [{"index": 0, "question": "q", "solution": "s"}, {"index": 1, "question": "q2", "solution": "t"}]
    lines.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [p.id for p in load_pairs(_src(lines), strict=True)[0]] == ["0", "1"]


def test_parquet_with_the_index_under_extra_info(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "train.parquet"
    table = pa.table(
        {
            "question": ["Write a toast.", "Write a memo."],
            "solution": ["To the couple!", "<think>plan</think>Team, the memo."],
            "extra_info": [{"index": 7, "split": "train"}, {"index": 8, "split": "train"}],
        }
    )
    pq.write_table(table, f)
    fields = {"id": "extra_info.index", "x": "question", "y": "solution"}
    pairs, _ = load_pairs(_src(f, fields), strict=True)
    assert [(p.id, p.y) for p in pairs] == [("7", "To the couple!"), ("8", "Team, the memo.")]
    missing = {"id": "extra_info.uid", "x": "question", "y": "solution"}
    with pytest.raises(DataError, match=r"train.parquet:1.*'id'.*extra_info.uid"):
        load_pairs(_src(f, missing), strict=True)
    with pytest.raises(DataError, match=r"'id'.*mapped to column 'meta.index'"):
        load_pairs(_src(f, {**fields, "id": "meta.index"}), strict=True)


# The README's line for their JSON list under the demo recipe (FILE: where the file lies).
README_LINE = re.compile(
    r"'(data\.pairs=\{name: qa, path: )QAcollection\.json(, hub_id: null, fields: \{id: index, x: question, "
    r"y: solution\}\})'"
)


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deepwriter.train", "+recipe=demo", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )


@pytest.mark.slow  # starts a run or a server: `make test` only, not test-fast
def test_the_readme_line_for_their_json_list_runs_under_the_demo_recipe(tmp_path, model_cache):
    """The demo maps `category` too and Hydra merges the user's fields into it: their file has no
    category, so the pairs stay uncategorised (counted) or are labelled when labelling is on; a merged
    mapping the file lacks (the demo's `id: id` when the user maps no id) names the override that
    removes it, and that override runs."""
    line = README_LINE.search((REPO / "README.md").read_text())
    assert line, "README: the line for their JSON list"
    f = tmp_path / "QAcollection.json"
    rows = [
        {"index": i, "question": f"Write a short note to a neighbour about {t}.", "solution": f"Dear neighbour, {t}."}
        for i, t in enumerate(["the garden", "a parcel", "the noise"])
    ]
    f.write_text(json.dumps(rows), encoding="utf-8")
    override = line.group(1) + str(f) + line.group(2)
    tiny = [
        "model@models.generator=tiny-qwen3",
        "model@models.scorer=tiny-qwen3",
        f"paths.cache_dir={model_cache}",
        f"paths.runs_dir={tmp_path}/runs",
        "synthesis.initial.max_new_tokens=8",
        "synthesis.refine.max_new_tokens=4",
        "synthesis.max_steps=1",
        "recipe.stages=[synthesize]",
    ]
    for labels, run in (("false", "plain"), ("true", "labelled")):
        done = _train(override, *tiny, f"data.label_categories={labels}", f"run_id={run}")
        assert done.returncode == 0, done.stderr[-3000:]
        stage = tmp_path / "runs" / "demo" / run / "synthesize"
        counts = json.loads((stage / "manifest.json").read_text())["counts"]
        records = [
            json.loads(x) for s in sorted((stage / "shards").glob("*.jsonl")) for x in s.read_text().splitlines()
        ]
        assert counts["pairs"] == 3 and sorted(r["id"] for r in records) == ["0", "1", "2"]
        if labels == "false":
            assert counts["uncategorised"] == 3 and [r["category"] for r in records] == [None] * 3
        else:
            taxonomy = {c for cats in compose_typed("+recipe=demo").data.taxonomy.values() for c in cats}
            assert counts["uncategorised"] == 0 and all(r["category"] in taxonomy for r in records), records
    no_id = override.replace("id: index, ", "")
    done = _train(no_id, *tiny, "run_id=no-id")
    (error,) = [x for x in done.stderr.split("\n") if x.startswith("deepwriter: error: ")]
    assert done.returncode == 2 and f"{f}:[0]: field 'id': mapped to 'id', which the record lacks" in error
    remedy = re.search(r"(~data\.pairs\.fields\.id) removes it", error)
    assert remedy, error
    cfg = compose_typed("+recipe=demo", no_id, remedy.group(1))
    pairs, _ = load_pairs(cfg.data.pairs, cfg.data.strict, key="data.pairs")
    assert [(p.id, p.meta.get("category")) for p in pairs] == [(f"qa-{i:06d}", None) for i in (1, 2, 3)]

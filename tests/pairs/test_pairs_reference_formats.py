"""The REER reference's input formats as pair sources: a JSON list of {index, question, solution},
Parquet with the index under extra_info.index, and solutions that carry their thinking (y is what
follows the last </think>). Malformed cases name file and field, or are counted skips."""

from __future__ import annotations

import json

import pytest

from deepwriter.config.data import SourceConfig
from deepwriter.core.badinput import DataError
from deepwriter.pairs.read import load_pairs

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

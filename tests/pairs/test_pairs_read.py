"""Loading pairs and public reasoning data: formats, field mapping, and bad input named by file:line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from deepwriter.config.data import SourceConfig
from deepwriter.mix.public import load_public
from deepwriter.pairs.read import DataError, Pair, Skipped, load_pairs
from deepwriter.testing.repo import FIXTURES

FIX = FIXTURES / "data"
MAP = {"id": "uid", "x": "prompt", "y": "response", "category": "genre"}


def src(path, fields=MAP, **kw) -> SourceConfig:
    return SourceConfig(name="fx", path=str(path), fields=dict(fields), **kw)


def test_jsonl_csv_and_parquet_load_the_same_pairs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (FIX / "pairs.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pairs.parquet")
    loaded = {}
    for path in (FIX / "pairs.jsonl", FIX / "pairs.csv", tmp_path / "pairs.parquet"):
        pairs, skipped = load_pairs(src(path), strict=True)
        assert skipped == []
        loaded[path.suffix] = [(p.id, p.x, p.y, p.meta["category"]) for p in pairs]
    assert loaded[".jsonl"] == loaded[".csv"] == loaded[".parquet"]
    assert loaded[".jsonl"][1][0] == "p2" and loaded[".jsonl"][1][3] == "business correspondence"
    assert loaded[".jsonl"][0][2].startswith("Tin roof drums")


def test_demo_pairs_through_pkg_path():
    pairs, skipped = load_pairs(
        SourceConfig(
            name="demo",
            path="pkg://deepwriter/data/demo/pairs.jsonl",
            fields={"id": "id", "x": "request", "y": "answer", "category": "category"},
        ),
        True,
    )
    assert len(pairs) == 8 and not skipped
    assert len({p.meta["category"] for p in pairs}) == 8
    for p in pairs:
        assert isinstance(p, Pair) and 120 <= len(p.y.split()) <= 220, p.id
        assert p.meta["source"] == "demo"


def test_limit_and_generated_ids():
    pairs, _ = load_pairs(src(FIX / "pairs.jsonl", {"x": "prompt", "y": "response"}, limit=2), True)
    assert [p.id for p in pairs] == ["fx-000001", "fx-000002"]


def test_strict_mode_stops_at_the_first_bad_line():
    with pytest.raises(DataError) as err:
        load_pairs(src(FIX / "pairs_bad.jsonl"), strict=True)
    msg = str(err.value)
    assert msg.startswith(f"{FIX / 'pairs_bad.jsonl'}:2: field '<line>': malformed JSON")


def test_lenient_mode_counts_every_bad_record():
    pairs, skipped = load_pairs(src(FIX / "pairs_bad.jsonl"), strict=False)
    assert [p.id for p in pairs] == ["p1", "p3"]
    got = [(s.where.rsplit(":", 1)[1], s.field, s.reason) for s in skipped]
    # the JSON parser's own words are CPython's (they change between versions); the column is ours
    assert re.fullmatch(r"malformed JSON \(.+: column 25\)", got[0][2]), got[0]
    got[0] = got[0][:2] + ("malformed JSON",)
    assert got == [
        ("2", "<line>", "malformed JSON"),
        ("3", "y", "mapped to 'response', which the record lacks"),
        ("4", "x", "empty"),
        ("5", "y", "expected a string, got list"),
    ]
    assert all(isinstance(s, Skipped) for s in skipped)


def _write(path: Path, lines: list) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def test_each_bad_input_kind_in_strict_mode(tmp_path):
    good = json.dumps({"uid": "a", "prompt": "Write.", "response": "Done.", "genre": "poetry & lyrics"}).encode()
    cases = {
        "non_utf8": (
            b'{"uid": "b", "prompt": "Write \xff\xfe.", "response": "Done.", "genre": "g"}',
            "x",
            "not valid UTF-8",
        ),
        "null_y": (b'{"uid": "b", "prompt": "Write.", "response": null, "genre": "g"}', "y", "missing (null)"),
        "int_x": (b'{"uid": "b", "prompt": 7, "response": "Done.", "genre": "g"}', "x", "expected a string, got int"),
        "not_object": (b'["a", "b"]', "<line>", "expected a JSON object"),
        "dup_id": (good, "id", "duplicate id 'a' (first at"),
        "missing_mapped_id": (  # the remedy is named: the override that removes a mapping from the recipe
            b'{"prompt": "Write.", "response": "Done.", "genre": "g"}',
            "id",
            "mapped to 'uid', which the record lacks; not your mapping? the recipe's fields are merged with yours: "
            "~data.pairs.fields.id removes it",
        ),
    }
    for name, (bad, field, words) in cases.items():
        path = _write(tmp_path / f"{name}.jsonl", [good, b"", bad])
        with pytest.raises(DataError) as err:
            load_pairs(src(path), strict=True, key="data.pairs")
        assert str(err.value).startswith(f"{path}:3: field '{field}': "), (name, str(err.value))
        assert words in str(err.value), (name, str(err.value))
        assert err.value.where == f"{path}:3" and err.value.field == field
        pairs, skipped = load_pairs(src(path), strict=False)
        assert len(pairs) == 1 and len(skipped) == 1 and skipped[0].field == field


def test_an_optional_field_the_record_lacks_leaves_the_pair_uncategorised(tmp_path):
    """category is optional: a record without the mapped field is a pair without a category (labelled
    later when data.label_categories is on), in every format; a required field stays required."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"uid": "a", "prompt": "Write.", "response": "Done.", "genre": "poetry & lyrics"}]
    rows.append({"uid": "b", "prompt": "Write more.", "response": "Done again."})
    jsonl = _write(tmp_path / "p.jsonl", [json.dumps(r).encode() for r in rows])
    pq.write_table(pa.Table.from_pylist(rows[1:]), tmp_path / "p.parquet")  # no genre column at all
    (tmp_path / "p.csv").write_text("uid,prompt,response\nb,Write more.,Done again.\n")
    pairs, skipped = load_pairs(src(jsonl), strict=True)
    assert skipped == [] and [(p.id, p.meta.get("category")) for p in pairs] == [("a", "poetry & lyrics"), ("b", None)]
    for f in (tmp_path / "p.parquet", tmp_path / "p.csv"):
        pairs, _ = load_pairs(src(f), strict=True)
        assert [(p.id, p.y, p.meta.get("category")) for p in pairs] == [("b", "Done again.", None)], f
    with pytest.raises(DataError, match=r"p\.csv:1: field 'y': mapped to column 'answer', which the file lacks"):
        load_pairs(src(tmp_path / "p.csv", {**MAP, "y": "answer"}), strict=True)


def test_columnar_file_with_an_unknown_mapping_fails_in_both_modes(tmp_path):
    for strict in (True, False):
        with pytest.raises(
            DataError, match=r"pairs\.csv:1: field 'y': mapped to column 'answer', which the file lacks"
        ):
            load_pairs(src(FIX / "pairs.csv", {"x": "prompt", "y": "answer"}), strict=strict)


def test_csv_line_numbers_follow_multiline_records(tmp_path):
    path = tmp_path / "multi.csv"
    path.write_text('uid,prompt,response,genre\na,"Two\nlines",Fine.,g\nb,,Empty prompt.,g\n')
    with pytest.raises(DataError, match=r"multi\.csv:4: field 'x': empty"):
        load_pairs(src(path), strict=True)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_pairs(src(tmp_path / "nope.jsonl"), True)
    folder = tmp_path / "pairs"
    folder.mkdir()
    (folder / "train.jsonl").write_text("")
    with pytest.raises(DataError) as err:  # a folder given as the pairs file: said so, not "no such file"
        load_pairs(src(folder), True)
    assert str(err.value).startswith(f"{folder}: field 'path': a folder, not a file") and "hub_id" in str(err.value)
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match="unknown format '.txt'"):
        load_pairs(src(tmp_path / "a.txt"), True)


def test_public_reasoning_fields_and_conversations():
    recs, skipped = load_public(
        src(FIX / "reasoning.jsonl", {"id": "qid", "x": "question", "think": "reasoning", "y": "answer"}), True
    )
    assert [r["id"] for r in recs] == ["r1", "r2", "r3"] and not skipped
    assert recs[1]["think"].startswith("91 = 7 * 13") and recs[1]["y"] == "No"

    conv = src(FIX / "conversations.jsonl", {"conversations": "conversations"})
    with pytest.raises(
        DataError, match=r"conversations\.jsonl:3: field 'conversations': assistant turn has no thinking block"
    ):
        load_public(conv, True)
    recs, skipped = load_public(conv, False)
    assert [(r["x"], r["think"], r["y"]) for r in recs] == [
        ("What is 2 + 3?", "Adding 2 and 3 gives 5.", "5"),
        ("Name a prime above 10.", "11 has no divisors but 1 and 11.", "11"),
    ]
    assert len(skipped) == 1 and skipped[0].where.endswith(":3")


def test_demo_reasoning_file_is_complete():
    recs, skipped = load_public(
        SourceConfig(
            name="demo-reasoning",
            path="pkg://deepwriter/data/demo/reasoning.jsonl",
            fields={"id": "id", "x": "question", "think": "reasoning", "y": "answer"},
        ),
        True,
    )
    assert len(recs) == 8 and not skipped
    assert all(len(r["think"].split()) >= 20 for r in recs)


def test_hub_id_and_split_go_through_load_dataset(tmp_path, monkeypatch):
    """`hub_id` + `split` is read by datasets.load_dataset. Offline, a folder laid out like a hub
    dataset repo (data/<split>-*.jsonl) under the id's name resolves through the same call."""
    import json

    from deepwriter.config.data import SourceConfig
    from deepwriter.pairs.read import DataError, load_pairs

    repo = tmp_path / "org" / "writing-pairs" / "data"
    repo.mkdir(parents=True)
    rows = {
        "train": [{"prompt": f"Write note {i}.", "completion": f"Note {i}, written."} for i in range(3)],
        "test": [
            {"prompt": "Write a haiku.", "completion": "Old pond, a frog."},
            {"prompt": "Write a toast.", "completion": ""},
        ],
    }
    for split, recs in rows.items():
        (repo / f"{split}-00000-of-00001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    monkeypatch.chdir(tmp_path)
    src = SourceConfig(
        name="hub-pairs", hub_id="org/writing-pairs", split="train", fields={"x": "prompt", "y": "completion"}
    )
    pairs, skipped = load_pairs(src, strict=True)
    assert [(p.x, p.y) for p in pairs] == [(r["prompt"], r["completion"]) for r in rows["train"]] and not skipped
    assert pairs[1].meta["where"] == "org/writing-pairs[train]:2"
    test = SourceConfig(
        name="hub-pairs", hub_id="org/writing-pairs", split="test", fields={"x": "prompt", "y": "completion"}
    )
    with pytest.raises(DataError, match=r"org/writing-pairs\[test\]:2.*field 'y'"):
        load_pairs(test, strict=True)
    pairs, skipped = load_pairs(test, strict=False)
    assert len(pairs) == 1 and [s.where for s in skipped] == ["org/writing-pairs[test]:2"]

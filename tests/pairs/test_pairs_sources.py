"""Source shapes -> pairs: scored human responses and long texts (Gutenberg-style), with bad input
named by file:line:field."""

from __future__ import annotations

import json
import re

import pytest

from deepwriter.config.data import LongTextConfig, ScoredResponsesConfig, SourceConfig
from deepwriter.pairs.read import DataError
from deepwriter.pairs.sources import cut_pieces, load_source, paragraphs, read_ready_pairs
from deepwriter.testing.repo import FIXTURES, compose_typed

FIX = FIXTURES / "data" / "sources"
BOOK = FIX / "gutenberg_small.txt"
ROWS = {"id": "rid", "x": "prompt", "y": "response", "score": "upvotes"}


def book(target=60, min_words=20, strip=True, path=BOOK, **kw) -> SourceConfig:
    return SourceConfig(
        name="book",
        kind="long_text",
        path=str(path),
        long_text=LongTextConfig(target_words=target, min_words=min_words, strip_boilerplate=strip),
        **kw,
    )


def scored(path, fields=ROWS, top_k=1, min_score=None, **kw) -> SourceConfig:
    return SourceConfig(
        name="wp",
        kind="scored_responses",
        path=str(path),
        fields=dict(fields),
        scored=ScoredResponsesConfig(top_k=top_k, min_score=min_score),
        **kw,
    )


# --- long texts --------------------------------------------------------------------------------


def test_gutenberg_boilerplate_and_front_matter_are_removed():
    loaded = load_source(book(), strict=True)
    text = "\n\n".join(p.y for p in loaded.pairs)
    for gone in (
        "Project Gutenberg",
        "PROJECT GUTENBERG",
        "licence",
        "Produced by",
        "CONTENTS",
        "Wenna Trask",
        "Illustration",
        "* *",
        "Updated editions",
        "_",
    ):
        assert gone not in text, gone
    assert loaded.pairs[0].y.startswith("The toll house stood where the salt road bent away")
    assert loaded.pairs[-1].y.endswith("a boy came out to ask her what she was selling.")
    assert "two boards of oiled oak, so that" in text  # italics markers gone, hard wraps joined
    assert all(p.x == "" for p in loaded.pairs)
    assert loaded.counts["documents"] == 1


def test_pieces_are_cut_at_paragraph_boundaries_near_the_target():
    src_paras = {p.text for p in paragraphs(BOOK.read_text())}
    loaded = load_source(book(target=120, min_words=20), strict=True)
    assert [p.id for p in loaded.pairs] == [f"gutenberg_small-p{k:04d}" for k in range(1, 5)]
    for p in loaded.pairs:
        assert all(part in src_paras for part in p.y.split("\n\n")), p.id  # whole paragraphs only
    # The 195-word paragraph is under twice the target: it stays whole, with its chapter headings.
    debt = loaded.pairs[2].y
    assert debt.startswith("CHAPTER II.\n\nA Debt in Barley\n\nThe mare's saddlebag")
    assert debt.endswith("only a story her grandmother had wanted someone to find.")
    # Headings never end a piece: they open the piece of the paragraph they head.
    assert not any(re.search(r"CHAPTER [IV]+\.$", p.y) for p in loaded.pairs)
    # `where` points at the line the piece starts on.
    lines = BOOK.read_text().splitlines()
    for p in loaded.pairs:
        line = int(p.meta["where"].rsplit(":", 1)[1])
        assert p.y.split()[0] in lines[line - 1], (p.id, lines[line - 1])


def test_a_paragraph_over_twice_the_target_is_cut_at_sentence_ends():
    target = 60
    paras = [p.text for p in paragraphs(BOOK.read_text())]
    loaded = load_source(book(target=target, min_words=20), strict=True)

    def norm(text: str) -> str:
        return " ".join(text.split())

    # Nothing is lost, repeated or reordered anywhere: the pieces, read in order, are the book's
    # paragraphs in order (a piece joins whole paragraphs, or holds a run of one long paragraph's
    # sentences).
    assert norm(" ".join(p.y for p in loaded.pairs)) == norm(" ".join(paras))
    (long,) = [t for t in paras if len(t.split()) > 2 * target]  # the fixture has one such paragraph
    long = norm(long)
    # Its runs of sentences, in the order of the pieces, make up the paragraph exactly ...
    runs = [norm(part) for p in loaded.pairs for part in p.y.split("\n\n") if norm(part) in long]
    assert len(runs) >= 3 and " ".join(runs) == long
    # ... and every run starts and ends with whole sentences, near the target length.
    sentences = re.split(r"(?<=[.?!])\s+", long)
    assert len(sentences) > len(runs)
    for run in runs:
        assert any(run.startswith(s) for s in sentences) and any(run.endswith(s) for s in sentences), run
        assert target // 2 <= len(run.split()) <= int(1.5 * target), len(run.split())


def test_min_words_drops_and_counts_short_pieces():
    paras = paragraphs("First paragraph has five words.\n\n" + "word " * 40 + ".\n\nTail is short here.")
    pieces, short = cut_pieces(paras, target_words=30, min_words=8)
    assert [len(t.split()) for _, t in pieces] == [46] and short == 1  # the 4-word tail is dropped


def test_without_markers_every_paragraph_is_kept(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("A first paragraph of some ten words, give or take.\r\n\r\n\tA second one,\nwrapped   by hand.\n")
    loaded = load_source(book(target=100, min_words=1, path=plain), strict=True)
    assert [p.y for p in loaded.pairs] == [
        "A first paragraph of some ten words, give or take.\n\nA second one, wrapped by hand."
    ]
    assert loaded.pairs[0].meta["where"] == f"{plain}:1"


def test_long_text_records_folders_and_bad_input(tmp_path):
    rec = tmp_path / "texts.jsonl"
    body = " ".join(["Lanterns swung over the quay while the ferry came in."] * 6)
    rec.write_text(
        json.dumps({"doc": "d1", "body": body, "name": "Quay"})
        + "\n"
        + json.dumps({"doc": "d2", "body": 42, "name": "Bad"})
        + "\n"
    )
    src = SourceConfig(
        name="t",
        kind="long_text",
        path=str(rec),
        fields={"id": "doc", "y": "body", "title": "name"},
        long_text=LongTextConfig(target_words=100, min_words=10),
    )
    with pytest.raises(DataError) as err:
        load_source(src, strict=True)
    assert str(err.value).startswith(f"{rec}:2: field 'y': expected a string, got int")
    loaded = load_source(src, strict=False)
    assert [(p.id, p.meta["title"]) for p in loaded.pairs] == [("d1-p0001", "Quay")]
    assert [(s.where, s.field) for s in loaded.skipped] == [(f"{rec}:2", "y")]

    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "a.txt").write_text("Alpha text here, long enough to keep as one piece of the book.")
    (folder / "b.txt").write_bytes(b"Good line.\n\nBad \xff byte on line three.\n")
    folder_src = book(target=50, min_words=3, path=folder)
    with pytest.raises(DataError, match=r"b\.txt:3: field 'y': contains bytes that are not valid UTF-8"):
        load_source(folder_src, strict=True)
    loaded = load_source(folder_src, strict=False)
    assert [p.id for p in loaded.pairs] == ["a-p0001"] and loaded.skipped[0].where.endswith("b.txt:3")

    empty = tmp_path / "empty.txt"
    empty.write_text(
        "*** START OF THE PROJECT GUTENBERG EBOOK X ***\nToo short.\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\n"
    )
    with pytest.raises(DataError, match=r"empty\.txt:1: field 'y': no piece of at least 20 words"):
        load_source(book(path=empty), strict=True)


def test_read_ready_pairs_reads_pairs_only_and_load_source_every_kind():
    with pytest.raises(DataError, match="field 'kind': long_text sources have answers but no requests.*prepare_pairs"):
        read_ready_pairs(book(), strict=True)
    with pytest.raises(DataError, match="field 'kind': 'scored_responses' sources are read by .*load_source"):
        read_ready_pairs(scored(FIX / "scored_rows.jsonl"), strict=True)
    loaded = load_source(scored(FIX / "scored_rows.jsonl"), strict=True)
    pairs, skipped = loaded.pairs, loaded.skipped
    assert [p.id for p in pairs] == ["w2", "w4", "w6"] and not skipped
    with pytest.raises(DataError, match="field 'kind': got 'poems'"):
        load_source(SourceConfig(name="p", kind="poems", path=str(BOOK)), strict=True)


# --- scored responses --------------------------------------------------------------------------


def test_top_k_per_prompt_above_min_score_in_row_form():
    loaded = load_source(scored(FIX / "scored_rows.jsonl", top_k=2, min_score=10), strict=True)
    got = [(p.id, p.meta["score"], p.meta["rank"]) for p in loaded.pairs]
    # Ties (97, 97) keep file order; w1 (41) is beyond top_k, w3 (3) and w6 (2) are under min_score.
    assert got == [("w2", 97.0, 1), ("w5", 97.0, 2), ("w4", 12.0, 1)]
    assert loaded.pairs[0].x == "[WP] The moon files a noise complaint against the sea."
    assert loaded.counts == {"prompts": 3, "responses": 6, "below_min_score": 2, "beyond_top_k": 1}


def test_list_form_and_csv_scores():
    fields = {"id": "pid", "x": "prompt", "responses": "replies", "y": "body", "score": "votes"}
    loaded = load_source(scored(FIX / "scored_lists.jsonl", fields, top_k=2, min_score=2), strict=True)
    assert [(p.id, p.y) for p in loaded.pairs] == [
        ("s1-r1", "Nobody had borrowed anything in forty years."),
        ("s1-r2", "The librarian was a spade-shaped robot."),
    ]
    csv_loaded = load_source(scored(FIX / "scored.csv"), strict=True)
    assert [(p.id, p.meta["score"]) for p in csv_loaded.pairs] == [("c2", 11.0)]
    no_ids = load_source(
        scored(FIX / "scored.csv", {"x": "prompt", "y": "response", "score": "upvotes"}, top_k=2), True
    )
    assert [p.id for p in no_ids.pairs] == ["wp-000001-r1", "wp-000001-r2"]


def test_scored_bad_input_strict_and_lenient():
    path = FIX / "scored_bad.jsonl"
    with pytest.raises(DataError) as err:
        load_source(scored(path, top_k=5), strict=True)
    assert str(err.value) == f"{path}:2: field 'score': expected a number, got 'lots'"
    loaded = load_source(scored(path, top_k=5), strict=False)
    assert [p.id for p in loaded.pairs] == ["b1", "b4"]
    assert [(s.where.rsplit(":", 1)[1], s.field, s.reason) for s in loaded.skipped] == [
        ("2", "score", "expected a number, got 'lots'"),
        ("3", "y", "empty"),
    ]
    fields = {"id": "pid", "x": "prompt", "responses": "replies", "y": "text", "score": "votes"}
    with pytest.raises(DataError, match=r"scored_lists\.jsonl:1: field 'responses\[0\]\.y': mapped to 'text'"):
        load_source(scored(FIX / "scored_lists.jsonl", fields), strict=True)
    with pytest.raises(DataError, match="field 'score': not mapped"):
        load_source(scored(path, {"x": "prompt", "y": "response"}), strict=True)


def test_source_kind_composes_from_hydra_overrides():
    cfg = compose_typed(
        "data.pairs.kind=long_text",
        "data.pairs.long_text.target_words=300",
        "data.pairs.scored.top_k=3",
        "data.quotas.max_per_category=5",
    )
    assert cfg.data.pairs.kind == "long_text" and cfg.data.pairs.long_text.target_words == 300
    assert cfg.data.pairs.scored.top_k == 3 and cfg.data.quotas.max_per_category == 5
    assert cfg.data.queries.seed == cfg.seed

"""A released dataset of trajectories (DeepWriting-20K) as the mix's synthetic part, read offline from
a local folder laid out as the hub dataset through the real `datasets.load_dataset` path; the
`full-released-data` recipe; malformed rows named or counted."""

from __future__ import annotations

import json

import pytest

from deepwriter.config.data import TrajectoriesConfig
from deepwriter.core.badinput import DataError
from deepwriter.mix.released import load_released
from deepwriter.testing.released import hub_folder, verl_row
from deepwriter.testing.repo import FIXTURES, compose_typed

FIX = FIXTURES / "data"

FIELDS = {"x": "prompt", "y": "solution", "id": "extra_info.index"}


# Thinking as long as a plan is (a few words would trip the 3-gram share filter: 5 trigrams, top 3 = 60%).
THINK_0 = "I will begin with the dark water, then the moon on the waves, and end with the boat coming home."
THINK_1 = "先想想读者是谁：一位教过我三年的老师。我要写出具体的事情，比如她在雨天借给我伞，最后真诚地道谢。"
THINK_2 = "Who buys this? Wait, the launch date comes first; then the three features, the price and a friendly close."
ROWS = [
    verl_row(0, "Write a poem about the sea at night.", f"<think>\n{THINK_0}\n</think>\n\nThe sea"),
    verl_row(1, "写一封感谢信", f"<think>{THINK_1}</think>\n\n亲爱的老师：谢谢您。", "personal letters & messages"),
    verl_row(2, "Draft a product announcement.", f"<think>\n{THINK_2}\n</think>\nIt is here."),
]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _t(folder, **kw):
    return TrajectoriesConfig(kind="released", name="DeepWriting-20K", hub_id=str(folder), fields=dict(FIELDS), **kw)


def test_rows_are_split_into_request_thinking_and_answer(tmp_path):
    folder = hub_folder(tmp_path, ROWS)
    recs, skipped = load_released(_t(folder), strict=True)
    assert skipped == [] and [r["id"] for r in recs] == ["0", "1", "2"]
    r0, r1, r2 = recs
    assert (r0["x"], r0["think"], r0["y"]) == (
        "Write a poem about the sea at night.",
        THINK_0,
        "The sea",
    )
    assert (r1["think"], r1["y"]) == (THINK_1, "亲爱的老师：谢谢您。")
    assert r2["think"] == THINK_2 and r2["y"] == "It is here."
    assert {r["source"] for r in recs} == {"DeepWriting-20K"} and r0["category"] == "uncategorised"
    assert r0["where"] == f"{folder}[train]:1"
    # a category column, mapped, and a limit of valid rows
    cats, _ = load_released(
        TrajectoriesConfig(
            kind="released", hub_id=str(folder), fields={**FIELDS, "category": "extra_info.category"}, limit=2
        ),
        strict=True,
    )
    assert [r["category"] for r in cats] == ["creative & narrative", "personal letters & messages"]
    assert cats[0]["source"] == "DeepWriting-20K"  # the folder's name labels it when no name is set


def test_separate_thinking_column_and_string_requests(tmp_path):
    path = tmp_path / "released.jsonl"
    turns = json.dumps([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A limerick."}])
    rows = [
        {"q": "Write a toast.", "reasoning": "Short and warm.", "answer": "To Ana!"},
        {"q": turns, "reasoning": "Five lines.", "answer": "There once was..."},  # turns stored as a JSON string
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    t = TrajectoriesConfig(kind="released", path=str(path), fields={"x": "q", "think": "reasoning", "y": "answer"})
    recs, _ = load_released(t, strict=True)
    assert [(r["id"], r["x"], r["think"], r["y"]) for r in recs] == [
        ("released-0000001", "Write a toast.", "Short and warm.", "To Ana!"),
        ("released-0000002", "A limerick.", "Five lines.", "There once was..."),
    ]


BAD = [
    (verl_row(10, "No thinking here.", "Just an answer."), "y", "no </think> in the answer"),
    (verl_row(11, "Thinking only.", "<think>plan</think>   "), "y", "nothing after the last </think>"),
    (verl_row(12, "Empty thinking.", "<think> </think> answer"), "y", "empty thinking block"),
    (
        {**verl_row(13, "x", "<think>a</think>b"), "prompt": [{"role": "system", "content": "s"}]},
        "x",
        "without a user turn",
    ),
    ({**verl_row(14, "x", "<think>a</think>b"), "solution": None}, "y", "missing (null)"),
]


def test_malformed_rows_are_named_or_counted(tmp_path):
    for i, (row, field, words) in enumerate(BAD):
        folder = hub_folder(tmp_path / f"case{i}", [ROWS[0], row])
        with pytest.raises(DataError) as err:
            load_released(_t(folder), strict=True)
        assert err.value.where == f"{folder}[train]:2" and err.value.field == field, str(err.value)
        assert words in err.value.reason, str(err.value)
    folder = hub_folder(tmp_path / "all", ROWS + [row for row, _, _ in BAD] + [ROWS[0]])
    recs, skipped = load_released(_t(folder), strict=False)
    assert [r["id"] for r in recs] == ["0", "1", "2"]
    assert [s.field for s in skipped] == [f for _, f, _ in BAD] + ["id"]  # the repeated row: a duplicate id
    unmapped = TrajectoriesConfig(kind="released", hub_id=str(folder), fields={"x": "question", "y": "solution"})
    with pytest.raises(DataError, match=r"field 'x': mapped to 'question', which the record lacks"):
        load_released(unmapped, strict=True)


def test_bad_settings_stop_before_work_naming_the_key(tmp_path):
    from deepwriter.core.errors import ConfigError
    from deepwriter.mix.stage import preflight

    for opts, words in (
        ((), r"^data\.mix\.trajectories_from: kind released needs path or hub_id"),
        (
            (f"data.mix.trajectories_from.path={tmp_path}/absent.parquet",),
            r"^data\.mix\.trajectories_from\.path: no such",
        ),
        (("data.mix.trajectories_from.hub_id=m-a-p/DeepWriting-20K",), r"fields\.x: not mapped"),
        (  # a folder in path: said so, and where a folder laid out as the hub dataset goes
            (f"data.mix.trajectories_from.path={tmp_path}",),
            r"^data\.mix\.trajectories_from\.path: .* is a folder, not a file; .*trajectories_from\.hub_id",
        ),
    ):
        with pytest.raises(ConfigError, match=words):
            preflight(compose_typed("data.mix.trajectories_from.kind=released", *opts))
    preflight(compose_typed("+recipe=full-released-data"))  # the recipe's own settings pass


def test_recipe_composes_without_synthesis():
    from deepwriter.pipeline.runner import plan

    cfg = compose_typed("+recipe=full-released-data")
    t = cfg.data.mix.trajectories_from
    assert (t.kind, t.hub_id, t.split, dict(t.fields)) == (
        "released",
        "m-a-p/DeepWriting-20K",
        "train",
        {"x": "prompt", "y": "solution"},
    )
    assert cfg.recipe.stages == ["mix", "sft", "eval"] and cfg.data.mix.public == 17000
    assert (
        cfg.data.mix.synthetic is None and cfg.models.student.name == compose_typed("+recipe=full").models.student.name
    )
    assert plan(cfg)["mix"].needs == []


def test_released_mix_through_the_stage(tmp_path, model_cache):
    """The stage with the released data from a local hub-layout folder, the public fixture, every
    filter: a planted exact duplicate is removed, rows carry the <think> turn; the paper's quality
    filters check every released row and, the data being clean, remove none (the counts say so)."""
    import datasets

    from deepwriter.core import think
    from deepwriter.core.contract import StageContext
    from deepwriter.mix.stage import run
    from deepwriter.pipeline.runner import plan
    from deepwriter.tracking.runs import Tracker

    folder = hub_folder(tmp_path, ROWS + [{**ROWS[0], "extra_info": {"index": 99, "category": "x"}}])
    cfg = compose_typed(
        "model@models.student=tiny-qwen3",
        f"paths.cache_dir={model_cache}",
        f"paths.stage_store={tmp_path}/store",
        "data.mix.decontam.enabled=false",
        "data.mix.trajectories_from.kind=released",
        "data.mix.trajectories_from.name=DeepWriting-20K",
        f"data.mix.trajectories_from.hub_id={folder}",
        "++data.mix.trajectories_from.fields={x: prompt, y: solution, id: extra_info.index}",
        f"data.public.path={FIX / 'reasoning.jsonl'}",
        "data.public.fields={id: qid, x: question, think: reasoning, y: answer}",
    )
    st = plan(cfg)["mix"]
    assert st.needs == [] and f"file:{folder}" in st.input_hashes
    out = tmp_path / "mix"
    out.mkdir()
    res = run(cfg, StageContext("mix", out, {}, tmp_path, Tracker(None), "k"))
    c = res.counts
    assert c["loaded_synthetic"] == 4 and c["removed_exact_duplicate"] == 1 and c["synthetic"] == 3
    assert c["quality_checked"] == 4 and c["quality_filtered"] == 0
    assert (
        "4 imported trajectories checked, 0 removed (none: the data was already filtered)"
        in (out / "DATA_CARD.md").read_text()
    )
    ds = datasets.load_from_disk(str(out / "dataset"))
    row = next(r for r in ds if r["id"] == "0")
    assert row["source"] == "DeepWriting-20K"
    assert row["messages"][1]["content"] == think.turn(THINK_0, "The sea")
    assert "the released dataset `" in (out / "DATA_CARD.md").read_text()

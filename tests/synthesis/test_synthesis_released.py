"""`full` synthesizes from the authors' own pairs: (x, y) read from rows in the layout of their released
DeepWriting-20K, the released thinking kept beside each pair and scored under the same scorer as our
final trajectory once the search is done, so the stage compares ours with theirs pair for pair."""

from __future__ import annotations

import json

import pytest

from deepwriter.config.data import SourceConfig
from deepwriter.core.records import read_records
from deepwriter.pairs.released import RELEASED_THINKING, load_released_pairs
from deepwriter.synthesis import stage, store
from deepwriter.testing.released import hub_folder, verl_row
from deepwriter.testing.repo import compose_typed
from deepwriter.testing.synthesis import PlanWriter, keeping, make_cfg
from deepwriter.testing.synthesis import stage_context as ctx

pytestmark = pytest.mark.usefixtures("one_torch_thread")

THINK = (
    "Okay, the reader wants {topic}. First the intent: a warm note a friend would keep.\n\n"
    "Then the content: the harbour at dawn, the gulls, the boats going out one by one.\n\n"
    "Then the structure: a greeting, two short paragraphs, a closing line that looks ahead."
)
ROWS = [
    verl_row(i, f"Write a short letter about {topic}.", f"<think>\n{THINK.format(topic=topic)}\n</think>\n\n{answer}")
    for i, (topic, answer) in enumerate(
        [
            ("the sea", "Dear friend,\n\nThe sea was calm today. The light was warm on the water."),
            ("the harbour", "Dear Ana,\n\nThe harbour woke early. Boats left before the sun."),
            ("a lighthouse", "Dear keeper,\n\nYour light kept us safe. Thank you for every night."),
        ]
    )
]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _source(folder) -> SourceConfig:
    return SourceConfig(
        name="DeepWriting-20K", kind="released", hub_id=str(folder), fields={"x": "prompt", "y": "solution"}
    )


def test_full_reads_the_authors_pairs_by_default(tmp_path):
    full = compose_typed("+recipe=full").data.pairs
    assert (full.kind, full.hub_id, full.fields) == (
        "released",
        "m-a-p/DeepWriting-20K",
        {"x": "prompt", "y": "solution"},
    )
    pairs, skipped = load_released_pairs(_source(hub_folder(tmp_path, ROWS)), strict=True)
    assert skipped == [] and [p.id for p in pairs] == [
        "DeepWriting-20K-000001",
        "DeepWriting-20K-000002",
        "DeepWriting-20K-000003",
    ]
    assert pairs[0].x == "Write a short letter about the sea." and pairs[0].y.startswith("Dear friend,")
    assert pairs[0].meta[RELEASED_THINKING] == THINK.format(topic="the sea")


def test_our_trajectories_are_compared_with_the_authors_on_the_fixture(tmp_path, model_cache, monkeypatch):
    real = stage.build_backends
    monkeypatch.setattr(stage, "build_backends", lambda cfg: (PlanWriter("tiny-qwen3"), real(cfg)[1]))
    cfg = keeping(make_cfg(tmp_path / "unused.jsonl", model_cache))
    cfg.data.pairs = _source(hub_folder(tmp_path, ROWS))
    cfg.data.label_categories = False
    # the tiny random model puts every token below the clip (-2): unclipped, its scores tell pairs apart
    cfg.synthesis.clip_min = None
    res = stage.run(cfg, ctx(tmp_path / "out"))
    recs = list(read_records(store.shard_path(tmp_path / "out", 0, 1)))
    assert len(recs) == 3 and res.counts["released_compared"] == 3 and res.counts["released_not_compared"] == 0
    for r in recs:  # their thinking scored by the same scorer, on the same pair, as ours
        assert isinstance(r["released"]["score"], float) and r["released"]["words"] == len(THINK.split()) + 1
    cmp = res.metrics["released_comparison"]
    print("ours vs released:", {k: round(v, 4) if isinstance(v, float) else v for k, v in cmp.items()})
    ours = [r["scores"][-1] for r in recs]
    theirs = [r["released"]["score"] for r in recs]
    assert cmp["pairs"] == 3
    assert cmp["score_ours"] == pytest.approx(sum(ours) / 3) and cmp["score_released"] == pytest.approx(sum(theirs) / 3)
    assert cmp["score_difference"] == pytest.approx(cmp["score_ours"] - cmp["score_released"])
    assert cmp["ours_lower_share"] == pytest.approx(sum(a < b for a, b in zip(ours, theirs)) / 3)
    assert cmp["score_difference_se"] > 0 and cmp["words_released"] == len(THINK.split()) + 1
    assert cmp["accepted_edits_ours"] == pytest.approx(sum(len(r["accepted_edits"]) for r in recs) / 3)

    # the comparison as `python -m deepwriter.report RUN_DIR` prints it (a run's synthesize/manifest.json)
    from deepwriter.commands import report as compare
    from deepwriter.viewer import collect

    run = tmp_path / "runs" / "full" / "r1"
    (run / "synthesize").mkdir(parents=True)
    (run / "synthesize" / "manifest.json").write_text(json.dumps({"counts": res.counts, "metrics": res.metrics}))
    assert compare.main([str(run), "--out", str(tmp_path / "report")]) == 0  # no eval yet: the comparison alone
    text = (tmp_path / "report" / "released.md").read_text()
    assert f"{cmp['score_ours']:.4f} ± {cmp['score_ours_se']:.4f}" in text and "| r1 | 3 |" in text
    assert collect.synthesis(run / "synthesize")["metrics"]["released_comparison"] == cmp  # what report.html draws

"""`python -m deepwriter.prompts`: every prompt of the demo recipe for one pair, rendered with the
embedded model's chat template, pinned on an English and a Chinese pair (tests/fixtures/prompts/).
Regenerate the pinned files with DEEPWRITER_UPDATE_GOLDEN=1 after a deliberate prompt change, and
read the diff: a file it rewrites fails the test (re-run without the switch); in CI the switch fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from deepwriter.commands.prompts import main
from deepwriter.testing.repo import FIXTURES

FIX = FIXTURES
PAIRS = FIX / "prompt_pairs.jsonl"


def run(capsys, *args):
    rc = main(["+recipe=demo", f"pairs={PAIRS}", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("pair_id", ["en-letter", "zh-notice"])
def test_output_is_pinned(capsys, pair_id):
    rc, out, _ = run(capsys, f"id={pair_id}")
    golden = FIX / "prompts" / f"{pair_id}.txt"
    if os.environ.get("DEEPWRITER_UPDATE_GOLDEN"):
        assert not os.environ.get("CI"), "DEEPWRITER_UPDATE_GOLDEN is set in CI: the pinned prompts would pin nothing"
        if rc == 0 and (not golden.exists() or golden.read_text(encoding="utf-8") != out):
            golden.parent.mkdir(exist_ok=True)
            golden.write_text(out, encoding="utf-8")
            pytest.fail(f"rewrote {golden}: read the diff, then re-run without DEEPWRITER_UPDATE_GOLDEN")
    assert rc == 0 and out == golden.read_text(encoding="utf-8")


def test_every_prompt_is_there_in_order_and_rendered_with_the_chat_template(capsys):
    pair = {json.loads(line)["id"]: json.loads(line) for line in PAIRS.open(encoding="utf-8")}["zh-notice"]
    rc, out, _ = run(capsys, "id=zh-notice")
    assert rc == 0
    heads = [line for line in out.splitlines() if line.startswith("===== ")]
    assert [h.split(": ", 1)[1].split(" =====")[0].split(",")[0] for h in heads[:3]] == [
        "initial trajectory z0",
        "refinement step 1",
        "scorer context for z",
    ]
    assert any("judge" in h and "benchmark demo, item 0" in h for h in heads[3:])
    assert out.count("<|im_start|>system\nYou are a helpful assistant.<|im_end|>") == 3  # generator x2, scorer
    assert "用户请求：\n" + pair["request"] in out  # the Chinese prompts for a Chinese request
    initial = out.split("===== generator")[1]
    assert initial.rstrip().endswith("<|im_start|>assistant\n<think>\n嗯") or initial.rstrip().endswith("好的")
    # the scorer's context ends with y's first segment; the scored rest follows the marker
    scorer = out.split("scorer context for z =====")[1].split("=====")[0]
    context, scored = scorer.split("⟦scored from here⟧")
    scored, suffix = scored.split("⟦to here⟧")
    assert suffix.rstrip("\n") == "\n</answer>"  # the answer's closing tag follows y, unscored
    head = context.split("<answer>\n", 1)[1]
    assert context.endswith("</think>\n<answer>\n" + head) and head and pair["answer"].startswith(head)
    assert head + scored == pair["answer"]


def test_bad_arguments_stop_with_one_line(capsys):
    rc, _, err = run(capsys, "id=no-such-pair")
    # one line, naming the file and the id, of its own (a progress bar that tqdm drew before it ended its line)
    (line,) = [ln for ln in err.split("\n") if "deepwriter.prompts: " in ln]
    assert rc == 2 and line.startswith("deepwriter.prompts: ") and "prompt_pairs.jsonl" in line
    assert "no-such-pair" in line
    rc, _, err = run(capsys)
    assert rc == 2 and "id: required" in err
    rc, _, err = run(capsys, "id=en-letter", "item=x")
    assert rc == 2 and "item:" in err
    rc, _, err = run(capsys, "id=en-letter", "bench=nope")
    assert rc == 2 and "nope" in err


def test_an_in_process_call_leaves_the_callers_environment_as_it_was(capsys, monkeypatch):
    """The command turns bars off in its entry point only: a TQDM_DISABLE set by the in-process call
    silenced the bars of this process (tqdm reads it once, at import) and of every process the test
    session started afterwards (a test of the error line after a bar failed in CI)."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    before = dict(os.environ)
    rc, out, _ = run(capsys, "id=en-letter")
    assert rc == 0 and "generator" in out
    assert dict(os.environ) == before


def test_runs_as_a_module():
    cmd = [sys.executable, "-m", "deepwriter.prompts", "+recipe=demo", f"pairs={PAIRS}", "id=en-letter"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Write a short thank-you letter" in proc.stdout and "--- Outline (or Draft) ---" in proc.stdout
    assert "load " not in proc.stderr and "it/s" not in proc.stderr  # no progress bars around the prompts

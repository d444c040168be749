"""Bad input through the real command line: one clear line naming the file/line/field or path,
exit code 2, and nothing a finished stage wrote is touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from deepwriter.testing.repo import REPO, run_train


def _last_line(text: str) -> str:
    return [ln for ln in text.splitlines() if ln.strip()][-1]


def test_malformed_pairs_file_names_file_line_and_field(tmp_path):
    bad = tmp_path / "pairs.jsonl"
    bad.write_text(
        '{"id": "a", "request": "Write a toast.", "answer": "To friends!", "category": "speeches & toasts"}\n'
        '{"id": "b", "request": "", "answer": "Text", "category": "speeches & toasts"}\n'
    )
    out = run_train(
        "+recipe=demo",
        f"paths.runs_dir={tmp_path}/runs",
        f"data.pairs.path={bad}",
        "recipe.stages=[synthesize]",
        "logging.wandb_mode=disabled",
    )
    assert out.returncode == 2, out.stderr[-2000:]
    line = _last_line(out.stderr)
    assert line.startswith("deepwriter: error: ")
    assert f"{bad}:2" in line and "field 'x'" in line


@pytest.mark.slow  # starts a run or a server: `make test` only, not test-fast
def test_missing_input_file_is_one_line_before_any_work(tmp_path):
    missing = tmp_path / "nowhere.jsonl"
    out = run_train("+recipe=demo", f"paths.runs_dir={tmp_path}/runs", f"data.pairs.path={missing}")
    assert out.returncode == 2
    line = _last_line(out.stderr)
    assert line.startswith("deepwriter: config error: ") and str(missing) in line
    assert not (tmp_path / "runs" / "_stages").exists()


def test_eval_alone_without_a_finished_model_says_which_input_is_missing(tmp_path):
    out = run_train("+recipe=demo", f"paths.runs_dir={tmp_path}/runs", "recipe.stages=[eval]")
    assert out.returncode == 2
    line = _last_line(out.stderr)
    assert "stage 'eval' needs the output of 'sft'" in line


@pytest.mark.slow  # starts a run or a server: `make test` only, not test-fast
def test_a_finished_stage_survives_a_later_failure(tmp_path):
    """Finish synthesis on a good file, then fail the mix on a bad public file: the finished
    synthesis output is reused byte for byte."""
    runs = tmp_path / "runs"
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"p{i}",
                    "request": f"Write note {i}.",
                    "answer": f"Note {i}.",
                    "category": "personal letters & messages",
                }
            )
            + "\n"
            for i in range(2)
        )
    )
    common = [
        "+recipe=demo",
        f"paths.runs_dir={runs}",
        f"data.pairs.path={pairs}",
        "logging.wandb_mode=disabled",
        "model@models.generator=tiny-qwen3",
        "model@models.scorer=tiny-qwen3",
        f"paths.cache_dir={tmp_path}/cache",
        "synthesis.initial.max_new_tokens=8",
        "synthesis.refine.max_new_tokens=4",
        "synthesis.max_steps=1",
    ]
    first = run_train(*common, "recipe.stages=[synthesize]")
    assert first.returncode == 0, first.stderr[-3000:]
    manifests = list((runs / "_stages" / "synthesize").glob("*/manifest.json"))
    assert len(manifests) == 1
    before = {p: p.read_bytes() for p in manifests[0].parent.rglob("*") if p.is_file() and "wandb" not in p.parts}
    bad_public = tmp_path / "public.jsonl"
    bad_public.write_text("{not json\n")
    second = run_train(*common, "recipe.stages=[synthesize,mix]", f"data.public.path={bad_public}")
    assert second.returncode == 2
    assert f"{bad_public}:1" in _last_line(second.stderr)
    after = {p: p.read_bytes() for p in manifests[0].parent.rglob("*") if p.is_file() and "wandb" not in p.parts}
    assert after == before


@pytest.mark.slow  # starts a run or a server: `make test` only, not test-fast
def test_an_error_after_a_progress_bar_starts_a_line_of_its_own(tmp_path):
    """The pairs' load bar is drawn, then the bad record stops the run: the error line does not share
    the bar's line (split at newlines only: a carriage return does not end a line in a log file)."""
    bad = tmp_path / "pairs.jsonl"
    bad.write_text(
        '{"id": "a", "request": "Write a toast.", "answer": "To friends!", "category": "speeches & toasts"}\n'
        '{"id": "b", "request": "", "answer": "Text", "category": "speeches & toasts"}\n'
    )
    args = [f"paths.runs_dir={tmp_path}/runs", f"data.pairs.path={bad}", "recipe.stages=[synthesize]"]
    # tqdm takes its defaults from TQDM_* variables (TQDM_DISABLE=1 draws no bar): none from outside
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    out = subprocess.run(  # bytes: text mode would turn the bar's carriage returns into line ends
        [sys.executable, "-m", "deepwriter.train", "+recipe=demo", *args, "logging.wandb_mode=disabled"],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=120,
    )
    stderr = out.stderr.decode()
    assert out.returncode == 2, stderr[-2000:]
    lines = stderr.split("\n")
    (error,) = [ln for ln in lines if "deepwriter: error: " in ln]
    assert error.startswith("deepwriter: error: ") and f"{bad}:2" in error, repr(error)
    assert any(ln.lstrip("\r").startswith("load demo-pairs") for ln in lines[: lines.index(error)]), stderr[-2000:]


def test_print_error_ends_a_live_bar_and_a_cleared_one(monkeypatch):
    import io

    from tqdm import tqdm

    from deepwriter.core.errors import LineEnds, print_error

    for leave in (True, False):
        stream = LineEnds(io.StringIO())
        monkeypatch.setattr("sys.stderr", stream)
        bar = tqdm(total=4, desc="synthesize", file=stream, leave=leave, mininterval=0)
        bar.update(1)
        print_error("deepwriter: unfinished: 3 of 4 pairs")
        del bar  # closed by print_error: nothing is drawn after the error line
        text = stream.stream.getvalue()
        assert text.endswith("\ndeepwriter: unfinished: 3 of 4 pairs\n"), (leave, repr(text))
        before = text[: -len("deepwriter: unfinished: 3 of 4 pairs\n")]
        assert ("synthesize:  25%" in before.split("\r")[-2]) if leave else before.split("\r")[-1] == "\n"

"""`python -m deepwriter.export`: a real small run (the synthesize stage over the tiny model with a
plan-writing generator, then the mix stage) exported as a Hugging Face dataset folder, read back with
`datasets.load_dataset`; the reference input format read back by our own pair reader; the push
only for a logged-in user, with the Hub replaced at the network calls alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from deepwriter.commands.export import REFERENCE_INPUT, export_run, main
from deepwriter.config.data import SourceConfig
from deepwriter.config.root import to_plain
from deepwriter.core.contract import StageContext
from deepwriter.core.records import read_records
from deepwriter.pairs.read import load_pairs
from deepwriter.synthesis import stage as synth_stage
from deepwriter.synthesis import store
from deepwriter.testing.repo import FIXTURES
from deepwriter.testing.synthesis import PlanWriter, keeping, make_cfg, tiny_model_config, write_pairs
from deepwriter.tracking.runs import Tracker

FIX = FIXTURES / "data"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _build_run(tmp_path: Path, model_cache: Path) -> Path:
    from deepwriter.mix import stage as mix_stage

    run = tmp_path / "runs" / "demo" / "r1"
    synth_out, mix_out = run / "synthesize", run / "mix"
    pairs = write_pairs(tmp_path / "pairs.jsonl", 4)
    cfg = keeping(make_cfg(pairs, model_cache))
    synth_stage.run(cfg, StageContext("synthesize", synth_out, {}, run, Tracker(None), "k"))
    cfg.models.student = tiny_model_config()
    cfg.data.mix.decontam.enabled = False
    cfg.data.public.path = str(FIX / "reasoning.jsonl")
    cfg.data.public.name = "fx-reasoning"
    cfg.data.public.fields = {"id": "qid", "x": "question", "think": "reasoning", "y": "answer"}
    cfg.data.mix.trajectories_from.kind = "synthesize"
    cfg.sft.max_length = 2048
    mix_out.mkdir(parents=True)
    mix_stage.run(cfg, StageContext("mix", mix_out, {"synthesize": synth_out}, run, Tracker(None), "k"))
    cfg.recipe.name, cfg.run_id = "demo", "r1"
    (run / "config.json").write_text(json.dumps(to_plain(cfg), indent=2))
    return run


@pytest.fixture(scope="module")
def built_run(tmp_path_factory, model_cache):
    """Built once for the module: the synthesize stage's own backends with the generator swapped for
    the plan writer of tests/synthesis/test_synthesis_stage.py (the tiny model still scores)."""
    real = synth_stage.build_backends

    def build(cfg):
        generator, scorer = real(cfg)
        return PlanWriter(generator.model_id), scorer

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(synth_stage, "build_backends", build)
        return _build_run(tmp_path_factory.mktemp("run"), model_cache)


@pytest.fixture
def small_run(built_run, tmp_path):
    """A copy per test (the stage folders are symlinks in a real run; copies here)."""
    run = tmp_path / "runs" / "demo" / "r1"
    shutil.copytree(built_run, run)
    return run


def test_export_reads_back_with_load_dataset(small_run, tmp_path):
    import datasets

    out = tmp_path / "export"
    counts = export_run(small_run, out)
    kept = [r for r in read_records(store.shard_path(small_run / "synthesize", 0, 1)) if r["verdict"]["kept"]]
    assert counts == {"trajectories": len(kept), "mix": counts["mix"]} and len(kept) == 3

    traj = datasets.load_dataset(str(out), split="train")  # the default config: the trajectories
    assert len(traj) == 3
    by_id = {r["id"]: r for r in traj}
    for r in kept:
        row = by_id[r["id"]]
        assert (row["request"], row["thinking"], row["answer"]) == (r["x"], r["z_final"], r["y"])
        assert row["thinking_initial"] == r["z0"] and row["category"] == "letter"
        assert row["score_initial"] == pytest.approx(r["scores"][0])
        assert row["score_final"] == pytest.approx(r["scores"][-1])
        assert row["search_steps"] == len(r["steps"]) == 1
        assert row["accepted_edits"] == len(r["accepted_edits"])
        assert row["generator"] == "tiny-qwen3" and row["num_segments"] == r["num_segments"]

    mix = datasets.load_dataset(str(out), "mix", split="train")
    saved = datasets.load_from_disk(str(small_run / "mix" / "dataset"))
    assert mix.to_list() == saved.to_list() and len(mix) == counts["mix"] == 3 + 3  # 3 public fixture rows

    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    assert [c["config_name"] for c in header["configs"]] == ["trajectories", "mix"]
    assert header["configs"][0]["default"] is True
    assert header["configs"][1]["data_files"] == [{"split": "train", "path": "mix/train-*.parquet"}]
    assert "recipe `demo`, run `r1`" in card and "| trajectories | 3 |" in card and "| mix | 6 |" in card
    assert json.loads((out / "run_config.json").read_text())["run_id"] == "r1"
    assert "Recipe `demo` (stages synthesize, mix, sft, eval" in card
    assert "generator `tiny-qwen3`" in card and "| total | 6 |" in card and "| kept | 3 |" in card


def test_reference_input_round_trips_through_our_pair_reader(small_run, tmp_path):
    out = tmp_path / "export"
    export_run(small_run, out)
    rows = json.loads((out / REFERENCE_INPUT).read_text())
    assert isinstance(rows, list) and all(set(r) == {"index", "question", "solution"} for r in rows)
    src = SourceConfig(
        name="ref", path=str(out / REFERENCE_INPUT), fields={"id": "index", "x": "question", "y": "solution"}
    )
    pairs, skipped = load_pairs(src, strict=True)
    kept = {r["id"]: r for r in read_records(store.shard_path(small_run / "synthesize", 0, 1)) if r["verdict"]["kept"]}
    assert skipped == [] and sorted(p.id for p in pairs) == sorted(kept)
    assert all((p.x, p.y) == (kept[p.id]["x"], kept[p.id]["y"]) for p in pairs)


def test_a_run_without_our_trajectories_exports_its_mix(small_run, tmp_path):
    import datasets

    shutil.rmtree(small_run / "synthesize")
    out = tmp_path / "mix-only"
    assert export_run(small_run, out) == {"mix": 6}
    assert not (out / REFERENCE_INPUT).exists()
    assert len(datasets.load_dataset(str(out), split="train")) == 6  # the mix is then the default


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("deepwriter.export: ") and "no such run folder" in err and "\n" not in err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "neither synthesize/shards nor a finished mix/dataset" in capsys.readouterr().err


def _logged_out(monkeypatch, tmp_path):
    from huggingface_hub import constants

    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-stored-tokens"))


def test_push_needs_a_login(small_run, tmp_path, monkeypatch, capsys):
    from huggingface_hub import HfApi, get_token

    _logged_out(monkeypatch, tmp_path)
    assert get_token() is None
    monkeypatch.setattr(HfApi, "upload_folder", lambda *a, **k: pytest.fail("uploaded while logged out"))
    out = tmp_path / "export"
    assert main([str(small_run), "--out", str(out), "--push-to-hub", "me/deepwriter-demo"]) == 2
    cap = capsys.readouterr()
    ours = [line for line in cap.err.splitlines() if line.startswith("deepwriter.export:")]  # not progress bars
    assert len(ours) == 1 and "not logged in to the Hugging Face Hub" in ours[0]
    assert (out / "README.md").exists()  # the folder is written all the same


def test_push_uploads_the_folder_when_logged_in(small_run, tmp_path, monkeypatch, capsys):
    from huggingface_hub import HfApi

    _logged_out(monkeypatch, tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))

    def upload_folder(self, *, folder_path, repo_id, repo_type, **kw):
        calls.append(
            (
                "upload",
                repo_id,
                repo_type,
                sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file()),
            )
        )

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    out = tmp_path / "export"
    assert main([str(small_run), "--out", str(out), "--push-to-hub", "me/deepwriter-demo"]) == 0
    assert "pushed to https://huggingface.co/datasets/me/deepwriter-demo" in capsys.readouterr().out
    assert calls[0] == ("create", "me/deepwriter-demo", {"repo_type": "dataset", "private": False, "exist_ok": True})
    assert calls[1][:3] == ("upload", "me/deepwriter-demo", "dataset")
    assert calls[1][3] == sorted(
        [
            "README.md",
            "run_config.json",
            "mix/train-00000-of-00001.parquet",
            "reference/input.json",
            "trajectories/train-00000-of-00001.parquet",
        ]
    )

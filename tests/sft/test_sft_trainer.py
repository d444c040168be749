"""SFT configuration -> TRL arguments, batch geometry, resume refusal, data preparation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from deepwriter.config.root import ConfigError
from deepwriter.config.sft import SFTConfig
from deepwriter.llm.models import build_tiny_tokenizer
from deepwriter.sft import data as sft_data
from deepwriter.sft import trainer as tr
from deepwriter.sft.preemption import mark_complete
from deepwriter.sft.templates import apply_training_template
from deepwriter.testing.repo import REPO, compose_typed


def _sft(**kw):
    return dataclasses.replace(SFTConfig(), **kw)


# --- config / YAML sync --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["full", "lora"])
def test_sft_yaml_names_only_schema_fields(name):
    """Each default is written once, in SFTConfig (tests/config/test_defaults_once.py); the YAML of an
    sft option holds only what that option changes, and every key it holds is a field of the schema."""
    keys = set(yaml.safe_load((REPO / "deepwriter" / "conf" / "sft" / f"{name}.yaml").read_text()) or {})
    fields = {f.name for f in dataclasses.fields(SFTConfig)} - {"deepspeed"}  # its own group
    assert keys <= fields
    assert compose_typed(f"sft={name}").sft.learning_rate == {"full": 2e-5, "lora": 1e-4}[name]


def test_recipes_compose():
    full = compose_typed("+recipe=full")
    assert full.sft.deepspeed.config["zero_optimization"]["stage"] == 3
    assert full.sft.deepspeed.config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    offload = compose_typed("+recipe=full", "deepspeed@sft.deepspeed=zero3-offload")
    assert offload.sft.deepspeed.config["optimizer"]["type"] == "AdamW"  # ZeRO-Offload refuses torch's AdamW
    assert compose_typed("sft=lora").sft.lora.enabled


# --- batch geometry ------------------------------------------------------------------------------


def test_global_batch_gives_accumulation():
    g = tr.batch_geometry(_sft(global_batch_size=96, per_device_batch_size=1), world_size=8)
    assert (g.per_device, g.grad_accum, g.world_size, g.global_batch) == (1, 12, 8, 96)
    g = tr.batch_geometry(_sft(global_batch_size=None, gradient_accumulation_steps=3, per_device_batch_size=2), 4)
    assert g.global_batch == 24


def test_indivisible_batch_fails_with_the_numbers():
    with pytest.raises(ConfigError) as err:
        tr.batch_geometry(_sft(global_batch_size=96, per_device_batch_size=5), world_size=8)
    assert "96" in str(err.value) and "5 x 8 = 40" in str(err.value) and "80" in str(err.value)
    with pytest.raises(ConfigError, match="disagrees"):
        tr.batch_geometry(_sft(global_batch_size=96, gradient_accumulation_steps=4), world_size=8)


def test_world_size_from_launcher_env(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert tr.world_size_for(_sft(num_processes=4, num_nodes=2)) == 8
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert tr.world_size_for(_sft(num_processes=4)) == 3


def test_training_arguments_follow_config(tmp_path):
    cfg = _sft(
        max_steps=7,
        learning_rate=3e-5,
        bf16=False,
        use_cpu=True,
        packing=True,
        max_length=256,
        global_batch_size=4,
        per_device_batch_size=2,
        save_steps=5,
        gradient_checkpointing=True,
    )
    args = tr.training_arguments(cfg, tmp_path, tr.batch_geometry(cfg, 1))
    assert args.max_steps == 7 and args.learning_rate == 3e-5 and args.gradient_accumulation_steps == 2
    assert args.lr_scheduler_type == "constant" and args.optim == "adamw_torch" and args.max_grad_norm == 1.0
    assert args.packing and args.packing_strategy == "bfd" and args.max_length == 256
    assert args.gradient_checkpointing and not args.bf16 and args.use_cpu
    assert args.output_dir == str(tmp_path / "checkpoints") and args.save_steps == 5
    assert args.report_to == [] or args.report_to in ("none", ["none"])
    with pytest.raises(ConfigError, match="warmup_ratio"):
        tr.training_arguments(_sft(warmup_ratio=1.5), tmp_path, tr.BatchGeometry(1, 1, 1))


# --- resume --------------------------------------------------------------------------------------


def test_checkpoint_of_another_config_is_refused(tmp_path):
    root = compose_typed("model@models.student=tiny-qwen3")
    g = tr.BatchGeometry(1, 2, 1)
    ckpt = tmp_path / "checkpoints"
    assert tr.check_resume(ckpt, tr.run_fingerprint(root, g), is_main=True) is None
    (ckpt / "checkpoint-4").mkdir()
    (ckpt / "checkpoint-4" / "trainer_state.json").write_text("{}")
    mark_complete(ckpt / "checkpoint-4", 4)
    (ckpt / "checkpoint-8").mkdir()  # a save killed half-way: every file but the marker
    (ckpt / "checkpoint-8" / "trainer_state.json").write_text('{"global_step": 8, "max_steps": 8}')
    (ckpt / "checkpoint-2").mkdir()  # and one killed before its trainer_state.json
    assert tr.check_resume(ckpt, tr.run_fingerprint(root, g), is_main=True) == ckpt / "checkpoint-4"
    assert sorted(p.name for p in ckpt.iterdir()) == ["checkpoint-4", tr.FINGERPRINT]  # the torn ones removed
    # operational changes (save cadence, ranks per node) keep the run resumable
    same = dataclasses.replace(root, sft=dataclasses.replace(root.sft, save_steps=99, logging_steps=3))
    assert tr.check_resume(ckpt, tr.run_fingerprint(same, g), is_main=True) == ckpt / "checkpoint-4"
    other = dataclasses.replace(root, sft=dataclasses.replace(root.sft, learning_rate=1e-3))
    with pytest.raises(tr.ResumeError, match="learning_rate: checkpoint 2e-05, now 0.001"):
        tr.check_resume(ckpt, tr.run_fingerprint(other, g), is_main=True)
    with pytest.raises(tr.ResumeError, match="geometry.grad_accum"):
        tr.check_resume(ckpt, tr.run_fingerprint(root, tr.BatchGeometry(2, 1, 1)), is_main=True)


def test_trim_log_drops_steps_after_the_checkpoint(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 8)))
    tr.trim_log(log, 4)
    assert [r["step"] for r in tr.read_log(log)] == [1, 2, 3, 4]


# --- data preparation ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok():
    t = build_tiny_tokenizer(1024)
    apply_training_template(t)
    return t


def _save(tmp_path: Path, rows) -> Path:
    import datasets

    dest = tmp_path / "mix" / "dataset"
    datasets.Dataset.from_list(rows).save_to_disk(str(dest))
    return dest


def _row(user="Write.", answer="<think>\nok\n</think>\n\nThe sea.", role="assistant"):
    return {"messages": [{"role": "user", "content": user}, {"role": role, "content": answer}], "source": "s"}


def test_prepare_counts_truncates_and_caches(tmp_path, tok):
    long = " ".join(["sea"] * 300)
    ds_dir = _save(tmp_path, [_row(), _row(answer=long), _row(user=long)])
    prep = sft_data.prepare(ds_dir, tok, max_length=64, overlong="truncate", strict=True, cache_root=tmp_path / "tok")
    c = prep.counts
    assert (c["rows"], c["samples"], c["overlong"], c["truncated"], c["dropped_overlong"]) == (3, 2, 2, 1, 1)
    import datasets

    data = datasets.load_from_disk(str(prep.path))
    assert len(data) == 2 and max(len(r) for r in data["input_ids"]) == 64
    assert all(len(a) == len(b) for a, b in zip(data["input_ids"], data["labels"]))
    again = sft_data.prepare(ds_dir, tok, 64, "truncate", True, tmp_path / "tok")
    assert again.path == prep.path and list((tmp_path / "tok").iterdir()) == [prep.path.parent]
    dropped = sft_data.prepare(ds_dir, tok, 64, "drop", True, tmp_path / "tok")
    assert dropped.counts["samples"] == 1 and dropped.counts["dropped_overlong"] == 2
    assert dropped.path != prep.path


def test_strict_names_row_and_field_lenient_counts(tmp_path, tok):
    ds_dir = _save(tmp_path, [_row(), _row(role="tool"), _row(answer="  ")])
    with pytest.raises(sft_data.SFTDataError, match=r"dataset:row 1: field 'messages': message 1 has role 'tool'"):
        sft_data.prepare(ds_dir, tok, 128, "truncate", strict=True, cache_root=tmp_path / "tok")
    prep = sft_data.prepare(ds_dir, tok, 128, "truncate", strict=False, cache_root=tmp_path / "tok")
    assert prep.counts["skipped"] == 2 and prep.counts["samples"] == 1
    assert [s.where.rsplit(":", 1)[1] for s in prep.skipped] == ["row 1", "row 2"]
    assert "no assistant message" in prep.skipped[1].reason


def test_empty_or_wrong_dataset_is_an_error(tmp_path, tok):
    import datasets

    empty = tmp_path / "empty" / "dataset"
    datasets.Dataset.from_dict({"messages": []}).save_to_disk(str(empty))
    with pytest.raises(sft_data.SFTDataError, match="no rows"):
        sft_data.prepare(empty, tok, 128, "truncate", True, tmp_path / "tok")
    other = tmp_path / "other" / "dataset"
    datasets.Dataset.from_dict({"text": ["a"]}).save_to_disk(str(other))
    with pytest.raises(sft_data.SFTDataError, match="field 'messages': missing column"):
        sft_data.prepare(other, tok, 128, "truncate", True, tmp_path / "tok")
    with pytest.raises(sft_data.SFTDataError, match="not a saved Hugging Face dataset"):
        sft_data.prepare(tmp_path / "nothing", tok, 128, "truncate", True, tmp_path / "tok")


# --- launching and the model card ---------------------------------------------------------------


def test_launch_commands(tmp_path):
    from deepwriter.sft import launch

    cfg = compose_typed("sft.num_processes=8")
    cmd = launch.command(cfg, tmp_path)
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--nnodes"] and "--nproc_per_node" in cmd
    assert cmd[cmd.index("--nproc_per_node") + 1] == "8" and cmd[-3:] == ["-m", "deepwriter.sft.rank", str(tmp_path)]
    multi = compose_typed("sft.num_processes=8", "sft.num_nodes=2", "sft.launcher=deepspeed", "sft.hostfile=/etc/hosts")
    cmd = launch.command(multi, tmp_path)
    assert cmd[cmd.index("--hostfile") + 1] == "/etc/hosts" and cmd[cmd.index("--num_nodes") + 1] == "2"
    assert cmd[-3:] == ["--module", "deepwriter.sft.rank", str(tmp_path)]
    with pytest.raises(ValueError, match="several nodes"):
        launch.command(compose_typed("sft.num_processes=8", "sft.num_nodes=2"), tmp_path)


def test_model_card_lists_data_settings_and_nothing_outside_the_stage_key(tmp_path):
    from deepwriter.sft.model_folder import write_model_card

    cfg = compose_typed("+recipe=full")
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "summary.json").write_text(json.dumps({"longbench_write": {"score": 7.5}}))
    write_model_card(
        tmp_path,
        cfg,
        {"rows": 10, "samples": 9, "grad_accum": 12, "world_size": 8},
        {"last_loss": 0.9},
        {"synthetic": 6, "public": 3},
        Path("/data/mix/dataset"),
    )
    card = (tmp_path / "README.md").read_text()
    assert "base_model: Qwen/Qwen3-8B-Base" in card and "| global_batch_size | 96 |" in card
    assert "12 x 8" in card and "source `public`: 3" in card
    assert "7.5" not in card and "Evaluation" not in card  # an eval result lying around is not the stage's input
    assert '"stage": 3' in card  # the DeepSpeed config


def test_attention_pairs_per_token_of_the_tokenised_samples(tmp_path):
    """Each sample attends to itself only (packing keeps it whole): sum L(L+1)/2 over sum L."""
    import datasets

    from deepwriter.sft import data as sft_data

    rows = [{"input_ids": list(range(n)), "labels": list(range(n))} for n in (1, 4, 10)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "d"))
    assert sft_data.attention_pairs_per_token(tmp_path / "d") == pytest.approx((1 + 10 + 55) / 15)

"""Export a run's data for others: `python -m deepwriter.export RUN_DIR [--out DIR] [--push-to-hub REPO_ID]`.

Writes a Hugging Face dataset folder (what `datasets.load_dataset(DIR)` and `push_to_hub` read):

    README.md                                    dataset card: YAML header (configs, splits), counts, recipe, method
    trajectories/train-00000-of-00001.parquet    kept REER trajectories: request, thinking, answer + search metadata
    mix/train-00000-of-00001.parquet             the SFT mix as trained on: messages, source, category, id
    reference/input.json                         the trajectories' pairs in the authors' input format,
                                                 a JSON list of {"index", "question", "solution"}
    run_config.json                              the run's config (as the run wrote it, secrets redacted)

`load_dataset(DIR)` reads the trajectories (the default config); `load_dataset(DIR, "mix")` the mix.
A run whose synthetic part did not come from our search has no trajectories; only its mix is written.
`--push-to-hub` uploads the folder when the user is logged in (`hf auth login` or HF_TOKEN);
otherwise it says so in one line and exits non-zero, the folder still written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from deepwriter.core.badinput import DataError
from deepwriter.core.errors import DeepwriterError
from deepwriter.mix.build import load_trajectories

TRAJECTORIES, MIX, REFERENCE_INPUT = "trajectories", "mix", "reference/input.json"
RUN_CONFIG = "run_config.json"  # the run's config.json (secrets already redacted when the run wrote it)
PARQUET = "train-00000-of-00001.parquet"


class ExportError(DeepwriterError):
    """A run folder that cannot be exported, or a push that cannot be made: one line."""


def _kept_trajectories(shard_dir: Path) -> Tuple[List[Dict[str, Any]], Dict[str, int]]:
    """Rows of the kept trajectories, validated by the mix's own reader, with the search's metadata
    read from the same shard lines; and the search's counts (records, kept, discarded by reason)."""

    records, _, _ = load_trajectories(shard_dir, "z_final", strict=True)
    raw: Dict[str, Dict[str, Any]] = {}
    for shard in sorted(shard_dir.glob("*.jsonl")):
        for lineno, line in enumerate(shard.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                raw[f"{shard}:{lineno}"] = json.loads(line)
    verdicts = [r.get("verdict") or {} for r in raw.values()]
    counts = {"records": len(raw), "kept": sum(bool(v.get("kept")) for v in verdicts)}
    for v in verdicts:
        if not v.get("kept"):
            key = f"discarded_{v.get('reason')}"
            counts[key] = counts.get(key, 0) + 1
    rows = []
    for rec in records:
        full = raw[rec["where"]]
        scores = [float(s) for s in full.get("scores") or []]
        rows.append(
            {
                "id": rec["id"],
                "request": rec["x"],
                "thinking": rec["think"],
                "answer": rec["y"],
                "category": rec["category"],
                "thinking_initial": full.get("z0") or "",
                "score_initial": scores[0] if scores else None,
                "score_final": scores[-1] if scores else None,
                "search_steps": len(full.get("steps") or []),
                "accepted_edits": len(full.get("accepted_edits") or []),
                "num_segments": full.get("num_segments"),
                "language": full.get("language"),
                "generator": (full.get("models") or {}).get("generator"),
                "scorer": (full.get("models") or {}).get("scorer"),
            }
        )
    return rows, counts


def _write_parquet(rows: List[Dict[str, Any]], folder: Path, features: Optional[Any] = None) -> None:
    import datasets

    folder.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(folder / PARQUET))


def _write_mix(mix_dir: Path, folder: Path) -> int:
    import datasets

    ds = datasets.load_from_disk(str(mix_dir / "dataset"))
    folder.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(folder / PARQUET))
    return len(ds)


def _read_json(path: Path) -> Dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _card(
    run_dir: Path, config: Dict[str, Any], n_traj: Optional[int], n_mix: Optional[int], synth_counts: Dict[str, int]
) -> str:
    recipe = config.get("recipe", {})
    synth = config.get("synthesis", {})
    models = config.get("models", {})
    mix_counts = _read_json(run_dir / "mix" / "mix_counts.json").get("counts", {})
    configs = []
    if n_traj is not None:
        configs.append(
            f"- config_name: {TRAJECTORIES}\n  default: true\n  data_files:\n  - split: train\n"
            f"    path: {TRAJECTORIES}/train-*.parquet"
        )
    if n_mix is not None:
        default = "" if n_traj is not None else "\n  default: true"
        configs.append(
            f"- config_name: {MIX}{default}\n  data_files:\n  - split: train\n    path: {MIX}/train-*.parquet"
        )
    header = "---\nconfigs:\n" + "\n".join(configs) + "\ntags:\n- reer\n- deep-reasoning\n- writing\n---\n"

    def name(role: str) -> str:
        m = models.get(role) or {}
        return str(m.get("name") or m.get("model_id") or m.get("path") or "?")

    lines = [f"# deepwriter export: recipe `{recipe.get('name', '?')}`, run `{config.get('run_id', run_dir.name)}`", ""]
    lines.append(
        f"Recipe `{recipe.get('name', '?')}` (stages {', '.join(recipe.get('stages') or [])}; scale "
        f"{recipe.get('scale', '?')}){': ' + recipe['description'] if recipe.get('description') else '.'} "
        f"Its whole config is in `{RUN_CONFIG}`."
    )
    lines += ["", "## Contents", "", "| config | rows | what |", "|---|---|---|"]
    if n_traj is not None:
        lines.append(
            f"| {TRAJECTORIES} | {n_traj} | REER trajectories the search kept: request, thinking (the final "
            "trajectory), answer, the initial thinking and the search's scores |"
        )
    if n_mix is not None:
        lines.append(f"| {MIX} | {n_mix} | the SFT mix as trained on (chat messages; thinking in `<think>` blocks) |")
    if n_traj is not None:
        lines += [
            "",
            f"`{REFERENCE_INPUT}` holds the trajectories' (request, answer) pairs in the authors' input format "
            '(a JSON list of `{"index", "question", "solution"}`), for their synthesis code.',
        ]
    lines += ["", "## How it was made", ""]
    if n_traj is not None:
        lines += [
            f"Thinking was synthesized by the REER search (search {synth.get('search')}, reflection "
            f"{synth.get('reflection')}): generator `{name('generator')}` wrote an initial trajectory for each "
            f"(request, answer); segment by segment it proposed {synth.get('num_candidates')} rewrites, kept one "
            f"when it lowered the clipped mean NLL of the answer under scorer `{name('scorer')}`, and stopped below "
            f"{synth.get('stop_threshold')} or after {synth.get('max_steps')} steps. Scores are that NLL "
            "(`score_initial`, `score_final`; perplexity is exp of it).",
            "",
        ]
    if synth_counts:
        lines += ["Synthesis counts (records the search wrote):", "", "| count | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in synth_counts.items() if isinstance(v, (int, float))]
        lines.append("")
    if mix_counts:
        lines += [
            "The mix went through exact and near-duplicate removal, decontamination against the evaluation "
            "benchmarks and the student's token limit:",
            "",
            "| count | value |",
            "|---|---|",
        ]
        lines += [f"| {k} | {v} |" for k, v in mix_counts.items() if isinstance(v, (int, float))]
        lines.append("")
    lines += [
        "## Use",
        "",
        "```python",
        "from datasets import load_dataset",
        f'trajectories = load_dataset("PATH_OR_REPO", "{TRAJECTORIES}", split="train")'
        if n_traj is not None
        else f'mix = load_dataset("PATH_OR_REPO", "{MIX}", split="train")',
        "```",
        "",
        f"Made with deepwriter (`python -m deepwriter.export {run_dir}`).",
        "",
    ]
    return header + "\n".join(lines)


def export_run(run_dir: Path, out: Path) -> Dict[str, Any]:
    """Write the export folder; returns the counts written."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: no such run folder")
    shards = run_dir / "synthesize" / "shards"
    mix_dir = run_dir / "mix"
    has_traj = shards.is_dir() and any(shards.glob("*.jsonl"))
    has_mix = (mix_dir / "dataset" / "dataset_info.json").exists()
    if not (has_traj or has_mix):
        raise ExportError(f"{run_dir}: neither synthesize/shards nor a finished mix/dataset to export")
    config = _read_json(run_dir / "config.json")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    counts: Dict[str, Any] = {}
    synth_counts: Dict[str, int] = {}
    n_traj = n_mix = None
    if has_traj:
        rows, synth_counts = _kept_trajectories(shards)
        _write_parquet(rows, out / TRAJECTORIES)
        n_traj = counts["trajectories"] = len(rows)
        ref = [{"index": r["id"], "question": r["request"], "solution": r["answer"]} for r in rows]
        (out / REFERENCE_INPUT).parent.mkdir(parents=True, exist_ok=True)
        (out / REFERENCE_INPUT).write_text(json.dumps(ref, ensure_ascii=False, indent=2), encoding="utf-8")
    if has_mix:
        n_mix = counts["mix"] = _write_mix(mix_dir, out / MIX)
    if (run_dir / "config.json").exists():
        shutil.copyfile(run_dir / "config.json", out / RUN_CONFIG)
    (out / "README.md").write_text(_card(run_dir, config, n_traj, n_mix, synth_counts), encoding="utf-8")
    return counts


def push(out: Path, repo_id: str, private: bool = False) -> str:
    """Upload the export folder as a dataset repo; only for a logged-in user."""
    from huggingface_hub import HfApi, get_token

    if not get_token():
        raise ExportError(
            f"--push-to-hub {repo_id}: not logged in to the Hugging Face Hub (run `hf auth login` or set "
            f"HF_TOKEN); the dataset is written to {out}"
        )
    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(folder_path=str(out), repo_id=repo_id, repo_type="dataset", commit_message="deepwriter export")
    return f"https://huggingface.co/datasets/{repo_id}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepwriter.export", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run folder: runs/RECIPE/RUN_ID")
    parser.add_argument("--out", type=Path, default=None, help="the dataset folder (default: RUN_DIR/export)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="upload to this dataset repo")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: a private repo")
    args = parser.parse_args(argv)
    out = args.out or args.run_dir / "export"
    try:
        counts = export_run(args.run_dir, out)
        print(f"deepwriter.export: wrote {out} ({', '.join(f'{k} {v}' for k, v in counts.items())})")
        if args.push_to_hub:
            print(f"deepwriter.export: pushed to {push(out, args.push_to_hub, args.private)}")
    except (ExportError, DataError) as exc:
        print(f"deepwriter.export: {exc}", file=sys.stderr)
        return 2
    return 0

"""Read a run's stage folders into the plain data the report page draws.

Every reader takes a stage folder and returns None when the stage has not written its files yet, so
the report of an unfinished run shows what there is. Large parts (a pair's texts and search steps,
an eval item's answer and judge replies) are returned apart from the compact table rows, so that the
page can hold the rows and load the details on demand.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from deepwriter.eval import paired_runs, tables
from deepwriter.eval.benchmarks import KINDS
from deepwriter.sft.memory import GiB, ModelShape, plan_memory

PAIR_COLUMNS = ["id", "category", "kept", "reason", "score_z0", "score_final", "steps", "accepted", "tokens"]
ITEM_COLUMNS = ["benchmark", "id", "score", "failure"]
DROPPED_EXAMPLES = 3  # per mix filter: enough to see what it removes, small at any scale
LENGTH_BINS = 20


def read_json(path: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_jsonl(path: Path) -> Iterator[Dict[str, Any]]:
    """The records of a JSONL file; a torn last line (a stage killed mid-write) is passed over."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                yield rec


def _number(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


# --- synthesis ----------------------------------------------------------------------------------------


def highlighted(z_final: str, edits: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """z_final as pieces [{"text"}, {"text", "before", "steps", "score_before", "score_after"}, ...]:
    each accepted rewrite that survives in the final trajectory is its own piece, carrying the text it
    replaced. A segment rewritten twice shows its last rewrite and the original text of z0."""
    per_segment: Dict[int, List[Dict[str, Any]]] = {}
    for e in edits:
        per_segment.setdefault(e.get("segment", -1), []).append(e)
    marks: List[Tuple[int, int, Dict[str, Any]]] = []
    for chain in per_segment.values():
        chain.sort(key=lambda e: e.get("step", 0))
        after = chain[-1].get("after") or ""
        at = z_final.find(after) if after else -1
        # overlapping finds (a rewrite repeating another's text) would garble the page: keep the first
        if at < 0 or any(at < end and at + len(after) > start for start, end, _ in marks):
            continue
        mark = {
            "text": after,
            "before": chain[0].get("before") or "",
            "steps": [e.get("step") for e in chain],
            "score_before": chain[0].get("score_before"),
            "score_after": chain[-1].get("score_after"),
        }
        marks.append((at, at + len(after), mark))
    pieces: List[Dict[str, Any]] = []
    pos = 0
    for start, end, mark in sorted(marks, key=lambda m: m[0]):
        if start > pos:
            pieces.append({"text": z_final[pos:start]})
        pieces.append(mark)
        pos = end
    if pos < len(z_final) or not pieces:
        pieces.append({"text": z_final[pos:]})
    return pieces


def pair_row(rec: Dict[str, Any]) -> List[Any]:
    scores = [s for s in (_number(v) for v in rec.get("scores") or []) if s is not None]
    verdict = rec.get("verdict") or {}
    tokens = rec.get("tokens") or {}
    return [
        str(rec.get("id", "")),
        rec.get("category") or "uncategorised",
        1 if verdict.get("kept") else 0,
        verdict.get("reason") or "",
        scores[0] if scores else None,
        scores[-1] if scores else None,
        len(rec.get("steps") or []),
        len(rec.get("accepted_edits") or []),
        int(tokens.get("prompt", 0) or 0) + int(tokens.get("completion", 0) or 0),
    ]


def pair_seconds(timings: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """A pair's two times, named for what they are. Model seconds: the generate and score calls
    charged to it (a batched in-process call's duration is shared by its members). Seconds in flight:
    wall time from its admission to its record; under continuous scheduling up to max_in_flight pairs
    are in flight at once and wait for each other's calls, so this is not what the pair cost."""
    model = [_number(timings.get(k)) for k in ("generate_s", "score_s")]
    return {
        "model_s": sum(m for m in model if m is not None) if any(m is not None for m in model) else None,
        "in_flight_s": _number(timings.get("total_s")),
    }


def pair_detail(rec: Dict[str, Any]) -> Dict[str, Any]:
    z0, z_final = rec.get("z0") or "", rec.get("z_final") or ""
    return {
        "x": rec.get("x") or "",
        "y": rec.get("y") or "",
        "z0": z0 if z0 != z_final else None,  # the same text twice would double the page's size
        "z": highlighted(z_final, rec.get("accepted_edits") or []),
        "raw_initial": rec.get("raw_initial"),
        "scores": [_number(s) for s in rec.get("scores") or []],
        "steps": rec.get("steps") or [],
        "tokens": rec.get("tokens") or {},
        "trigger": rec.get("trigger"),
        "timings": rec.get("timings") or {},
        **pair_seconds(rec.get("timings") or {}),
    }


def synthesis(stage: Path) -> Optional[Dict[str, Any]]:
    shards = sorted((stage / "shards").glob("*.jsonl")) if (stage / "shards").is_dir() else []
    manifest = read_json(stage / "manifest.json") or {}
    if not shards and not manifest:
        return None
    rows = [pair_row(rec) for shard in shards for rec in read_jsonl(shard)]
    return {
        "columns": PAIR_COLUMNS,
        "rows": rows,
        # read again when written: 20K pairs' texts need not sit in memory all at once
        "details": lambda: (pair_detail(rec) for shard in shards for rec in read_jsonl(shard)),
        "counts": manifest.get("counts") or {},
        "metrics": manifest.get("metrics") or {},
        "status": manifest.get("status", "unfinished"),
    }


# --- mix ----------------------------------------------------------------------------------------------


def _dataset_rows(dataset: Path) -> Iterator[Dict[str, Any]]:
    import pyarrow as pa

    for f in sorted(dataset.glob("*.arrow")):
        with pa.memory_map(str(f)) as source:
            table = pa.ipc.open_stream(source).read_all()
        yield from table.select([c for c in ("source", "category", "messages") if c in table.column_names]).to_pylist()


def histogram(values: List[float], bins: int = LENGTH_BINS) -> Dict[str, Any]:
    if not values:
        return {"edges": [], "counts": []}
    lo, hi = min(values), max(values)
    width = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / width))] += 1
    return {"edges": [lo + i * width for i in range(bins + 1)], "counts": counts}


def mix(stage: Path) -> Optional[Dict[str, Any]]:
    manifest = read_json(stage / "manifest.json")
    if manifest is None:
        return None
    by_category: Counter = Counter()
    words: Dict[str, List[float]] = {}
    if (stage / "dataset").is_dir():
        for row in _dataset_rows(stage / "dataset"):
            source = row.get("source") or "?"
            by_category[(source, row.get("category") or "uncategorised")] += 1
            answer = " ".join(m.get("content") or "" for m in row.get("messages") or [] if m.get("role") == "assistant")
            words.setdefault(source, []).append(len(answer.split()))
    dropped = []
    for f in sorted((stage / "dropped").glob("*.jsonl")) if (stage / "dropped").is_dir() else []:
        recs = list(read_jsonl(f))
        dropped.append({"filter": f.stem, "count": len(recs), "examples": recs[:DROPPED_EXAMPLES]})
    card = stage / "DATA_CARD.md"
    return {
        "counts": manifest.get("counts") or {},
        "metrics": manifest.get("metrics") or {},
        "card": card.read_text() if card.is_file() else "",
        "categories": [[s, c, n] for (s, c), n in sorted(by_category.items())],
        "lengths": {source: histogram(v) for source, v in sorted(words.items())},
        "dropped": dropped,
        "skipped": sum(1 for _ in read_jsonl(stage / "skipped.jsonl")) if (stage / "skipped.jsonl").is_file() else 0,
    }


# --- sft ----------------------------------------------------------------------------------------------

SFT_SERIES = ("loss", "learning_rate", "tokens_per_s", "grad_norm", "mem/gpu_max_allocated_gb", "mem/cpu_max_rss_gb")


def sft(stage: Path) -> Optional[Dict[str, Any]]:
    manifest = read_json(stage / "manifest.json")
    log = list(read_jsonl(stage / "train_log.jsonl")) if (stage / "train_log.jsonl").is_file() else []
    if manifest is None and not log:
        return None
    manifest = manifest or {}
    series = {}
    for key in SFT_SERIES:
        points = [[r["step"], _number(r.get(key))] for r in log if "step" in r and _number(r.get(key)) is not None]
        if points:
            series[key] = points
    measured = [v for key in ("mem/gpu_max_allocated_gb", "mem/cpu_max_rss_gb") for _, v in series.get(key, [])]
    metrics = manifest.get("metrics") or {}
    return {
        "counts": manifest.get("counts") or {},
        "metrics": metrics,
        "series": series,
        "memory": {
            "planned": planned_memory(stage, manifest),
            "measured_gb": max(measured) if measured else None,
            "measured_on": "gpu" if "mem/gpu_max_allocated_gb" in series else ("cpu" if measured else None),
        },
    }


def planned_memory(stage: Path, manifest: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The SFT planner's per-GPU estimate (GiB), worked out again from the stage's recorded settings
    and the trained model's config.json, as the stage printed it before training (None without them)."""
    from types import SimpleNamespace

    settings = (manifest.get("config") or {}).get("sft")
    model_config = read_json(stage / "model" / "config.json")
    if not settings or not model_config:
        return None
    counts = manifest.get("counts") or {}
    zero = ((settings.get("deepspeed") or {}).get("config") or {}).get("zero_optimization") or {}
    if not (settings.get("deepspeed") or {}).get("enabled"):
        zero = {}
    offloaded = lambda key: (zero.get(key) or {}).get("device", "none") not in ("none", None)
    lora = settings.get("lora") or {}
    try:
        plan = plan_memory(
            ModelShape.from_hf_config(SimpleNamespace(**model_config)),
            world_size=int(counts.get("world_size", 1)),
            zero_stage=int(zero.get("stage", 0)),
            per_device_batch=int(settings["per_device_batch_size"]),
            max_length=int(settings["max_length"]),
            grad_accum=int(counts.get("grad_accum", 1)),
            gradient_checkpointing=bool(settings.get("gradient_checkpointing")),
            offload_optimizer=offloaded("offload_optimizer"),
            offload_param=offloaded("offload_param"),
            lora_r=int(lora.get("r", 0)) if lora.get("enabled") else 0,
            weight_bytes=2 if settings.get("bf16") else 4,
        )
    except (AttributeError, KeyError, TypeError, ValueError):  # a model config the planner cannot read
        return None
    parts = ("weights", "gradients", "optimizer", "activations", "overhead")
    return {**{k: getattr(plan, k) / GiB for k in parts}, "total": plan.total / GiB}


# --- eval ---------------------------------------------------------------------------------------------


def breakdowns(summary: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Per benchmark, the bars worth drawing, as each benchmark defines them."""

    out = []
    for name, entry in (summary.get("benchmarks") or {}).items():
        kind = entry.get("kind")
        if kind not in KINDS:
            continue
        for chart in KINDS[kind].breakdowns(entry.get("summary") or {}):
            out.append({"benchmark": name, "kind": kind, "title": chart.title, "values": chart.values})
    return out


def item_score(rec: Dict[str, Any]) -> Optional[float]:
    for key in ("score", "S", "S_q"):
        if _number(rec.get(key)) is not None:
            return _number(rec[key])
    return None


def evaluation(stage: Path) -> Optional[Dict[str, Any]]:
    summary = read_json(stage / "summary.json")
    items_dir = stage / "items"
    if summary is None and not items_dir.is_dir():
        return None
    # the raw generations (*.generations.jsonl) are left out: the scored items hold the same answer
    files = [f for f in sorted(items_dir.glob("*.jsonl")) if not f.name.endswith(".generations.jsonl")]
    rows = [
        [f.stem, str(rec.get("id", "")), item_score(rec), rec.get("failure") or ""]
        for f in files
        for rec in read_jsonl(f)
    ]
    paper = reported = None
    if summary:
        summary = paired_runs.with_intervals(summary, stage)  # an older summary: intervals from its items
        header, body = tables.comparison_with_intervals({summary.get("label", "run"): summary})
        notes = [n for n in (tables.SCALE_NOTE, tables.INTERVAL_NOTE, tables.definitions_note([summary])) if n]
        paper = {"header": header, "rows": body, "notes": notes}
        header, body, notes = tables.reported(summary)
        reported = {"title": tables.REPORTED_TITLE, "header": header, "rows": body, "notes": notes}
    return {
        "paper": paper,
        "reported": reported,
        "headline": (summary or {}).get("headline") or {},
        "breakdowns": breakdowns(summary or {}),
        "judge": {k: (summary or {}).get(k) for k in ("model_under_test", "judge", "judge_mode", "judge_stats")},
        # per benchmark with judge samples: Krippendorff's α and the items the judgments disagree on most
        "agreement": {
            name: entry["judge_agreement"]
            for name, entry in ((summary or {}).get("benchmarks") or {}).items()
            if entry.get("judge_agreement")
        },
        # with a judge panel (eval.panel): Krippendorff's α across its judges and the items they disagree on most
        "panel": {
            name: entry["panel_agreement"]
            for name, entry in ((summary or {}).get("benchmarks") or {}).items()
            if entry.get("panel_agreement")
        },
        "columns": ITEM_COLUMNS,
        "rows": rows,
        "details": lambda: (item_detail(rec) for f in files for rec in read_jsonl(f)),
    }


def paired_vs_first(run_dirs: List[Path]) -> List[Optional[Dict[str, Any]]]:
    """For each run after the first, {column: paired difference against the first run} over the items
    both scored (deepwriter.eval.paired_runs); None for the first and for runs without eval results."""
    folders = [stage_dir(Path(d), "eval") for d in run_dirs]
    summaries = [read_json(f / "summary.json") if f else None for f in folders]
    out: List[Optional[Dict[str, Any]]] = [None]
    for f, s in zip(folders[1:], summaries[1:]):
        ok = f is not None and s is not None and summaries[0] is not None
        out.append(paired_runs.compare(s, f, summaries[0], folders[0]) if ok else None)
    return out


def item_detail(rec: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "prompt": rec.get("prompt") or "",
        "answer": rec.get("answer") or "",
        "thinking": rec.get("thinking") or "",
        "fields": {k: v for k, v in rec.items() if isinstance(v, (int, float, str)) and k not in _TEXTS},
        "judge": rec.get("judge") or {},
        "criteria": rec.get("criteria") or [],
    }


_TEXTS = {"prompt", "answer", "thinking", "output"}


# --- a run --------------------------------------------------------------------------------------------

STAGES = ("synthesize", "mix", "sft", "eval")


def stage_dir(run_dir: Path, stage: str) -> Optional[Path]:
    d = run_dir / stage
    return d if d.is_dir() else None


def run(run_dir: Path) -> Dict[str, Any]:
    """All sections of one run folder (runs/<recipe>/<run_id>); a stage that has not run is None."""
    manifest = read_json(run_dir / "manifest.json") or {}
    readers = {"synthesize": synthesis, "mix": mix, "sft": sft, "eval": evaluation}
    sections = {}
    for name, reader in readers.items():
        d = stage_dir(run_dir, name)
        sections[name] = reader(d) if d else None
    recipe = manifest.get("recipe") or run_dir.parent.name
    run_id = manifest.get("run_id") or run_dir.name
    return {
        "label": f"{recipe}/{run_id}",
        "recipe": recipe,
        "run_id": run_id,
        "stages": {
            k: {"status": v.get("status"), "seconds": v.get("seconds")}
            for k, v in (manifest.get("stages") or {}).items()
        },
        # the SLURM jobs of a run submitted with launcher=slurm (deepwriter.cluster.launcher writes the file)
        "jobs": read_json(run_dir / "slurm" / "jobs.json"),
        **sections,
    }

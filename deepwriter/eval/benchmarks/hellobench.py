"""HelloBench (Quehry/HelloBench): checklist-wise judging scored with the official per-category weights.

All checklist items of a sample are judged in one call, each 0 / 0.25 / 0.5 / 0.75 / 1 with a reason.
A sample scores Σ weight_i · score_i with the category's weights from `weighted_scores.txt` (they sum to
100). Subsets are averaged over their samples; `overall` is the mean over all scored samples, and
`overall_rescaled` = (overall − 75)·4. Groups of subsets (the paper's HB-A / HB-B) are the mean of their
samples.

Data folder layout (as published): main_data/<subset>.jsonl (id, category, instruction, checklists),
checklists/<subset>_checklist.json, weighted_scores.txt (a `REGRESSION_DICT = {category: [weights]}`).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from deepwriter.badinput import Skipped
from deepwriter.eval.benchmarks.base import (
    BenchmarkDataError,
    Item,
    JudgeOutcome,
    JudgeTask,
    Slot,
    download,
    mean,
    read_jsonl,
    require,
    skip_or_raise,
)
from deepwriter.files import resolve_data_path

KIND = "hellobench"
SUBSETS = ("open_ended_qa", "summarization", "chat", "text_completion", "heuristic_text_generation")
_RAW = "https://raw.githubusercontent.com/Quehry/HelloBench/main/"
SOURCE_URLS = {
    **{f"main_data/{s}.jsonl": f"{_RAW}data/main_data/{s}.jsonl" for s in SUBSETS},
    "weighted_scores.txt": f"{_RAW}weighted_scores.txt",
}
SCORES = (0.0, 0.25, 0.5, 0.75, 1.0)


def data_dir_of(path: Optional[str], data_dir: Path) -> Path:
    if path:
        return resolve_data_path(path)
    return download(SOURCE_URLS, data_dir / KIND)


def load_weights(folder: Path) -> Dict[str, List[float]]:
    """The official per-category checklist weights, read as data (never executed)."""
    f = folder / "weighted_scores.txt"
    if not f.is_file():
        raise BenchmarkDataError(f"{f}:1: field 'REGRESSION_DICT': file not found (HelloBench's checklist weights)")
    text = f.read_text(encoding="utf-8")
    m = re.search(r"^\s*REGRESSION_DICT\s*=\s*", text, re.MULTILINE)
    literal = text[m.end() :] if m else ""
    if not m:
        raise BenchmarkDataError(f"{f}:1: field 'REGRESSION_DICT': expected `REGRESSION_DICT = {{...}}`")
    try:
        weights = ast.literal_eval(literal.strip())
    except (ValueError, SyntaxError) as exc:
        raise BenchmarkDataError(
            f"{f}:{getattr(exc, 'lineno', 1) or 1}: field 'REGRESSION_DICT': not a literal ({exc})"
        ) from None
    for cat, ws in weights.items():
        if not isinstance(ws, list) or not all(isinstance(w, (int, float)) for w in ws):
            raise BenchmarkDataError(f"{f}:1: field '{cat}': expected a list of numbers")
        if abs(sum(ws) - 100.0) > 1e-6:
            raise BenchmarkDataError(f"{f}:1: field '{cat}': weights sum to {sum(ws):.6f}, expected 100")
    return weights


def available_subsets(folder: Path) -> List[str]:
    main = folder / "main_data"
    return [s for s in SUBSETS if (main / f"{s}.jsonl").is_file() and (main / f"{s}.jsonl").stat().st_size > 0]


def load(
    name: str, path: Optional[str], data_dir: Path, subsets: List[str], skipped: Optional[List[Skipped]] = None
) -> List[Item]:
    folder = data_dir_of(path, data_dir)
    weights = load_weights(folder)
    chosen = list(subsets) or available_subsets(folder)
    items = []
    for subset in chosen:
        f = folder / "main_data" / f"{subset}.jsonl"
        if not f.is_file():
            raise BenchmarkDataError(f"{f}:0: field 'subset': no data file for subset {subset!r}")
        for lineno, rec in read_jsonl(f, skipped):
            with skip_or_raise(skipped):
                where = f"{f}:{lineno}"
                item_id = require(rec, "id", where)
                category = require(rec, "category", where)
                checklists = require(rec, "checklists", where, kind=list)
                if category not in weights:
                    raise BenchmarkDataError(
                        f"{where}: field 'category': {category!r} has no weights in weighted_scores.txt"
                    )
                if len(weights[category]) != len(checklists):
                    raise BenchmarkDataError(
                        f"{where}: field 'checklists': {len(checklists)} items but category {category!r} has "
                        f"{len(weights[category])} weights"
                    )
                items.append(
                    Item(
                        name,
                        item_id,
                        require(rec, "instruction", where),
                        {
                            "subset": subset,
                            "category": category,
                            "checklists": checklists,
                            "weights": weights[category],
                        },
                    )
                )
    return items


def _slots(n: int) -> List[Slot]:
    return [Slot(str(i), SCORES) for i in range(n)]


def parse_checklist_reply(obj: Any) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """The official reply shape, a list of {checklist_id, reason, evaluation_score}; an object keyed
    by checklist id is accepted too."""
    values, reasons = {}, {}
    if isinstance(obj, dict) and isinstance(obj.get("checklist_wise_evaluation", obj.get("evaluations")), list):
        obj = obj.get("checklist_wise_evaluation", obj.get("evaluations"))
    if isinstance(obj, list):
        for entry in obj:
            if not isinstance(entry, dict) or "checklist_id" not in entry:
                raise ValueError("each list entry needs a checklist_id")
            cid = str(int(float(entry["checklist_id"])))
            values[cid] = entry.get("evaluation_score")
            reasons[cid] = str(entry.get("reason", ""))
        return values, reasons
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, dict):
                reasons[str(k)] = str(v.get("reason", ""))
                v = v.get("evaluation_score", v.get("score"))
            values[str(k)] = v
        return values, reasons
    raise ValueError(f"expected a JSON list of checklist evaluations, got {type(obj).__name__}")


def judge_tasks(item: Item, answer: str) -> List[JudgeTask]:
    checklist = json.dumps(
        [{"checklist_id": i, "checklist_content": c} for i, c in enumerate(item.meta["checklists"])], ensure_ascii=False
    )
    n = len(item.meta["checklists"])
    user = (
        "Evaluate an AI response against a checklist. Each checklist item is a yes/no question about the response; "
        "score each item 0, 0.25, 0.5, 0.75 or 1: 0 = fails it, 0.25 = meets a small part, 0.5 = meets it partly or "
        "unclearly, 0.75 = meets most of it with minor flaws, 1 = meets it fully with nothing to improve. "
        "Be strict.\n\n"
        f"[Instruction]\n{item.prompt}\n[End of instruction]\n\n[Response]\n{answer}\n[End of response]\n\n"
        f"[Checklist]\n{checklist}\n\n"
        f"Reply with a JSON list of {n} objects, one per checklist item, each "
        '{"checklist_id": <id>, "reason": "<why>", "evaluation_score": <score>}, and nothing else.'
    )
    return [
        JudgeTask(
            item.id,
            "checklist",
            [{"role": "user", "content": user}],
            _slots(n),
            parser=parse_checklist_reply,
            format_hint=f"a JSON list of {n} objects with checklist_id 0..{n - 1}, reason and "
            "evaluation_score in {0, 0.25, 0.5, 0.75, 1}",
        )
    ]


def weighted_score(weights: List[float], scores: List[float]) -> float:
    if len(weights) != len(scores):
        raise ValueError(f"{len(scores)} checklist scores for {len(weights)} weights")
    return sum(w * s for w, s in zip(weights, scores))


def score_item(item: Item, answer: str, outcomes: Dict[str, JudgeOutcome]) -> Dict[str, Any]:
    rec: Dict[str, Any] = {"subset": item.meta["subset"], "category": item.meta["category"]}
    out = outcomes.get("checklist")
    if out is None or not out.ok:
        rec["failure"] = (out.error if out is not None else "not judged") or "judge failed"
        return rec
    scores = [out.values[str(i)] for i in range(len(item.meta["checklists"]))]
    rec.update(checklist_scores=scores, reasons=out.reasons, score=weighted_score(item.meta["weights"], scores))
    return rec


def rescale(score: float) -> float:
    return (score - 75.0) * 4.0


DEFAULT_GROUPS = {
    "HB-A": ["open_ended_qa", "summarization", "chat"],
    "HB-B": ["text_completion", "heuristic_text_generation"],
}


def aggregate(records: List[Dict[str, Any]], groups: Optional[Dict[str, List[str]]] = None) -> Dict[str, Any]:
    scored = [r for r in records if "score" in r]
    subsets = {}
    for s in dict.fromkeys(r["subset"] for r in records):
        vals = [r["score"] for r in scored if r["subset"] == s]
        m = mean(vals)
        subsets[s] = {
            "n": sum(1 for r in records if r["subset"] == s),
            "scored": len(vals),
            "score": m,
            "rescaled": rescale(m) if m is not None else None,
        }
    overall = mean([r["score"] for r in scored])
    out: Dict[str, Any] = {
        "n": len(records),
        "scored": len(scored),
        "failures": len(records) - len(scored),
        "subsets": subsets,
        "overall": overall,
        "overall_rescaled": rescale(overall) if overall is not None else None,
        "groups": {},
    }
    for g, members in (groups or DEFAULT_GROUPS).items():
        vals = [r["score"] for r in scored if r["subset"] in members]
        out["groups"][g] = mean(vals)
    return out


def headline(name: str, summary: Dict[str, Any]) -> Dict[str, Optional[float]]:
    prefix = "" if name == KIND else f"{name}:"
    return {f"{prefix}{g}": v for g, v in summary.get("groups", {}).items()}

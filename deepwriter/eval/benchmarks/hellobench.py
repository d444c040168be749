"""HelloBench (Quehry/HelloBench): checklist-wise judging scored with the official per-category weights.

All checklist items of a sample are judged in one call, each 0 / 0.25 / 0.5 / 0.75 / 1 with a reason.
A sample scores Σ weight_i · score_i with the category's weights from `weighted_scores.txt` (they sum to
100). As HelloBench's own aggregation (results/scripts/compute.py) scores a model: each subset is the
mean over its scored samples, the overall score (`subset_mean`) the mean of the subset means, each also
rescaled as (x − 75)·4; `overall` is the mean pooled over all scored samples, reported beside it.
Groups of subsets (the REER paper's HB-A / HB-B) are the mean of their subsets' means. HelloBench
defines no groups: the default membership is the grouping that reproduces the paper's GPT-4o and
Claude-3.5-Sonnet figures from HelloBench's published judgments of those models
(bench/hellobench_groups.py), configurable, and printed beside every table that shows them.

The judge is asked as llm_judge.py's gpt4o_ckwise_evaluation asks GPT-4o (our wording): a system
prompt; the checklist task and its five anchors, stated before the instruction, response and
checklists and repeated after them; strict but fair, a 1 only when nothing can be improved; a Python
list of {checklist_id, reason, evaluation_score}, one per checklist item. Sampled at temperature 0.8,
seed 42, up to 4096 reply tokens. Every answer is word-tokenized (nltk there, an offline
approximation here: deepwriter.eval.words) and shown as its tokens joined by spaces; one over 15,000
tokens is cut to its first 16,000.

Data folder layout (as published): main_data/<subset>.jsonl (id, category, instruction, checklists),
checklists/<subset>_checklist.json, weighted_scores.txt (a `REGRESSION_DICT = {category: [weights]}`).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from deepwriter.config.eval import BenchmarkConfig, HelloBenchConfig
from deepwriter.core.badinput import Skipped
from deepwriter.core.files import resolve_data_path
from deepwriter.eval.benchmarks.base import (
    BenchmarkDataError,
    Breakdown,
    Item,
    JudgeOutcome,
    JudgeSettings,
    JudgeTask,
    Slot,
    answer_for_judge,
    download,
    judge_messages,
    markdown_table,
    mean,
    read_jsonl,
    require,
    skip_or_raise,
)

KIND = "hellobench"
PUBLISHED_ITEMS = (647, "HelloBench paper (arXiv:2409.16191): 647 samples")
JUDGE_CALLS_PER_ITEM = (1, "deepwriter.eval.benchmarks.hellobench: one judge task per item")
GROUP_NOTE = (
    "HelloBench defines no groups of subsets; the default is the grouping that best reproduces the paper's "
    "GPT-4o and Claude-3.5-Sonnet figures from HelloBench's published judgments (docs/FIDELITY.md J31)"
)
SUBSETS = ("open_ended_qa", "summarization", "chat", "text_completion", "heuristic_text_generation")
_RAW = "https://raw.githubusercontent.com/Quehry/HelloBench/main/"
SOURCE_URLS = {
    **{f"main_data/{s}.jsonl": f"{_RAW}data/main_data/{s}.jsonl" for s in SUBSETS},
    "weighted_scores.txt": f"{_RAW}weighted_scores.txt",
}
SCORES = (0.0, 0.25, 0.5, 0.75, 1.0)
# Items are resampled within their subset for intervals (deepwriter.eval.stats): the figures are means
# of subset means, whose sizes are fixed by the benchmark.
STRATUM = "subset"

# Our wording of llm_judge.py's SYS_PROMPT (llm_judge.py:9).
SYSTEM_PROMPT = (
    "You are an evaluator who helps people assess checklists. For responses that Large Language Models (LLMs) "
    "gave to users' instructions, you judge the items of a checklist, each of which is a yes-or-no question."
)
# llm_judge.py:162-179: system + user message; max_tokens 4096, temperature 0.8, seed 42 (no top_p sent:
# the API default, 1). :154-155: nltk word tokens, over 15,000 cut to the first 16,000, joined by spaces.
REFERENCE_JUDGE = JudgeSettings(
    style="reference",
    temperature=0.8,
    top_p=1.0,
    seed=42,
    max_new_tokens=4096,
    system=SYSTEM_PROMPT,
    max_answer_tokens=16000,
    truncate_above_tokens=15000,
    rejoin_tokens=True,
)
STYLES = ("reference",)


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


# Our wording of llm_judge.py's USER_PROMPT (llm_judge.py:10-44): task and anchors, the three
# payloads in {"key": value} wrappers with the end-of-response reminder, the task and anchors again,
# the strictness and reason rules, the list format, the count.
_TASK = (
    "Your central task is to assess a checklist using the user's instruction and the LLM's response. Every "
    "checklist item is a yes-or-no question that names one particular aspect the response should satisfy, and "
    "you decide each item from the instruction and the response. An assessment is one of five scores from 0 to "
    "1:\n\n"
    "0: The response does not satisfy what the checklist item asks; it needs major improvement in several "
    "respects.\n"
    "0.25: The response satisfies part of what the item asks, but important parts of it are left undone.\n"
    "0.5: The response satisfies a fair share of what the item asks, yet the overall verdict remains mixed or "
    "unclear.\n"
    "0.75: The response satisfies most of what the item asks; only small points are left that could be polished "
    "or improved.\n"
    "1: The response satisfies everything the item asks, with no problem or room for improvement that you can "
    "point to. It means the response is already flawless here: you cannot find any real weakness in it."
)


def judge_prompt(instruction: str, response: str, checklists: List[str]) -> str:
    listed = json.dumps(
        [{"checklist_id": i, "checklist_content": c} for i, c in enumerate(checklists)], ensure_ascii=False
    )
    entry = (
        '{"checklist_id": "the id of the checklist item", "reason": "why you gave this score", '
        '"evaluation_score": "your score for this checklist item"}'
    )
    n = len(checklists)
    return (
        f"{_TASK}\n\n"
        f'This is the instruction:\n{{"instruction": {instruction}}}\n\n'
        f'This is the response the LLM gave:\n{{"response": {response}}}\n\n'
        "As the response can be long, note explicitly that it has now ended.\n\n"
        f'This is the checklist for the instruction:\n{{"checklists": {listed}}}\n\n'
        "To keep the requirements fresh, here they are once more:\n\n"
        f"{_TASK}\n\n"
        "Always give the reason behind each assessment. Be strict, but fair. A score of 1 says the response meets "
        "the checklist item perfectly and you see truly nothing left to improve; before you give a 1, think "
        "carefully about whether the item is met in full.\n\n"
        "Assess every checklist item and return the results: output a Python List of Python Dictionaries in "
        f"this format:\n[{entry},{entry}]\n\n"
        f"You have {n} checklist items to assess in all. The output list must have exactly as many entries as "
        "there are checklist items, with an evaluation score for every item. Judge strictly, so that the "
        "responses of different models can be told apart. Answer with nothing but a valid Python List: it is run "
        "directly as Python code."
    )


def judge_tasks(item: Item, answer: str, settings: Optional[JudgeSettings] = None) -> List[JudgeTask]:
    """One task scoring every checklist item of the sample. Without settings: the reference prompt,
    system prompt and answer form, and the Judge's own sampling (eval.judge)."""
    use = settings or REFERENCE_JUDGE
    checklists = item.meta["checklists"]
    n = len(checklists)
    user = judge_prompt(item.prompt, answer_for_judge(answer, use), checklists)
    return [
        JudgeTask(
            item.id,
            "checklist",
            judge_messages(use, user),
            _slots(n),
            parser=parse_checklist_reply,
            format_hint=f"a Python list of {n} dictionaries with checklist_id 0..{n - 1}, reason and "
            "evaluation_score in {0, 0.25, 0.5, 0.75, 1}",
            sampling=settings.sampling if settings else None,
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


# HelloBench defines no groups of subsets (neither its repository nor its paper names HB-A / HB-B).
# Of every grouping of the five subsets, this one reproduces the REER paper's HB-A / HB-B of GPT-4o
# (83.7 / 87.6) and Claude-3.5-Sonnet (82.9 / 88.3) from HelloBench's published judgments of the two
# models best (RMSE 0.28 with groups as means of subset means; the next grouping 0.67, the previous
# default oqa+sum+chat / tc+htg 2.06): bench/hellobench_groups.py, docs/FIDELITY.md J31. Every table
# that shows the groups prints this definition beside it.
DEFAULT_GROUPS = {
    "HB-A": ["summarization", "chat"],
    "HB-B": ["open_ended_qa", "heuristic_text_generation"],
}


def _rescaled(v: Optional[float]) -> Optional[float]:
    return rescale(v) if v is not None else None


def aggregate(records: List[Dict[str, Any]], groups: Optional[Dict[str, List[str]]] = None) -> Dict[str, Any]:
    """Per-subset means; the unweighted mean of the subset means (`subset_mean`, HelloBench's overall
    score) and the pooled mean over all samples (`overall`); the groups, each the mean of its subsets'
    means; all raw and rescaled."""
    scored = [r for r in records if "score" in r]
    subsets = {}
    for s in dict.fromkeys(r["subset"] for r in records):
        vals = [r["score"] for r in scored if r["subset"] == s]
        m = mean(vals)
        subsets[s] = {
            "n": sum(1 for r in records if r["subset"] == s),
            "scored": len(vals),
            "score": m,
            "rescaled": _rescaled(m),
        }
    overall = mean([r["score"] for r in scored])
    subset_mean = mean([v["score"] for v in subsets.values() if v["score"] is not None])
    definitions = {g: list(members) for g, members in (groups or DEFAULT_GROUPS).items()}
    out: Dict[str, Any] = {
        "n": len(records),
        "scored": len(scored),
        "failures": len(records) - len(scored),
        "subsets": subsets,
        "overall": overall,
        "overall_rescaled": _rescaled(overall),
        "subset_mean": subset_mean,
        "subset_mean_rescaled": _rescaled(subset_mean),
        "groups": {},
        "groups_rescaled": {},
        "group_definitions": definitions,
    }
    for g, members in definitions.items():
        means = [subsets[m]["score"] for m in members if m in subsets and subsets[m]["score"] is not None]
        # a group with a member subset that was not scored has no score (a mean of fewer subsets is
        # another group)
        out["groups"][g] = mean(means) if len(means) == len(members) else None
        out["groups_rescaled"][g] = _rescaled(out["groups"][g])
    return out


def headline(name: str, summary: Dict[str, Any]) -> Dict[str, Optional[float]]:
    prefix = "" if name == KIND else f"{name}:"
    return {f"{prefix}{g}": v for g, v in summary.get("groups", {}).items()}


def groups_used(bcfg: Optional[BenchmarkConfig] = None) -> Dict[str, List[str]]:
    """The groups a run reports: the benchmark config's own, else the fitted DEFAULT_GROUPS (also for an
    entry built without HelloBench's options, e.g. a plain BenchmarkConfig(kind="hellobench"))."""
    own = dict(bcfg.groups) if isinstance(bcfg, HelloBenchConfig) else {}
    return {g: list(m) for g, m in (own or DEFAULT_GROUPS).items()}


def summarize(records: List[Dict[str, Any]], bcfg: Optional[BenchmarkConfig] = None) -> Dict[str, Any]:
    return aggregate(records, groups_used(bcfg))


def headline_keys(name: str, bcfg: BenchmarkConfig) -> List[str]:
    return list(headline(name, {"groups": {g: None for g in groups_used(bcfg)}}))


def breakdowns(summary: Dict[str, Any]) -> List[Breakdown]:
    return [Breakdown("subsets", "subsets", {k: v.get("score") for k, v in (summary.get("subsets") or {}).items()})]


def detail_markdown(s: Dict[str, Any]) -> str:
    defs = s.get("group_definitions", {})
    rescaled = s.get("groups_rescaled", {})
    rows = [[k, v["n"], v["scored"], v["score"], v.get("rescaled")] for k, v in s["subsets"].items()]
    rows += [[f"{g} (group)", "", "", v, rescaled.get(g)] for g, v in s["groups"].items()]
    if "subset_mean" in s:
        rows += [["overall: mean of subset means", "", "", s["subset_mean"], s.get("subset_mean_rescaled")]]
    rows += [["pooled over samples", s["n"], s["scored"], s["overall"], s["overall_rescaled"]]]
    text = markdown_table(["subset", "n", "scored", "score", "rescaled (x−75)·4"], rows)
    text += "\nThe overall score is HelloBench's own (results/scripts/compute.py): the mean of the subset means.\n"
    if defs:
        text += "\n".join(f"{g} = mean of the subset means of {', '.join(m)} ({GROUP_NOTE})." for g, m in defs.items())
        text += "\n"
    return text


def column_definitions(entry: Dict[str, Any]) -> Dict[str, str]:
    """Headline column -> what it pools, for each group of this entry (an older summary without
    definitions: none)."""
    out: Dict[str, str] = {}
    for column in entry.get("headline", {}):
        group = column.split(":", 1)[-1]
        members = entry["summary"].get("group_definitions", {}).get(group)
        if members is not None:
            out[column] = f"mean of the HelloBench subset means of {', '.join(members)} ({GROUP_NOTE})"
    return out

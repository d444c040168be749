"""LongBench-Write (THUDM/LongWriter): length score S_l and judged quality S_q, as the authors compute them.

S_l compares the produced length l with the required length r: above it, 100·max(0, 1 − (l/r − 1)/3);
at or below it, 100·max(0, 1 − (r/l − 1)/2). Length counts CJK characters plus English words. The
judge gives six dimensions 1–5; each dimension's mean m becomes (m − 1)·25 and S_q is their mean.
S = (S_l + S_q) / 2, overall and per required-length bucket.

The judge is asked as LongWriter's evaluation/eval_quality.py asks GPT-4o (prompt evaluation/judge.txt,
here in our own words): one user message, no system prompt; maximal strictness; for each dimension
its anchors from 5 down to 1; the request and response inside <User Request> / <Response> tags; a
short analysis first, then the scores, as one JSON object {"Analysis": ..., "Relevance": ..., ...};
length left out of account; one integer 1–5 per dimension. Sampled at temperature 0.5 with up to
1024 reply tokens (eval_quality.py:18).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from deepwriter.config.eval import BenchmarkConfig
from deepwriter.core.badinput import Skipped
from deepwriter.eval.benchmarks.base import (
    BenchmarkDataError,
    Breakdown,
    Item,
    JudgeOutcome,
    JudgeSettings,
    JudgeTask,
    Slot,
    answer_for_judge,
    canonical_parser,
    data_file,
    judge_messages,
    markdown_table,
    mean,
    read_jsonl,
    require,
    skip_or_raise,
)

KIND = "longbench_write"
PUBLISHED_ITEMS = (120, "LongWriter paper (arXiv:2408.07055): LongBench-Write has 120 prompts")
JUDGE_CALLS_PER_ITEM = (1, "deepwriter.eval.benchmarks.longbench_write: one judge task per item")
SOURCE_URLS = {
    "longbench_write.jsonl": "https://raw.githubusercontent.com/THUDM/LongWriter/main/evaluation/longbench_write.jsonl"
}
DIMENSIONS = ("relevance", "accuracy", "coherence", "clarity", "breadth_and_depth", "reading_experience")
SLOTS = [Slot(d, (1.0, 2.0, 3.0, 4.0, 5.0)) for d in DIMENSIONS]
# The reply's JSON keys, as the reference names them (our parser reads "Breadth and Depth" as breadth_and_depth)
REPLY_KEYS = ("Relevance", "Accuracy", "Coherence", "Clarity", "Breadth and Depth", "Reading Experience")

# eval_quality.py:18 get_response_gpt4(temperature=0.5, max_new_tokens=1024); :26-28 one user message;
# no top_p and no seed are sent (the API's top_p default is 1; the seed falls back to eval.judge.seed).
REFERENCE_JUDGE = JudgeSettings(style="reference", temperature=0.5, top_p=1.0, seed=None, max_new_tokens=1024)
STYLES = ("reference",)
BUCKETS = (("<500", 0, 500), ("500-2k", 500, 2000), ("2k-4k", 2000, 4000), (">=4k", 4000, float("inf")))

_CJK = re.compile(r"[\u4e00-\u9fff]")
_EN_WORD = re.compile(r"\b[a-zA-Z]+\b")


def count_length(text: str) -> int:
    """CJK characters plus English words (digits and punctuation do not count)."""
    return len(_CJK.findall(text)) + len(_EN_WORD.findall(text))


def length_score(required: float, produced: float) -> float:
    if required <= 0:
        raise ValueError(f"required length must be positive, got {required}")
    if produced <= 0:
        return 0.0  # nothing written: the (r/l) branch goes to 0 in the limit
    if produced > required:
        return 100.0 * max(0.0, 1.0 - (produced / required - 1.0) / 3.0)
    return 100.0 * max(0.0, 1.0 - (required / produced - 1.0) / 2.0)


def quality_score(dimension_means: Dict[str, float]) -> float:
    """Mean over dimensions of (mean 1–5 score − 1)·25; every dimension must be present."""
    missing = [d for d in DIMENSIONS if d not in dimension_means]
    if missing:
        raise ValueError(f"missing quality dimensions: {missing}")
    return sum((dimension_means[d] - 1.0) * 25.0 for d in DIMENSIONS) / len(DIMENSIONS)


def parse_required_length(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise BenchmarkDataError(f"{where}: field 'length': expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        n = int(value)
    else:
        m = re.fullmatch(r"\s*(\d+)\s*", str(value))
        if not m:
            raise BenchmarkDataError(f"{where}: field 'length': expected a whole number, got {value!r}")
        n = int(m.group(1))
    if n <= 0:
        raise BenchmarkDataError(f"{where}: field 'length': must be positive, got {value!r}")
    return n


def load(
    name: str, path: Optional[str], data_dir: Path, subsets: List[str], skipped: Optional[List[Skipped]] = None
) -> List[Item]:
    f = data_file(path, data_dir, KIND, SOURCE_URLS, "longbench_write.jsonl", "longbench_write.jsonl")
    items = []
    for lineno, rec in read_jsonl(f, skipped):
        with skip_or_raise(skipped):
            where = f"{f}:{lineno}"
            prompt = require(rec, "prompt", where)
            length = parse_required_length(require(rec, "length", where, kind=object), where)
            item_id = str(rec.get("id", f"{lineno - 1:04d}"))
            items.append(Item(name, item_id, prompt, {"type": rec.get("type", ""), "length": length}))
    return items


# Our wording of evaluation/judge.txt: same order, anchors (5 down to 1), tags and JSON shape.
_ANCHORS = (
    (
        "Relevance",
        "from content squarely on topic and fully usable for what the user asked, down to content that "
        "is off topic or of no use for it.",
    ),
    (
        "Accuracy",
        "from content that is entirely correct, without factual mistakes or misleading statements, down "
        "to content full of errors and seriously misleading.",
    ),
    (
        "Coherence",
        "from a clear structure whose parts follow one another logically and smoothly, down to a "
        "disordered structure with no coherence at all.",
    ),
    (
        "Clarity",
        "from plain, detailed language that is easy to follow, down to muddled wording with hardly any detail.",
    ),
    (
        "Breadth and Depth",
        "from content that is both wide-ranging and deep and carries a great deal of "
        "information, down to content badly lacking in breadth and depth, with hardly any information.",
    ),
    (
        "Reading Experience",
        "from an excellent read, engaging and easy to follow, down to a very poor read, dull and hard to follow.",
    ),
)


def judge_prompt(request: str, response: str) -> str:
    anchors = "\n\n".join(f"{i}. {name}: {text}" for i, (name, text) in enumerate(_ANCHORS, 1))
    shape = "{" + ", ".join(f'"{k}": ...' for k in ("Analysis",) + REPLY_KEYS) + "}"
    return (
        "You are a specialist in judging the quality of written text. Assess how well an AI assistant's reply "
        "serves a user's writing request, and be as strict in your judgment as you possibly can.\n\n"
        "Score the reply on the six dimensions below, each from 1 to 5. For every dimension the description runs "
        "from what deserves a 5 down to what deserves a 1:\n\n"
        f"{anchors}\n\n"
        "Using these standards, assess the reply below to the user's request.\n\n"
        f"<User Request>\n\n{request}\n\n</User Request>\n\n"
        f"<Response>\n\n{response}\n\n</Response>\n\n"
        "Now give your assessment of the reply. Start with a short analysis of its quality, and after that give "
        "your overall judgment with a score for each dimension. Your output has to keep exactly to this JSON "
        f"shape: {shape}. Do not take into account whether the reply reaches the length the user asked for. "
        "Give exactly one integer between 1 and 5 for each dimension."
    )


def judge_tasks(item: Item, answer: str, settings: Optional[JudgeSettings] = None) -> List[JudgeTask]:
    """One task scoring the six dimensions. Without settings: the reference prompt, and the Judge's
    own sampling (eval.judge)."""
    use = settings or REFERENCE_JUDGE
    user = judge_prompt(item.prompt, answer_for_judge(answer, use))
    keys = ", ".join(f'"{k}"' for k in ("Analysis",) + REPLY_KEYS)
    return [
        JudgeTask(
            item.id,
            "quality",
            judge_messages(use, user),
            list(SLOTS),
            parser=canonical_parser(SLOTS),
            format_hint=f"one JSON object with the keys {keys}: a short analysis, then one integer 1-5 per dimension",
            sampling=settings.sampling if settings else None,
        )
    ]


def score_item(item: Item, answer: str, outcomes: Dict[str, JudgeOutcome]) -> Dict[str, Any]:
    required = item.meta["length"]
    produced = count_length(answer)
    rec: Dict[str, Any] = {
        "required_length": required,
        "produced_length": produced,
        "S_l": length_score(required, produced),
        "bucket": bucket_of(required),
    }
    out = outcomes.get("quality")
    if out is not None and out.ok:
        rec["dimensions"] = {d: out.values[d] for d in DIMENSIONS}
        rec["S_q"] = quality_score(rec["dimensions"])
        rec["reasons"] = out.reasons
    else:
        rec["failure"] = (out.error if out is not None else "not judged") or "judge failed"
    return rec


def bucket_of(required: int) -> str:
    for label, lo, hi in BUCKETS:
        if lo <= required < hi:
            return label
    raise AssertionError(required)


def _scores(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    judged = [r for r in records if "dimensions" in r]
    s_l = mean([r["S_l"] for r in records])
    dim_means = {d: mean([r["dimensions"][d] for r in judged]) for d in DIMENSIONS} if judged else {}
    s_q = quality_score(dim_means) if judged else None
    out = {
        "n": len(records),
        "judged": len(judged),
        "S_l": s_l,
        "S_q": s_q,
        "S": (s_l + s_q) / 2 if s_l is not None and s_q is not None else None,
    }
    if judged:
        out["dimensions"] = {d: (m - 1.0) * 25.0 for d, m in dim_means.items()}
    return out


def aggregate(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    summary = _scores(records)
    summary["failures"] = sum(1 for r in records if "failure" in r)
    summary["buckets"] = {
        label: _scores([r for r in records if r["bucket"] == label])
        for label, _, _ in BUCKETS
        if any(r["bucket"] == label for r in records)
    }
    return summary


def headline(name: str, summary: Dict[str, Any]) -> Dict[str, Optional[float]]:
    return {"LB" if name == KIND else name: summary.get("S")}


def summarize(records: List[Dict[str, Any]], bcfg: Optional[BenchmarkConfig] = None) -> Dict[str, Any]:
    return aggregate(records)


def headline_keys(name: str, bcfg: BenchmarkConfig) -> List[str]:
    return list(headline(name, {"S": None}))


def breakdowns(summary: Dict[str, Any]) -> List[Breakdown]:
    buckets = summary.get("buckets") or {}
    return [
        Breakdown("buckets", "S by required length", {b: v.get("S") for b, v in buckets.items()}),
        Breakdown("dimensions", "quality dimensions (0–100)", dict(summary.get("dimensions") or {}), plotted=False),
    ]


def detail_markdown(s: Dict[str, Any]) -> str:
    rows = [["all", s["n"], s["judged"], s["S_l"], s["S_q"], s["S"]]]
    rows += [[b, v["n"], v["judged"], v["S_l"], v["S_q"], v["S"]] for b, v in s["buckets"].items()]
    text = markdown_table(["required length", "n", "judged", "S_l", "S_q", "S"], rows)
    if s.get("dimensions"):
        text += "\n" + markdown_table(list(s["dimensions"]), [list(s["dimensions"].values())])
    return text


def column_definitions(entry: Dict[str, Any]) -> Dict[str, str]:
    return {}  # LB is LongBench-Write's own S

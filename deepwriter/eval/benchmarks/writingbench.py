"""WritingBench (X-PLUG/WritingBench): five query-specific criteria, each judged on its own 1–10 rubric.

Each criterion is one judge call answering {"score": 1..10, "reason": "..."}; an unparseable or
out-of-range reply is asked again. A query scores the mean of its five criteria; `overall` is the mean
over queries, and the six domains (A–F, as in the REER paper) and the subdomains are means over their
queries, on the benchmark's 1–10 scale; the headline columns WB-A … WB-F are ×10 (0–100), as on the
WritingBench leaderboard and in the REER paper. The official aggregation (calculate_scores.py) averages
criterion scores per query and query scores per domain, which this reproduces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from deepwriter.badinput import Skipped
from deepwriter.eval.benchmarks.base import (
    BenchmarkDataError,
    Item,
    JudgeOutcome,
    JudgeTask,
    Slot,
    canonical_parser,
    data_file,
    mean,
    read_jsonl,
    require,
    skip_or_raise,
)

KIND = "writingbench"
LIMIT_SPREAD_OVER = "domain1"  # `limit` takes items in turns from each domain
SOURCE_URLS = {
    "benchmark_all.jsonl": "https://raw.githubusercontent.com/X-PLUG/WritingBench/main/benchmark_query/benchmark_all.jsonl"
}
DOMAINS = {
    "A": "Academic & Engineering",
    "B": "Finance & Business",
    "C": "Politics & Law",
    "D": "Literature & Arts",
    "E": "Education",
    "F": "Advertising & Marketing",
}
LETTER = {v: k for k, v in DOMAINS.items()}
SLOT = Slot("score", tuple(float(i) for i in range(1, 11)))
RUBRIC_BANDS = ("1-2", "3-4", "5-6", "7-8", "9-10")


def load(
    name: str, path: Optional[str], data_dir: Path, subsets: List[str], skipped: Optional[List[Skipped]] = None
) -> List[Item]:
    f = data_file(path, data_dir, KIND, SOURCE_URLS, "length_subset.jsonl", "benchmark_all.jsonl")
    items = []
    for lineno, rec in read_jsonl(f, skipped):
        with skip_or_raise(skipped):
            where = f"{f}:{lineno}"
            index = require(rec, "index", where, kind=object)
            domain = require(rec, "domain1", where)
            if domain not in LETTER:
                raise BenchmarkDataError(
                    f"{where}: field 'domain1': unknown domain {domain!r}; expected one of {sorted(LETTER)}"
                )
            checklist = require(rec, "checklist", where, kind=list)
            for i, c in enumerate(checklist):
                if not isinstance(c, dict) or not c.get("name") or not c.get("criteria_description"):
                    raise BenchmarkDataError(f"{where}: field 'checklist[{i}]': needs name and criteria_description")
            items.append(
                Item(
                    name,
                    str(index),
                    require(rec, "query", where),
                    {"domain1": domain, "domain2": rec.get("domain2", ""), "checklist": checklist},
                )
            )
    return items


def judge_tasks(item: Item, answer: str) -> List[JudgeTask]:
    tasks = []
    for i, crit in enumerate(item.meta["checklist"]):
        bands = "\n".join(f"- {b}: {crit[b]}" for b in RUBRIC_BANDS if crit.get(b))
        user = (
            "You are a strict expert evaluator of writing. Score the response to the writing query on ONE criterion, "
            "from 1 to 10, using the rubric.\n\n"
            f"[Query]\n{item.prompt}\n[End of query]\n\n[Response]\n{answer}\n[End of response]\n\n"
            f"[Criterion] {crit['name']}: {crit['criteria_description']}\n[Rubric]\n{bands}\n\n"
            'Reply with one JSON object {"score": <integer 1-10>, "reason": "<why>"} and nothing else.'
        )
        tasks.append(
            JudgeTask(
                item.id,
                f"criterion-{i}",
                [{"role": "user", "content": user}],
                [SLOT],
                parser=canonical_parser([SLOT]),
                format_hint='one JSON object {"score": <integer 1-10>, "reason": "..."}',
            )
        )
    return tasks


def score_item(item: Item, answer: str, outcomes: Dict[str, JudgeOutcome]) -> Dict[str, Any]:
    rec: Dict[str, Any] = {"domain1": item.meta["domain1"], "domain2": item.meta["domain2"], "criteria": []}
    failures = []
    for i, crit in enumerate(item.meta["checklist"]):
        out = outcomes.get(f"criterion-{i}")
        if out is not None and out.ok:
            rec["criteria"].append(
                {"name": crit["name"], "score": out.values["score"], "reason": out.reasons.get("score", "")}
            )
        else:
            failures.append(f"{crit['name']}: {(out.error if out else 'not judged') or 'judge failed'}")
    if failures:
        rec["failure"] = "; ".join(failures)
    else:
        rec["score"] = mean([c["score"] for c in rec["criteria"]])
    return rec


def aggregate(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    scored = [r for r in records if "score" in r]
    domains = {}
    for letter, dname in DOMAINS.items():
        vals = [r["score"] for r in scored if r["domain1"] == dname]
        if any(r["domain1"] == dname for r in records):
            domains[letter] = {"name": dname, "n": len(vals), "score": mean(vals)}
    subdomains: Dict[str, Dict[str, Any]] = {}
    for r in scored:
        key = f"{r['domain1']} / {r['domain2']}"
        subdomains.setdefault(key, {"values": []})["values"].append(r["score"])
    return {
        "n": len(records),
        "scored": len(scored),
        "failures": len(records) - len(scored),
        "overall": mean([r["score"] for r in scored]),
        "domains": domains,
        "subdomains": {k: {"n": len(v["values"]), "score": mean(v["values"])} for k, v in sorted(subdomains.items())},
    }


def headline(name: str, summary: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """Domain scores ×10 (0–100), the scale of the WritingBench leaderboard and the REER paper."""
    prefix = "WB" if name == KIND else name
    return {
        f"{prefix}-{letter}": d["score"] * 10 if d["score"] is not None else None
        for letter, d in summary.get("domains", {}).items()
    }

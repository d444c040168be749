"""WritingBench (X-PLUG/WritingBench): five query-specific criteria, each judged on its own 1–10 rubric.

Each criterion is one judge call answering {"score": 1..10, "reason": "..."}; an unparseable or
out-of-range reply is asked again. A query scores the mean of its criteria; the six domains (A–F, as
in the REER paper) and the subdomains are means over their queries, and `overall` pools every
criterion score (`query_mean`, the mean over queries, beside it), on the benchmark's 1–10 scale; the
headline columns WB-A … WB-F are ×10 (0–100), as on the WritingBench leaderboard and in the REER
paper. This is the official aggregation (calculate_scores.py). The judge reads the model's output as
evaluate_benchmark.py cuts it: after the first "</think>" and blank line (answer_from_output).

The judge is asked as evaluate_benchmark.py asks its evaluator (our wording of prompt.py): a system
prompt, then the generic 1–10 scoring rules, the rules to quote the response, be very strict and not
swayed by format or length, catch fabricated content and answers that are only an introduction, the
JSON output format, the criterion (with its own rubric), query and response in ``` blocks, the
criterion again and the output format again. Sampled at temperature 1.0, top_p 0.95, up to 2048 reply
tokens (evaluator/llm.py and evaluator/critic.py). Style "critic" is the shorter prompt the
fine-tuned critic model (WritingBench-Critic-Model-Qwen-7B) was released with (prompt.py at commit
1e220d2); serve that model as models.judge to use it.
"""

from __future__ import annotations

import json
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

KIND = "writingbench"
# Items are resampled within their domain for intervals (deepwriter.eval.stats): each headline column is
# one domain's mean.
STRATUM = "domain1"
PUBLISHED_ITEMS = (1239, "WritingBench paper (arXiv:2503.05244): 1,239 queries")
JUDGE_CALLS_PER_ITEM = (5, "WritingBench: 5 instance-specific criteria, one judge task each")
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

# Our wording of prompt.py's evaluate_system (prompt.py:1-3), sent by both evaluators.
SYSTEM_PROMPT = "You are a seasoned evaluator, well practised in judging responses to a given query."
# evaluator/llm.py:14-18 and evaluator/critic.py:14-18: top_p 0.95, temperature 1.0, max 2048 tokens;
# evaluate_benchmark.py:147-154 sends evaluate_system as the system message. No seed is sent.
REFERENCE_JUDGE = JudgeSettings(
    style="reference", temperature=1.0, top_p=0.95, seed=None, max_new_tokens=2048, system=SYSTEM_PROMPT
)
STYLES = ("reference", "critic")


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


# Our wording of prompt.py's evaluate_prompt (prompt.py:5-57).
_RULES = (
    "** Scoring Rules **\n\n"
    '"1-2": "Low score: serious shortcomings and major problems that keep the response from doing its job.",\n'
    '"3-4": "Below-average score: falls short in noticeable ways that weaken its overall effect and call for '
    'improvement.",\n'
    '"5-6": "Average score: adequate but not outstanding; a baseline that covers the essential requirements. '
    'Most models can reach this score.",\n'
    '"7-8": "Above-average score: a strong, competent piece of work that still needs small refinements to be '
    'excellent.",\n'
    '"9-10": "High score: outstanding; every aspect handled as well as it could be, highly effective and of high '
    'quality, without any flaw."\n\n'
    "-Back every score with reasons that point to specific strengths or weaknesses of the Response. Quote the "
    "exact passages that justify it, so that each reason is concrete, matches what the criteria require, and "
    "shows the main gaps between the Response and an ideal answer.\n\n"
    "-Be very STRICT and do not let format or length sway you; look past how the Response appears on the surface "
    "and evaluate it in depth.\n\n"
    "-Examine carefully whether the Response only seems to have substance: content that looks solid but is in "
    "fact wholly invented.\n\n"
    "-A model sometimes writes only an introduction or an overview and never actually does what the query asks; "
    "count such a Response as a failure. Watch carefully for this.\n\n"
    "-Score range: give one integer from 1 to 10"
)
_JSON_REPLY = (
    "```json\n{\n"
    '    "score": an integer from 1 to 10,\n'
    '    "reason": "A specific, detailed justification of the score that cites the text."\n'
    "}"
)
_OUTPUT = (
    "** Output format **\n"
    '(Leave out characters that would break JSON parsing, and do not use " inside the reason)\n'
    "Return your result in the JSON format below, and output only that JSON, nothing else:\n" + _JSON_REPLY
)


def _blocks(criterion: str, query: str, response: str) -> str:
    return f"** Criteria **\n```{criterion}```\n\n** Query **\n```{query}```\n\n** Response **\n```{response}```\n\n"


def judge_prompt(query: str, response: str, criterion: Dict[str, Any], style: str = "reference") -> str:
    """The user message for one criterion. The criterion is shown whole (name, description and its
    own 1–10 rubric) as JSON, the reference shows the same record as a Python dict."""
    crit = json.dumps(criterion, ensure_ascii=False)
    if style == "critic":  # prompt.py at 1e220d2, the prompt the critic model was released with
        return (
            "Evaluate the Response against the Query and the criteria given.\n\n"
            + _blocks(crit, query, response)
            + f"Base your evaluation on the criteria:\n\n```{crit}```\n\n"
            "Give reasons for each score, saying where and why the Response shows strengths or shortcomings, and "
            "cite particular passages or elements of the text in support.\n"
            "Make every reason concrete, with explicit references to the text that bear on what the criteria "
            "require.\n\n"
            "Score range: give one integer from 1 to 10\n\n"
            "** Output format **\n"
            "Return your result in the JSON format below, and output only this JSON, nothing else:\n"
            + _JSON_REPLY
            + "\n```"
        )
    # The first output block leaves its ```json fence open, as the reference's does.
    return (
        "Evaluate the Response against the Query and the Criteria given, applying the Scoring Rules.\n\n"
        f"{_RULES}\n\n{_OUTPUT}\n\n"
        + _blocks(crit, query, response)
        + f"Give your evaluation on the basis of the criteria, repeated here:\n\n```{crit}```\n\n{_OUTPUT}\n```"
    )


def judge_tasks(item: Item, answer: str, settings: Optional[JudgeSettings] = None) -> List[JudgeTask]:
    """One task per criterion. Without settings: the reference prompt and system prompt, and the
    Judge's own sampling (eval.judge)."""
    use = settings or REFERENCE_JUDGE
    shown = answer_for_judge(answer, use)
    return [
        JudgeTask(
            item.id,
            f"criterion-{i}",
            judge_messages(use, judge_prompt(item.prompt, shown, crit, use.style)),
            [SLOT],
            parser=canonical_parser([SLOT]),
            format_hint='one JSON object {"score": <integer 1-10>, "reason": "..."}',
            sampling=settings.sampling if settings else None,
        )
        for i, crit in enumerate(item.meta["checklist"])
    ]


THINK_CUT = "</think>\n\n"


def answer_from_output(output: str) -> str:
    """The response as WritingBench's evaluate_benchmark.py shows it to the judge: the text after the
    first "</think>" followed by a blank line, or the whole output when there is none (a thinking
    block never closed, or closed without the blank line, is judged with the rest)."""
    at = output.find(THINK_CUT)
    return output[at + len(THINK_CUT) :] if at >= 0 else output


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
        # calculate_scores.py's Overall pools every criterion score of every scored query (the mean of
        # query means equals it only when every query has the same number of criteria)
        "overall": mean([c["score"] for r in scored for c in r.get("criteria", [])]),
        "query_mean": mean([r["score"] for r in scored]),
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


def summarize(records: List[Dict[str, Any]], bcfg: Optional[BenchmarkConfig] = None) -> Dict[str, Any]:
    return aggregate(records)


def headline_keys(name: str, bcfg: BenchmarkConfig) -> List[str]:
    return list(headline(name, {"domains": {letter: {"score": None} for letter in DOMAINS}}))


def breakdowns(summary: Dict[str, Any]) -> List[Breakdown]:
    domains = summary.get("domains") or {}
    return [
        Breakdown("domains", "domains (1–10)", {f"{k} {v.get('name', '')}": v.get("score") for k, v in domains.items()})
    ]


def detail_markdown(s: Dict[str, Any]) -> str:
    rows = [[f"{k} {v['name']}", v["n"], v["score"]] for k, v in s["domains"].items()]
    rows += [["overall", s["scored"], s["overall"]]]
    subdomains = [[k, v["n"], v["score"]] for k, v in s["subdomains"].items()]
    return (
        markdown_table(["domain", "scored", "score (1–10)"], rows)
        + "\n"
        + markdown_table(["subdomain", "n", "score"], subdomains)
    )


def column_definitions(entry: Dict[str, Any]) -> Dict[str, str]:
    return {}  # WB-A … WB-F are WritingBench's own domains

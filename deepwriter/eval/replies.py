"""Reading a judge's free-JSON reply: the first JSON object or list in it, repaired where judges
commonly get it wrong, and checked against each slot's allowed values."""

from __future__ import annotations

import ast
import json
import re
from typing import Any, Dict, Tuple

from deepwriter.eval.benchmarks.base import JudgeTask, canonical_parser

_FENCE = re.compile(r"```(?:json|python)?", re.IGNORECASE)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def extract_json(text: str) -> Any:
    """The first JSON object or list in a reply, repairing what judges commonly get wrong (code
    fences, text around it, trailing commas, Python literals with single quotes)."""
    cleaned = _FENCE.sub("", text).strip()
    candidates = [cleaned]
    starts = [i for i in (cleaned.find("{"), cleaned.find("[")) if i >= 0]
    if starts:
        start = min(starts)
        close = "}" if cleaned[start] == "{" else "]"
        end = cleaned.rfind(close)
        if end > start:
            candidates.append(cleaned[start : end + 1])
    for cand in candidates:
        for attempt in (cand, _TRAILING_COMMA.sub(r"\1", cand)):
            try:
                return json.loads(attempt)
            except json.JSONDecodeError:
                pass
            try:
                value = ast.literal_eval(attempt)
                if isinstance(value, (dict, list)):
                    return value
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                pass
    raise ValueError("no JSON object or list found in the reply")


def read_reply(task: JudgeTask, text: str, parser=None) -> Tuple[Dict[str, float], Dict[str, str]]:
    """Allowed values for every slot of the task, or ValueError naming what is wrong."""
    obj = extract_json(text)
    raw, reasons = (parser or task.parser or canonical_parser(task.slots))(obj)
    values, problems = {}, []
    for slot in task.slots:
        if slot.name not in raw or raw[slot.name] is None:
            problems.append(f"{slot.name}: missing")
            continue
        try:
            values[slot.name] = slot.coerce(raw[slot.name])
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ValueError("; ".join(problems))
    return values, reasons

"""Reading a judge's free-JSON reply: the JSON objects or lists in it, repaired where judges commonly
get them wrong, and checked against each slot's allowed values.

A reply may be the bare JSON the benchmark asks for, JSON in a code fence, or prose around it, such
as an analysis written before the verdict (LongBench-Write asks for the analysis first) that may itself
quote brackets or small JSON fragments. So every top-level JSON value in the reply is a candidate, and
the first one that gives every slot an allowed value is the verdict."""

from __future__ import annotations

import ast
import json
import re
from typing import Any, Dict, Iterator, List, Tuple

from deepwriter.eval.benchmarks.base import JudgeTask, canonical_parser

_FENCE = re.compile(r"```(?:json|python)?", re.IGNORECASE)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_CLOSE = {"{": "}", "[": "]"}


def _load(text: str) -> Any:
    """`text` as JSON or as a Python literal, with trailing commas forgiven; ValueError if neither."""
    for attempt in (text, _TRAILING_COMMA.sub(r"\1", text)):
        try:
            # strict=False: raw line breaks inside strings, which judges often write, are accepted
            return json.loads(attempt, strict=False)
        except json.JSONDecodeError:
            pass
        try:
            value = ast.literal_eval(attempt)
            if isinstance(value, (dict, list)):
                return value
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            pass
    raise ValueError("not JSON")


def _span_end(text: str, start: int) -> int:
    """The index just past the bracket that closes the one at `start` (strings in double or single
    quotes skipped), or -1 when it never closes."""
    stack, quote, i = [], "", start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'" and (ch == '"' or text[i - 1] in "{[,:" or text[i - 1].isspace()):  # not "it's"
            quote = ch
        elif ch in _CLOSE:
            stack.append(_CLOSE[ch])
        elif ch in "}]":
            if not stack or stack.pop() != ch:
                return -1
            if not stack:
                return i + 1
        i += 1
    return -1


def json_candidates(text: str) -> Iterator[Any]:
    """Every JSON value the reply may hold, most likely first: the whole reply (code fences removed),
    then each top-level bracketed span that parses, in reply order."""
    cleaned = _FENCE.sub("", text).strip()
    try:
        whole = _load(cleaned)
        if isinstance(whole, (dict, list)):
            yield whole
    except ValueError:
        pass
    i = 0
    while i < len(cleaned):
        if cleaned[i] in _CLOSE:
            end = _span_end(cleaned, i)
            if end > 0:
                try:
                    value = _load(cleaned[i:end])
                except ValueError:
                    value = None
                if isinstance(value, (dict, list)):
                    yield value
                    i = end  # what is inside a parsed value is not a candidate of its own
                    continue
        i += 1


def extract_json(text: str) -> Any:
    """The first JSON object or list in a reply, repairing what judges commonly get wrong (code
    fences, text around it, trailing commas, Python literals with single quotes)."""
    for value in json_candidates(text):
        return value
    raise ValueError("no JSON object or list found in the reply")


def _read_one(task: JudgeTask, obj: Any, parser) -> Tuple[Dict[str, float], Dict[str, str], List[str]]:
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
    return values, reasons, problems


def read_reply(task: JudgeTask, text: str, parser=None) -> Tuple[Dict[str, float], Dict[str, str]]:
    """Allowed values for every slot of the task, from the first JSON value in the reply that gives
    them all; or ValueError naming what is wrong with the candidate that came closest."""
    best: Tuple[int, str] = (-1, "no JSON object or list found in the reply")
    for obj in json_candidates(text):
        try:
            values, reasons, problems = _read_one(task, obj, parser)
        except ValueError as exc:  # the wrong shape altogether
            best = max(best, (0, str(exc)), key=lambda b: b[0])
            continue
        if not problems:
            return values, reasons
        if len(values) + 1 >= best[0]:  # the later candidate wins ties: a verdict usually comes last
            best = (len(values) + 1, "; ".join(problems))
    raise ValueError(best[1])

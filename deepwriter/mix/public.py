"""Public reasoning data (OpenThoughts-style) mapped into the mix's (request, thinking, answer) form.

Two shapes: separate fields (`fields: {x: question, think: reasoning, y: answer}`), or ShareGPT-style
turns (`fields: {conversations: conversations}`) whose assistant turn holds the thinking and the
answer inside `<|begin_of_thought|>…<|end_of_thought|>` / `<|begin_of_solution|>…<|end_of_solution|>`
or `<think>…</think>` blocks.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

from deepwriter.config.data import SourceConfig
from deepwriter.core import think
from deepwriter.pairs.read import BadRecord, Skipped, check_text, iter_rows, map_row, reject, source_label

_THOUGHT = re.compile(r"<\|begin_of_thought\|>(.*?)<\|end_of_thought\|>", re.S)
_SOLUTION = re.compile(r"<\|begin_of_solution\|>(.*?)(?:<\|end_of_solution\|>|$)", re.S)


def public_parts(text: str) -> Tuple[str, str]:
    """(thinking, answer) of a public assistant turn in either format; raises BadRecord when there is no
    thinking block. `<think>` turns are read by deepwriter.core.think, the one format of this project."""
    m = _THOUGHT.search(text)
    if m:
        sol = _SOLUTION.search(text, m.end())
        answer = sol.group(1) if sol else text[m.end() :]
        return m.group(1).strip(), answer.strip()
    if think.CLOSE in text:
        parts = think.split(text)
        return parts.thinking, parts.answer
    raise BadRecord("conversations", "assistant turn has no thinking block (<|begin_of_thought|> or <think>)")


def _from_conversations(turns: Any) -> Dict[str, str]:
    if not isinstance(turns, list) or not turns:
        raise BadRecord("conversations", f"expected a non-empty list of turns, got {type(turns).__name__}")
    user = assistant = None
    for t in turns:
        if not isinstance(t, dict):
            raise BadRecord("conversations", "a turn is not an object")
        role = t.get("from", t.get("role"))
        content = t.get("value", t.get("content"))
        if role in ("user", "human") and user is None:
            user = content
        elif role in ("assistant", "gpt") and assistant is None:
            assistant = content
    x = check_text("x", user, required=True)
    a = check_text("y", assistant, required=True)
    thinking, y = public_parts(a)
    if not thinking or not y:
        raise BadRecord("conversations", "empty thinking or answer in the assistant turn")
    return {"x": x, "think": thinking, "y": y}


def load_public(
    src: SourceConfig, strict: bool, key: Optional[str] = None
) -> Tuple[List[Dict[str, Any]], List[Skipped]]:
    """Records {id, x, think, y, category, source, where} of a public reasoning source (`key`: its
    config key, data.public, named in the remedy of a mapping error)."""
    label = source_label(src)
    out: List[Dict[str, Any]] = []
    skipped: List[Skipped] = []
    seen: Dict[str, str] = {}
    for where, row in iter_rows(src, key):
        try:
            if isinstance(row, BadRecord):
                raise row
            if "conversations" in src.fields:
                rest = {k: v for k, v in src.fields.items() if k != "conversations"}
                rec = map_row(row, rest, required=(), key=key)
                theirs = src.fields["conversations"]
                if theirs not in row:
                    raise BadRecord("conversations", f"mapped to {theirs!r}, which the record lacks")
                rec.update(_from_conversations(row[theirs]))
            else:
                rec = map_row(row, src.fields, required=("x", "think", "y"), key=key)
            rid = rec.get("id") or f"{label}-{len(out) + len(skipped) + 1:07d}"
            if rid in seen:
                raise BadRecord("id", f"duplicate id {rid!r} (first at {seen[rid]})")
            seen[rid] = where
        except BadRecord as bad:
            reject(where, bad.field, bad.reason, strict, skipped)
            continue
        out.append(
            {
                "id": rid,
                "x": rec["x"],
                "think": rec["think"],
                "y": rec["y"],
                "category": rec.get("category") or "reasoning",
                "source": label,
                "where": where,
            }
        )
        if src.limit is not None and len(out) >= src.limit:
            break
    return out, skipped

"""Split a text into the segments the REER search works on, by the reference's rule.

A text is cut at every blank line ("\\n\\n" and the whitespace after it); display math stays whole
(an unclosed `\\[` to the end of the text, as the reference's scan reads it).
Chunks shorter than `min_chars` are carried forward and joined to the front of the next chunk that
is long enough on its own; chunks left over at the end join the last segment. When that gives a
single segment, the text is cut at single line breaks instead.

`spans` keeps every character (the segments concatenate back to the text): it cuts y into the
scorer's head and scored rest. `split` strips each span: the trajectory's segments, which the search
rejoins with blank lines (`join`), as the reference does.
"""

from __future__ import annotations

import re
from typing import Dict, List

PARAGRAPH_SEP = "\n\n"
LINE_SEP = "\n"

# The reference keeps \[...\] whole, and an unclosed \[ keeps the rest of the text whole; $$...$$ and
# display environments are kept whole too.
_DISPLAY_MATH = re.compile(
    r"\$\$.*?\$\$"
    r"|\\\[.*?(?:\\\]|\Z)"
    r"|\\begin\{(equation|align|gather|multline|eqnarray|displaymath)(\*?)\}.*?\\end\{\1\2\}",
    re.DOTALL,
)


def _pieces(text: str, sep: str) -> List[str]:
    """Text chunks and the separator runs between them, in order; nothing is dropped."""
    math: Dict[int, int] = {m.start(): m.end() for m in _DISPLAY_MATH.finditer(text)}
    pieces: List[str] = []
    chunk_start = i = 0
    while i < len(text):
        if i in math:
            i = math[i]
        elif text.startswith(sep, i):
            pieces.append(text[chunk_start:i])
            j = i + 1
            while j < len(text) and text[j].isspace():
                j += 1
            pieces.append(text[i:j])
            i = chunk_start = j
        else:
            i += 1
    if chunk_start < len(text):
        pieces.append(text[chunk_start:])
    return pieces


def _merge(pieces: List[str], min_chars: int) -> List[str]:
    merged: List[str] = []
    carried = ""
    for piece in pieces:
        if not piece.strip() or len(piece) < min_chars:
            carried += piece
        else:
            merged.append(carried + piece)
            carried = ""
    if carried:
        if merged:
            merged[-1] += carried
        else:
            merged.append(carried)
    return merged


def spans(text: str, min_chars: int = 100) -> List[str]:
    """Segments of `text` with all their whitespace: "".join(spans(t)) == t."""
    out = _merge(_pieces(text, PARAGRAPH_SEP), min_chars)
    if len(out) <= 1:
        out = _merge(_pieces(text, LINE_SEP), min_chars)
    return out


def split(text: str, min_chars: int = 100) -> List[str]:
    """The trajectory's segments: spans without their surrounding whitespace, none empty."""
    return [s.strip() for s in spans(text, min_chars) if s.strip()]


def join(segments: List[str]) -> str:
    """A trajectory from its segments, one blank line between them (the reference's rejoin; an empty
    segment, left by an accepted empty rewrite, leaves its blank lines as there)."""
    return PARAGRAPH_SEP.join(segments)


def compose(before: List[str], middle: str, after: List[str]) -> str:
    """A candidate trajectory: the segments before the one rewritten, the rewrite, the segments after,
    as the reference puts them together (the two sides joined each on its own and attached only when
    not empty)."""
    text, head, tail = middle, join(before), join(after)
    if head:
        text = head + PARAGRAPH_SEP + text
    if tail:
        text = text + PARAGRAPH_SEP + tail
    return text

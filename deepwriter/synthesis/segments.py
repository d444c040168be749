"""Split a thinking trajectory into the segments the REER search rewrites one at a time.

Segments are paragraphs (blank-line separated; single lines when the text has no blank line).
LaTeX display blocks stay whole even when they contain blank lines, and chunks shorter than
`min_chars` are merged into the next one (the last into the previous) so that the search does not
spend steps on one-line fragments.
"""

from __future__ import annotations

import re
from typing import List, Tuple

PARAGRAPH_SEP = "\n\n"
LINE_SEP = "\n"

_DISPLAY_MATH = re.compile(
    r"\$\$.*?\$\$"
    r"|\\\[.*?\\\]"
    r"|\\begin\{(equation|align|gather|multline|eqnarray|displaymath)(\*?)\}.*?\\end\{\1\2\}",
    re.DOTALL,
)
_BLANK_LINE = re.compile(r"\n[ \t]*\n\s*")
# Private-use characters cannot occur in model text in practice; they hold the place of math blocks.
_HOLD = "\ue000{}\ue001"
_HELD = re.compile("\ue000(\\d+)\ue001")


def separator(text: str) -> str:
    """The separator `split` uses for this text (and `join` should use to rebuild it)."""
    masked, _ = _mask_math(text.strip())
    return PARAGRAPH_SEP if _BLANK_LINE.search(masked) else LINE_SEP


def _mask_math(text: str) -> Tuple[str, List[str]]:
    blocks: List[str] = []

    def hold(m: re.Match) -> str:
        blocks.append(m.group(0))
        return _HOLD.format(len(blocks) - 1)

    return _DISPLAY_MATH.sub(hold, text), blocks


def split(text: str, min_chars: int = 100) -> List[str]:
    """Segments of `text`, without their separators and surrounding whitespace."""
    masked, blocks = _mask_math(text.strip())
    if not masked:
        return []
    sep = PARAGRAPH_SEP if _BLANK_LINE.search(masked) else LINE_SEP
    raw = _BLANK_LINE.split(masked) if sep == PARAGRAPH_SEP else masked.split(LINE_SEP)
    chunks = [_HELD.sub(lambda m: blocks[int(m.group(1))], c).strip() for c in raw]
    chunks = [c for c in chunks if c]
    return _merge_short(chunks, min_chars, sep)


def _merge_short(chunks: List[str], min_chars: int, sep: str) -> List[str]:
    merged: List[str] = []
    pending = ""
    for chunk in chunks:
        pending = f"{pending}{sep}{chunk}" if pending else chunk
        if len(pending) >= min_chars:
            merged.append(pending)
            pending = ""
    if pending:
        if merged:
            merged[-1] = f"{merged[-1]}{sep}{pending}"
        else:
            merged.append(pending)
    return merged


def join(segments: List[str], sep: str = PARAGRAPH_SEP) -> str:
    return sep.join(s for s in segments if s)

"""The one `<think>` format: how thinking and answer share an assistant turn, everywhere — the
scorer's context in the search, the SFT data of the mix, the parsing of model answers in eval.

    <think>\n{thinking}\n</think>\n\n{answer}
"""

from __future__ import annotations

from typing import NamedTuple

OPEN, CLOSE = "<think>", "</think>"


def block(thinking: str) -> str:
    """The thinking block and the blank line before the answer: the start of an assistant turn."""
    return f"{OPEN}\n{thinking}\n{CLOSE}\n\n"


def turn(thinking: str, answer: str) -> str:
    """A whole assistant turn, as the student is trained to write it."""
    return block(thinking) + answer


class Parts(NamedTuple):
    thinking: str
    answer: str
    closed: bool  # False: a `<think>` was opened and never closed (the output ran out while thinking)


def split(text: str) -> Parts:
    """A model's output cut into thinking and answer. The answer is what follows the last `</think>`
    (the thinking is what precedes it, after an opening `<think>` if there is one); a `<think>` never
    closed leaves no answer; text without a thinking block is all answer."""
    if CLOSE in text:
        head, _, tail = text.rpartition(CLOSE)
        thinking = head.split(OPEN, 1)[1] if OPEN in head else head
        return Parts(thinking.strip(), tail.strip(), True)
    stripped = text.lstrip()
    if stripped.startswith(OPEN):
        return Parts(stripped[len(OPEN) :].strip(), "", False)
    return Parts("", text.strip(), True)

"""Reasons to discard a synthesized trajectory. Each rule returns a short reason code, so the stage
can count discards by reason; a kept sample has no reason.

Lengths are counted in whitespace-separated words rather than model tokens, so the same sample is
kept or discarded whatever scorer tokenizer is used (for English prose a word is ~1.3 tokens).
"""

from __future__ import annotations

from collections import Counter
from typing import Optional

from deepwriter.synthesis import prompts, segments
from deepwriter.synthesis.config import FilterConfig

EMPTY_ANSWER = "empty_answer"
UNPARSEABLE = "unparseable"
TOO_SHORT = "too_short"
SINGLE_SEGMENT = "single_segment"
LATE_REFLECTION = "late_reflection"
REPETITION = "repetition"
# A failed model call is no reason: the pair stays unfinished (search.UnfinishedPair), not discarded.
REASONS = (EMPTY_ANSWER, UNPARSEABLE, TOO_SHORT, SINGLE_SEGMENT, LATE_REFLECTION, REPETITION)


def top_trigram_share(text: str, top: int = 3) -> float:
    """Share of all word 3-grams taken by the `top` most frequent ones (0 for under 3 words)."""
    words = text.lower().split()
    grams = list(zip(words, words[1:], words[2:]))
    if not grams:
        return 0.0
    return sum(c for _, c in Counter(grams).most_common(top)) / len(grams)


def has_late_reflection(text: str, fraction: float) -> bool:
    """A thinking phrase starting in the last `fraction` of the text (by characters): a plan that
    still hesitates as it ends has not settled."""
    text = text.strip()
    cutoff = (1.0 - fraction) * len(text)
    return any(pos >= cutoff for pos in prompts.find_reflections(text))


def discard_reason(z: Optional[str], y: str, cfg: FilterConfig, min_segment_chars: int) -> Optional[str]:
    """The first rule that `z` (None: the generator's output could not be parsed) breaks, or None."""
    if not y.strip():
        return EMPTY_ANSWER
    if z is None or not z.strip():
        return UNPARSEABLE
    if len(z.split()) < cfg.min_think_tokens:
        return TOO_SHORT
    if len(segments.split(z, min_segment_chars)) < 2:
        return SINGLE_SEGMENT
    if has_late_reflection(z, cfg.late_reflection_fraction):
        return LATE_REFLECTION
    if top_trigram_share(z) > cfg.max_top3_trigram_share:
        return REPETITION
    return None

"""Reasons to discard a synthesized trajectory, in two sets counted apart. Each rule returns a short
reason code, so the stage can count discards by reason; a kept sample has no reason.

- The reference's own discards, checked on z0 before any scoring (the authors' released code drops
  the pair there): no parsable z0, fewer than `min_think_tokens` generated tokens, a single segment.
- The paper's data-quality filters, checked on the final z: reflection phrases still present in its
  last part, and degenerate 3-gram repetition (3-grams of words, or of characters in CJK text).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import List, Optional

from deepwriter.config.synthesis import FilterConfig
from deepwriter.synthesis import prompts

EMPTY_ANSWER = "empty_answer"
UNPARSEABLE = "unparseable"
TOO_SHORT = "too_short"
SINGLE_SEGMENT = "single_segment"
LATE_REFLECTION = "late_reflection"
REPETITION = "repetition"
# The pair's first prompt (or z0's scoring) cannot fit the generator's (scorer's) context: measured
# before sending, or a server's 400 for length. The reference gets no rollout back there and writes
# the pair with no trajectory (model_utils.py 165-168, synthesize.py process_item).
OVER_GENERATOR_CONTEXT = "over_generator_context"
OVER_SCORER_CONTEXT = "over_scorer_context"
# A failed model call is no reason: the pair stays unfinished (search.UnfinishedPair), not discarded.
BEFORE_SEARCH = (EMPTY_ANSWER, UNPARSEABLE, TOO_SHORT, SINGLE_SEGMENT)
QUALITY = (LATE_REFLECTION, REPETITION)
OVER_CONTEXT = (OVER_GENERATOR_CONTEXT, OVER_SCORER_CONTEXT)
REASONS = BEFORE_SEARCH + QUALITY + OVER_CONTEXT


# A unit of text for the repetition filter: one CJK character (Chinese and Japanese are not written
# with spaces between words), or a run of other characters between whitespace and CJK characters.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_UNIT = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")


def units(text: str) -> List[str]:
    """The text's units for n-gram counting: words where words are spaced, characters for CJK."""
    return _UNIT.findall(text.lower())


def top_trigram_share(text: str, top: int = 3) -> float:
    """Share of all 3-grams of units (words; characters in CJK text) taken by the `top` most frequent
    ones (0 for under 3 units)."""
    words = units(text)
    grams = list(zip(words, words[1:], words[2:]))
    if not grams:
        return 0.0
    return sum(c for _, c in Counter(grams).most_common(top)) / len(grams)


def has_late_reflection(text: str, fraction: float, lang: Optional[str] = None) -> bool:
    """A thinking phrase starting in the last `fraction` of the text (by characters): a plan that
    still hesitates as it ends has not settled."""
    text = text.strip()
    cutoff = (1.0 - fraction) * len(text)
    return any(pos >= cutoff for pos in prompts.find_reflections(text, lang))


def before_search(z0: Optional[str], generated_tokens: int, num_segments: int, cfg: FilterConfig) -> Optional[str]:
    """The reference's discard of z0 (None: the generator's output could not be parsed), or None."""
    if z0 is None or not z0.strip():
        return UNPARSEABLE
    if generated_tokens < cfg.min_think_tokens:
        return TOO_SHORT
    if num_segments < 2:
        return SINGLE_SEGMENT
    return None


def after_search(z: str, cfg: FilterConfig, lang: Optional[str] = None) -> Optional[str]:
    """The quality filter that the final trajectory fails, or None."""
    if has_late_reflection(z, cfg.late_reflection_fraction, lang):
        return LATE_REFLECTION
    if top_trigram_share(z) > cfg.max_top3_trigram_share:
        return REPETITION
    return None

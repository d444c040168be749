"""Text normalisation and word hashing shared by deduplication and decontamination."""

from __future__ import annotations

import hashlib
import itertools
import re
import string
from typing import Dict, List

import numpy as np

# str.translate has a fast path for ASCII text; a regex substitution costs several times more here.
_PUNCT = str.maketrans(
    {
        c: " "
        for c in string.punctuation + "\u2018\u2019\u201c\u201d\u2013\u2014\u2026\u00ab\u00bb。，、！？；：（）《》「」"
    }
)


_HAN = re.compile("[\u4e00-\u9fff]")


def is_chinese(text: str) -> bool:
    """The REER reference's language rule: one CJK unified ideograph makes a text Chinese (its prompts
    are then the Chinese ones)."""
    return _HAN.search(text) is not None


def normalize(text: str) -> str:
    """Lower case, whitespace collapsed: layout differences are not content."""
    return " ".join(text.lower().split())


_CJK = re.compile("([\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uff00-\uffef])")


def words(text: str, limit: int | None = None) -> List[str]:
    """Lower-cased words with punctuation removed; Chinese/Japanese characters count as words, since
    those scripts put no spaces between words."""
    if not text.isascii():
        text = _CJK.sub(r" \1 ", text)
    out = text.lower().translate(_PUNCT).split()
    return out[:limit] if limit else out


def digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


class WordIds:
    """Stable small integers for words, so that n-grams can be hashed with numpy in one pass."""

    def __init__(self) -> None:
        # Python's str hash is salted per process; a dictionary gives the same ids on every run.
        self._ids: Dict[str, int] = {}
        self._next = itertools.count(1)

    def __call__(self, ws: List[str]) -> np.ndarray:
        # Ids are unique but not consecutive (setdefault draws a number for known words too);
        # mapping in C is what matters: this runs over every word of the mix.
        return np.fromiter(map(self._ids.setdefault, ws, self._next), dtype=np.uint64, count=len(ws))


_MULT = np.uint64(0x9E3779B97F4A7C15)


def ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """64-bit hashes of every run of n consecutive ids (fewer ids than n: one hash of all of them)."""
    if len(ids) == 0:
        return np.zeros(0, dtype=np.uint64)
    n = min(n, len(ids))
    count = len(ids) - n + 1
    h = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = (h * _MULT) ^ ids[j : j + count]
            h ^= h >> np.uint64(29)
    return h

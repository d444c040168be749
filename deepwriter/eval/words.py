"""Word tokens of an answer, and HelloBench's cut of over-long answers before judging.

HelloBench's judge (Quehry/HelloBench llm_judge.py) splits every answer with `nltk.word_tokenize`,
and when there are more than 15,000 tokens keeps the first 16,000; either way the judge is shown the
tokens joined by single spaces. NLTK is not a dependency here, and its `word_tokenize` also needs the
punkt sentence model, a separate download, so this module approximates it offline with one regular
expression, following the Penn-Treebank rules NLTK's word tokenizer applies:

- words are runs of letters, digits and underscores (any script; a CJK run without spaces is one
  token), kept whole across inner hyphens and non-clitic apostrophes ("well-known", "o'clock");
- clitics are split off: "don't" -> "do" "n't", "it's" -> "it" "'s" (also 'm 'd 'll 're 've);
- numbers keep their inner separators ("3.14", "1,000", "10:30"); dotted abbreviations ("U.S.",
  "e.g.") stay one token; "..." and "--" are one token each;
- every other visible character is a token of its own; double quotes are written as `` (opening)
  and '' (closing) when the tokens are joined, as NLTK does.

Known differences from NLTK: URLs and e-mail addresses are split at their punctuation, and NLTK's
sentence model decides some period splits differently; counts agree closely on ordinary prose, and
the cut only matters for answers of some 15,000 words or more.
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

_TOKEN = re.compile(
    r"""
    \w+(?=n't\b)                  # the stem before a negation clitic: "do" of "don't", "ca" of "can't"
  | n't\b                         # the negation clitic
  | \w+(?='(?:s|m|d|ll|re|ve)\b)  # the stem before another clitic: "it" of "it's"
  | '(?:s|m|d|ll|re|ve)\b         # that clitic
  | \d+(?:[.,:]\d+)+              # numbers with inner separators
  | (?:[^\W\d_]\.){2,}            # dotted abbreviations: U.S. e.g.
  | \w+(?:[-'’]\w+)*              # words, across inner hyphens and apostrophes
  | \.\.\.|--|``|''               # multi-character punctuation
  | \S                            # anything else visible: one token
    """,
    re.VERBOSE | re.IGNORECASE,
)
_OPENERS = "([{<"


def word_tokens(text: str) -> List[Tuple[str, int, int]]:
    """(token, start, end) of every word token of `text`, in order."""
    return [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def count_words(text: str) -> int:
    return sum(1 for _ in _TOKEN.finditer(text))


def _joined(text: str, tokens: List[Tuple[str, int, int]]) -> str:
    out = []
    for tok, start, _ in tokens:
        if tok == '"':  # NLTK writes quotes as `` and '' depending on which side of a word they stand
            before = text[start - 1] if start > 0 else " "
            tok = "``" if before.isspace() or before in _OPENERS else "''"
        out.append(tok)
    return " ".join(out)


def truncate_answer(text: str, keep: Optional[int], above: Optional[int], rejoin: bool) -> Tuple[str, int, bool]:
    """The answer as the judge is to see it: (text, word tokens in the answer, whether it was cut).

    An answer of more than `above` tokens keeps its first `keep` (None or 0 in either: never cut).
    `rejoin`: the kept tokens joined by single spaces (HelloBench's form); otherwise the original
    text up to the end of the last kept token."""
    tokens = word_tokens(text)
    cut = bool(keep and above and len(tokens) > above and len(tokens) > keep)
    kept = tokens[:keep] if cut else tokens
    if rejoin:
        return _joined(text, kept), len(tokens), cut
    return (text[: kept[-1][2]] if cut and kept else text), len(tokens), cut

"""Reverse query synthesis: for an answer without a request, a Generator writes the request a real
user would plausibly have sent for it.

Each generated request is cleaned (quotes, "Request:"-style prefixes, preambles) and rejected with a
counted reason when it is empty, too short, cut off, a copy of a long span of the answer, or the
same as a request already accepted for that answer. Rejected requests are drawn again, up to
`max_attempts` rounds. Sampling seeds derive from `QueryConfig.seed` and the answer ids, so a re-run
with the same backend, batch size and inputs writes the same requests.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from deepwriter.config.data import QueryConfig
from deepwriter.llm.base import Generator, Message, Sampling
from deepwriter.pairs.text import is_chinese, normalize, words

_INSTRUCTION = """Here is a piece of writing that a writing assistant produced for a user.

<text>
{text}
</text>

Write the message the user most plausibly sent to get exactly this piece as the reply. In the user's \
own voice and in one to four sentences, the message should say what kind of piece it is (genre or \
form), what it is for, who will read it, about how long it should be (roughly {length} words), and \
the key content constraints: the topic, the points or events it must cover, the tone and style. Do \
not quote or copy sentences from the text, and do not mention that the text already exists. Reply \
with the user's message only."""

# The same request in Chinese, for a Chinese answer (the synthesis prompts' language rule).
_INSTRUCTION_ZH = """下面是一位写作助手为用户写出的一篇文字。

<text>
{text}
</text>

请写出用户最可能发出的那条消息，让这篇文字正好是对它的回复。用用户自己的口吻，一到四句话，\
说明这是什么体裁或形式的文字、用途是什么、写给谁看、大约多长（约 {length} 字），\
以及主要的内容要求：主题、必须涉及的要点或情节、语气和风格。\
不要引用或照抄文中的句子，也不要提到这篇文字已经存在。只回复用户的消息本身。"""

# "Request:", "User request:", "**Prompt:**", "Here is the request:", "Sure! Here's a plausible message:"
_PREFIX = re.compile(
    r"^\s*(?:(?:sure|okay|ok|certainly|of course)[!,.]?\s*)?"
    r"(?:here(?:'s| is) (?:a |the |one )?(?:plausible |possible |likely )?(?:user(?:'s)? )?"
    r"(?:request|prompt|message|query|instruction)s?[^:\n]*:|"
    r"\**\s*(?:the )?(?:user(?:'s)? |original |plausible )?"
    r"(?:request|prompt|message|query|instruction|user)\s*\**\s*:\s*\**)\s*",
    re.I,
)
_QUOTES = [('"', '"'), ("'", "'"), ("\u201c", "\u201d"), ("\u2018", "\u2019"), ("\u00ab", "\u00bb"), ("`", "`")]
_TAGS = re.compile(r"^\s*<(request|message|query|prompt)>\s*(.*?)\s*(</\1>)?\s*$", re.S | re.I)


def query_messages(answer: str, max_answer_words: int) -> List[Message]:
    """The request for one answer, in the answer's language. Lengths are counted in words, for
    Chinese in characters (words() counts each ideograph as one)."""
    zh = is_chinese(answer)
    ws = words(answer) if zh else answer.split()
    if len(ws) <= max_answer_words:
        shown = answer
    else:
        shown = (answer[:max_answer_words] if zh else " ".join(ws[:max_answer_words])) + " [...]"
    # Round the length the way a person would ask for it.
    length = max(50, int(round(len(ws) / 50.0)) * 50) if len(ws) >= 50 else len(ws)
    template = _INSTRUCTION_ZH if zh else _INSTRUCTION
    return [{"role": "user", "content": template.format(text=shown, length=length)}]


def clean_query(text: str) -> str:
    """The request alone: no code fences, tags, quotes, "Request:"-style labels or preambles."""
    t = text.strip()
    t = re.sub(r"^```\w*\s*|\s*```$", "", t).strip()
    m = _TAGS.match(t)
    if m:
        t = m.group(2)
    for _ in range(3):  # labels and quotes nest: **Request:** "..."
        before = t
        t = _PREFIX.sub("", t, count=1).strip()
        # A first line that only announces what follows ("Possible request below:") goes.
        first, _, rest = t.partition("\n")
        if rest.strip() and first.rstrip().endswith(":") and len(first.split()) <= 12:
            t = rest.strip()
        for left, right in _QUOTES:
            inner = t[1:-1]
            # Only quotes around the whole request: inner quotes mean the ends belong to quoted titles.
            if len(t) >= 2 and t.startswith(left) and t.endswith(right) and left not in inner and right not in inner:
                t = inner.strip()
        t = t.strip("*").strip()
        if t == before:
            break
    return t


def copied_span(query: str, answer: str, n: int) -> Optional[str]:
    """The first run of `n` words of the request that also occurs in the answer, if any."""
    q, a = words(query), words(answer)
    if len(q) < n or len(a) < n:
        return None
    grams = {tuple(a[i : i + n]) for i in range(len(a) - n + 1)}
    for i in range(len(q) - n + 1):
        if tuple(q[i : i + n]) in grams:
            return " ".join(q[i : i + n])
    return None


def rejection(
    query: str, answer: str, cfg: QueryConfig, accepted: Sequence[str], finish_reason: str = "stop"
) -> Optional[str]:
    """Why a cleaned request is not used (a short reason name), or None when it is fine."""
    if not query.strip():
        return "empty"
    if finish_reason == "length":
        return "truncated"  # cut off by max_new_tokens: the request ends mid-sentence
    if len(query.split()) < cfg.min_words:
        return "too_short"
    if copied_span(query, answer, cfg.copy_ngram):
        return "copies_answer"
    if normalize(query) in {normalize(a) for a in accepted}:
        return "duplicate"
    return None


@dataclass
class QueryOutcome:
    id: str
    queries: List[str] = field(default_factory=list)
    rejected: Dict[str, int] = field(default_factory=dict)  # reason -> count
    examples: Dict[str, str] = field(default_factory=dict)  # reason -> one rejected text (for the log)
    attempts: int = 0
    # A failed model call (after the backend's retries): the answer is unfinished, not written to
    # the work log, and done by a re-run. Not part of the record.
    error: Optional[str] = None

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "queries": self.queries,
            "rejected": self.rejected,
            "examples": self.examples,
            "attempts": self.attempts,
        }


def derive_seed(seed: int, *parts: object) -> int:
    blob = ":".join(str(p) for p in (seed,) + parts).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "big")


def synthesize_queries(
    answers: Sequence[Tuple[str, str]],
    generator: Generator,
    cfg: QueryConfig,
    on_batch: Optional[Callable[[List[QueryOutcome]], None]] = None,
    per_answer: Optional[int] = None,
    known: Optional[Mapping[str, Sequence[str]]] = None,
) -> List[QueryOutcome]:
    """`per_answer` (default `queries_per_answer`) accepted requests, or fewer after `max_attempts`
    rounds, for each (id, answer). A request equal to one of `known[id]` (the answer's existing
    requests) counts as a duplicate. `on_batch` gets each batch's finished answers, for writing as it
    goes; an answer whose call failed has `error` set, is not passed on, and no new batch is started
    after one (the failure is the infrastructure's, so the rest would fail the same way)."""
    from tqdm.auto import tqdm

    want = cfg.queries_per_answer if per_answer is None else per_answer
    known = known or {}
    if want < 1 or cfg.max_attempts < 1 or cfg.batch_size < 1:
        raise ValueError(
            f"data.queries: requests per answer ({want}), max_attempts and batch_size must be >= 1, got {cfg}"
        )
    outcomes: List[QueryOutcome] = []
    bar = tqdm(total=len(answers), desc="reverse queries", unit="answer", dynamic_ncols=True)
    for start in range(0, len(answers), cfg.batch_size):
        if any(o.error for o in outcomes):
            break
        batch = answers[start : start + cfg.batch_size]
        done = [QueryOutcome(aid) for aid, _ in batch]
        for attempt in range(cfg.max_attempts):
            todo = [i for i, o in enumerate(done) if len(o.queries) < want and o.error is None]
            if not todo:
                break
            # One call per number of missing requests (usually one call: all miss the same count).
            by_missing: Dict[int, List[int]] = {}
            for i in todo:
                by_missing.setdefault(want - len(done[i].queries), []).append(i)
            for missing, idx in sorted(by_missing.items()):
                sampling = Sampling(
                    temperature=cfg.temperature,
                    top_p=cfg.top_p,
                    max_new_tokens=cfg.max_new_tokens,
                    seed=derive_seed(cfg.seed, batch[idx[0]][0], attempt, missing),
                )
                prompts = [query_messages(batch[i][1], cfg.max_answer_words) for i in idx]
                gens = generator.generate(prompts, sampling, n=missing)
                for i, group in zip(idx, gens):
                    o = done[i]
                    o.attempts = attempt + 1
                    failed = [
                        g.error or "the backend reported an error"
                        for g in group
                        if g.error or g.finish_reason == "error"
                    ]
                    if failed:
                        o.error = failed[0]
                        continue
                    for g in group:
                        if len(o.queries) >= want:
                            break
                        q = clean_query(g.text or "")
                        why = rejection(q, batch[i][1], cfg, [*known.get(o.id, ()), *o.queries], g.finish_reason)
                        if why:
                            o.rejected[why] = o.rejected.get(why, 0) + 1
                            o.examples.setdefault(why, (g.text or "")[:300])
                        else:
                            o.queries.append(q)
        outcomes += done
        if on_batch is not None:
            on_batch([o for o in done if o.error is None])
        bar.update(len(batch))
        bar.set_postfix(accepted=sum(len(o.queries) for o in outcomes), refresh=False)
    bar.close()
    return outcomes


def rejection_counts(outcomes: Iterable[QueryOutcome]) -> Dict[str, int]:
    total: Counter = Counter()
    for o in outcomes:
        total.update(o.rejected)
    return dict(sorted(total.items()))

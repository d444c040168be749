"""Prompts of the REER search: the initial think-aloud trajectory z0, the rewrite of one segment,
and the scorer's context. Written for this project.

The generator sees both the request x and the reference answer y, but the trajectory must read as
the writer's own planning *before* writing y: first person, present/future tense, no bullet lists.
"""

from __future__ import annotations

import random
import re
from typing import List, Optional, Tuple

from deepwriter import think
from deepwriter.llm.base import Message

THINK_OPEN = think.OPEN + "\n"  # the z0 prefill opens the block and its first line
THINK_CLOSE = think.CLOSE
REWRITE_OPEN = "<rewrite>"
REWRITE_CLOSE = "</rewrite>"

# Openings the assistant turn is prefilled with, weighted: variety keeps the student from learning
# one fixed first sentence.
TRIGGERS_EN = [
    ("Okay, I am given", 4),
    ("Alright, the user", 3),
    ("Alright", 2),
    ("Okay, so the task is", 2),
    ("Let me start by", 1),
]
TRIGGERS_ZH = [("好的，用户", 4), ("嗯，我需要", 3), ("好，这个任务", 2), ("首先，我要", 1)]

# Interjections that only signal doubt: strip_reflection removes them (with their punctuation).
INTERJECTIONS_EN = [
    "On second thought",
    "But wait",
    "Hold on",
    "Alternatively",
    "Actually",
    "Let me think",
    "Let me reconsider",
    "Hmm",
    "Wait",
    "Oh",
]
# Phrases that signal reflection but carry content ("Let me think about the reader"): detected, and
# rewritten in a plain form by strip_reflection (_DECLARATIVE_EN) rather than cut.
REFLECTION_PHRASES_EN = INTERJECTIONS_EN + ["Let me think", "Maybe I should", "Let me reconsider"]
INTERJECTIONS_ZH = ["等等", "嗯", "不过等一下", "让我想想", "或者说", "其实"]
REFLECTION_PHRASES_ZH = INTERJECTIONS_ZH + ["也许我应该", "再想想"]


def is_chinese(text: str) -> bool:
    cjk = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff")
    return cjk > 0.2 * max(1, len(text.strip()))


def pick_trigger(x: str, rng: random.Random) -> str:
    options = TRIGGERS_ZH if is_chinese(x) else TRIGGERS_EN
    words, weights = zip(*options)
    return rng.choices(words, weights=weights, k=1)[0]


_PLAN_SHAPE = """Let the thinking move through these stages, in your own words:
1. What the user really wants, and who will read the piece.
2. The core objective: what the text must achieve for that reader.
3. The content: which ideas, facts, images or arguments belong in it, and which do not.
4. The structure: choose a fitting frame (for example the Golden Circle why-how-what, AIDA, or \
beginning-development-climax-resolution) and say why it fits.
5. An outline or a rough draft of key passages, introduced with words like "Outline:" or "Draft:" so it is clearly \
marked as such."""

_STYLE_REFLECT = """Think aloud in the first person and in the present or future tense ("I want...", "I will open \
with..."), as flowing paragraphs with no bullet lists. Question yourself naturally along the way with varied \
phrases such as "Hmm, maybe...", "Wait, ...", "Let me think...", "But wait...", "Alternatively, ..." - use them \
where a real writer would hesitate, and not in the closing part, which should settle on the final plan."""

_STYLE_PLAIN = """Think in the first person and in the present or future tense ("I want...", "I will open \
with..."), as flowing paragraphs with no bullet lists. Reason steadily and directly, without hesitation phrases \
such as "Hmm", "Wait" or "Alternatively"."""


def initial_messages(x: str, y: str, reflection: bool = True) -> List[Message]:
    """Messages for z0; the assistant turn is prefilled with THINK_OPEN + a trigger opening."""
    style = _STYLE_REFLECT if reflection else _STYLE_PLAIN
    user = f"""You will reconstruct the thinking a skilled writer goes through before writing a piece.

Here is the request the writer received:
<request>
{x}
</request>

Here is the piece the writer finally produced:
<final_text>
{y}
</final_text>

Write the writer's thinking *before* writing, as if the final text did not exist yet: the plan that naturally leads \
to this piece. Do not copy sentences from the final text.

{_PLAN_SHAPE}

{style}

Write the whole thinking inside one {THINK_OPEN.strip()} ... {THINK_CLOSE} block and nothing after it."""
    return [{"role": "user", "content": user}]


def refine_messages(
    x: str, y: str, prefix: str, segment: str, suffix: str, reflection: bool = True, analysis: bool = True
) -> List[Message]:
    """Messages asking for a better version of one segment of a trajectory, in context. With
    `analysis`, the generator first says what the segment should do, then writes the tagged rewrite;
    without it, the caller prefills REWRITE_OPEN (see refine_prefill)."""
    style = (
        "Keep the first-person, present/future-tense think-aloud voice; a natural moment of doubt "
        '("Hmm, maybe...", "Wait, ...") is welcome if it helps.'
        if reflection
        else "Keep the first-person, present/future-tense voice; reason directly, without hesitation phrases."
    )
    task = _ANALYSE if analysis else "Think about which decision this paragraph should make."
    user = f"""A writer's thinking before writing a piece is being improved one paragraph at a time.

The request:
<request>
{x}
</request>

The piece the writer will produce:
<final_text>
{y}
</final_text>

The thinking so far, already improved:
<before>
{prefix or "(nothing yet: this is the first paragraph)"}
</before>

THE PARAGRAPH TO REWRITE:
<target_paragraph>
{segment}
</target_paragraph>

The thinking that follows, not yet improved:
<after>
{suffix or "(nothing: this is the last paragraph)"}
</after>

{task} Write the improved paragraph so that it leads more naturally to the final piece, without copying sentences \
from it. {style} No bullet lists.

Put the improved paragraph, and only it, between {REWRITE_OPEN} and {REWRITE_CLOSE}."""
    return [{"role": "user", "content": user}]


_ANALYSE = (
    "First, in two or three sentences, analyse what this paragraph should do in the thinking: which "
    "decision about intent, reader, content or structure it should make, and what is missing, vague or "
    "wrong in it. Then, after the analysis:"
)


def refine_prefill(analysis: bool = True) -> str:
    return "" if analysis else REWRITE_OPEN + "\n"


_SCORER_INSTRUCTION = (
    "Before answering, plan the response step by step: what the request asks for, who will read it, "
    "what content it needs and how to structure it. Then write the response.\n\n{x}"
)


def scorer_messages(x: str) -> List[Message]:
    return [{"role": "user", "content": _SCORER_INSTRUCTION.format(x=x)}]


def split_answer(y: str) -> Tuple[str, str]:
    """(head, rest): head is y's first paragraph with the blank line after it, rest the remainder;
    head is "" when y has a single paragraph."""
    m = re.search(r"\n[ \t]*\n\s*", y)
    if m is None or not y[m.end() :].strip():
        return "", y
    return y[: m.end()], y[m.end() :]


def scorer_prefix(z: str, answer_head: str = "") -> str:
    """The assistant turn before the scored target: the thinking block and (optionally) y's head."""
    return think.block(z) + answer_head


def parse_initial(trigger: str, text: str) -> Optional[str]:
    """The trajectory from a z0 generation (which continues after the prefilled trigger), or None."""
    body = text.split(THINK_CLOSE, 1)[0]
    body = body.replace(THINK_OPEN.strip(), "")
    if not body.strip():
        return None
    return (trigger + body).strip()


def parse_rewrite(text: str) -> Optional[str]:
    """The rewritten paragraph of a refinement answer, or None when there is no non-empty tagged
    block. A missing closing tag is tolerated (generation may stop on it)."""
    start = text.rfind(REWRITE_OPEN)
    if start < 0:
        return None
    body = text[start + len(REWRITE_OPEN) :]
    body = body.split(REWRITE_CLOSE, 1)[0].strip()
    if not body or REWRITE_OPEN in body:
        return None
    return body


def _alternatives(phrases: List[str]) -> str:
    return "|".join(re.escape(p) for p in sorted(set(phrases), key=len, reverse=True))


def find_reflections(text: str) -> List[int]:
    """Start offsets of thinking phrases in text (case-sensitive: "Wait," opens a doubt, "wait" is a verb)."""
    if is_chinese(text):
        pat = re.compile(_alternatives(REFLECTION_PHRASES_ZH))
    else:
        pat = re.compile(rf"(?<![\w])(?:{_alternatives(REFLECTION_PHRASES_EN)})\b")
    return [m.start() for m in pat.finditer(text)]


_DECLARATIVE_EN = [
    ("Maybe I should", "I should"),
    ("Let me reconsider", "Reconsidering"),
    ("Let me think about", "Thinking about"),
]


def strip_reflection(text: str) -> str:
    """Remove doubt interjections ("Hmm,", "Wait...", "Alternatively,") with their punctuation,
    re-capitalising the sentence they opened. Phrases that carry content are left alone."""
    if is_chinese(text):
        return re.sub(rf"(?:{_alternatives(INTERJECTIONS_ZH)})[，,。…、]+", "", text).strip()
    pat = re.compile(rf"(?<![\w])(?:{_alternatives(INTERJECTIONS_EN)})(?:\s*(?:\.\.\.|[,.!?…;:—-]))+[ \t]*")
    out = pat.sub("", text)
    # Phrases that carry content keep it in a plain, declarative form.
    for phrase, plain in _DECLARATIVE_EN:
        out = re.sub(rf"(?<![\w])[{phrase[0]}{phrase[0].lower()}]{re.escape(phrase[1:])}\b", plain, out)
    out = re.sub(r"(^|[.!?]\s+|\n\s*)([a-z])", lambda m: m.group(1) + m.group(2).upper(), out)
    out = re.sub(r"[ \t]{2,}", " ", out)
    return out.strip()

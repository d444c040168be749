"""Prompts of the REER search, built from the words in wording.py: the initial think-aloud
trajectory z0, the rewrite of one segment, the scorer's context; and the parsing of their answers.

As in the authors' released synthesis code: a Chinese request (any CJK ideograph in x) gets the
Chinese prompts, every prompt has the same system message (a config value), the z0 turn is prefilled
with `<think>\\n` and an opening phrase drawn with the reference's odds, and the rewrite turn with an
opening line and `<analyze>`; the scorer sees the think-aloud instruction without y and scores
`<think>\\n{z}\\n</think>\\n<answer>\\n{y_head}` + y_rest. docs/FIDELITY.md lists every rule.
"""

from __future__ import annotations

import random
import re
from typing import List, Optional, Tuple

from deepwriter.core import think
from deepwriter.llm.base import Message
from deepwriter.pairs.text import is_chinese
from deepwriter.synthesis import segments
from deepwriter.synthesis.wording import WORDING

THINK_OPEN = think.OPEN + "\n"  # the z0 prefill opens the block and its first line
THINK_CLOSE = think.CLOSE
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
ANALYZE_OPEN = "<analyze>"
REFINE_OPEN, REFINE_CLOSE = "<refine>", "</refine>"
DEFAULT_SYSTEM = "You are a helpful assistant."

# Opening phrases of z0 with the reference's odds: English draws "Okay, I am given" with p=0.2, then
# "Alright, the user" with p=0.6 of the rest, else "Alright"; Chinese draws one of two evenly.
TRIGGERS_EN = [("Okay, I am given", 0.20), ("Alright, the user", 0.48), ("Alright", 0.32)]
TRIGGERS_ZH = [("好的", 0.5), ("嗯", 0.5)]

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
INTERJECTIONS_ZH = ["不过等等", "等等", "嗯", "不过等一下", "让我想想", "或者说", "其实"]
REFLECTION_PHRASES_ZH = INTERJECTIONS_ZH + ["也许我应该", "再想想"]


def language(x: str, setting: str = "auto") -> str:
    """'zh' or 'en': the prompts' language for request x (`synthesis.language`: auto | en | zh)."""
    if setting != "auto":
        return setting
    return "zh" if is_chinese(x) else "en"


def pick_trigger(lang: str, rng: random.Random) -> str:
    words, weights = zip(*(TRIGGERS_ZH if lang == "zh" else TRIGGERS_EN))
    return rng.choices(words, weights=weights, k=1)[0]


def _with_system(user: str, system: Optional[str]) -> List[Message]:
    msgs: List[Message] = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": user}]


def _think_aloud(lang: str, reflection: bool, scorer: bool, **fields: str) -> str:
    """The think-aloud instruction: the initial prompt (shows y, asks for an outline) or the scorer's
    (no y, asks for a draft). A wording part "<name>_scorer" or "<name>_initial" is taken where the
    two prompts differ."""
    w = WORDING[lang]
    role = "scorer" if scorer else "initial"

    def part(name: str) -> str:
        return w.get(f"{name}_{role}", w.get(name, ""))

    if reflection:
        reflect = w["reflect"].format(often=part("often"), num=part("num"))
        reflect += "" if scorer else w["reflect_vary"]
    else:
        reflect = w["plain"]
    last_item = w["draft" if scorer else "outline"]
    body = part("head") + "\n\n" + part("requirements") + last_item + "\n" + reflect + "\n" + part("tail") + "\n"
    return _fill(body, {"{task}": fields["task"], "{solution}": fields.get("solution", "")})


def _fill(template: str, values: dict) -> str:
    """Placeholders filled in one pass: a placeholder-like text inside x, y or z is never expanded."""
    return re.sub("|".join(re.escape(k) for k in values), lambda m: values[m.group(0)], template)


def initial_messages(
    x: str, y: str, lang: str = "en", reflection: bool = True, system: Optional[str] = DEFAULT_SYSTEM
) -> List[Message]:
    """Messages for z0 (the generator sees x and y); the turn is prefilled with initial_prefill()."""
    return _with_system(_think_aloud(lang, reflection, False, task=x, solution=y), system)


def initial_prefill(trigger: str) -> str:
    return THINK_OPEN + trigger


def scorer_messages(
    x: str, lang: str = "en", reflection: bool = True, system: Optional[str] = DEFAULT_SYSTEM
) -> List[Message]:
    """The scorer's context: the inference-time think-aloud instruction for x (no y in it)."""
    return _with_system(_think_aloud(lang, reflection, True, task=x), system)


def refine_messages(
    x: str,
    y: str,
    before: str,
    segment: str,
    after: str,
    lang: str = "en",
    reflection: bool = True,
    analysis: bool = True,
    system: Optional[str] = DEFAULT_SYSTEM,
) -> List[Message]:
    """Messages asking for a better version of one segment, shown in place between <replace> tags.
    With `analysis` the generator first analyses in three steps (<analyze>), then writes <refine>;
    without it the turn is prefilled with <refine> (see refine_prefill)."""
    w = WORDING[lang]
    fill = {
        "{task}": x,
        "{solution}": y,
        "{before}": before,
        "{segment}": segment,
        "{after}": after,
        "{refine_reflect}": w["refine_reflect" if reflection else "refine_plain"],
        "{answer_shape}": w["answer_analysis" if analysis else "answer_only"],
        "{note_c}": w["note_reflect" if reflection else "note_plain"],
    }
    return _with_system(_fill(w["refine"], fill), system)


def refine_prefill(lang: str = "en", analysis: bool = True) -> str:
    """The opening of the rewrite turn: a line and the analysis tag, or the refine tag alone."""
    return WORDING[lang]["refine_opening"] + ANALYZE_OPEN + "\n" if analysis else REFINE_OPEN + "\n"


def refine_stop(analysis: bool = True) -> tuple:
    """With the analysis the reply runs to its end (the last <refine> block is taken, as in the
    reference); without it, generation stops at the closing tag (a small model would ramble on)."""
    return () if analysis else (REFINE_CLOSE,)


def split_answer(y: str, min_chars: int = 100) -> Tuple[str, str]:
    """(head, rest) of y: y is segmented like a trajectory (segments.spans) and its first segment is
    the head, which joins the scorer's context; the rest is scored. A y of a single segment is scored
    whole (head ""): the reference would score an empty remainder."""
    spans = segments.spans(y, min_chars)
    if len(spans) < 2:
        return "", y
    return spans[0], "".join(spans[1:])


def scorer_prefix(z: str, answer_head: str = "") -> str:
    """The assistant turn before the scored target: the thinking block, the answer tag and y's head."""
    return f"{think.OPEN}\n{z}\n{think.CLOSE}\n{ANSWER_OPEN}\n{answer_head}"


def scorer_suffix() -> str:
    """What follows y's scored rest in the scorer's text: the answer's closing tag. Tokenized with y and
    never scored, so that a last token merging with its line break counts as y's, as in the reference."""
    return f"\n{ANSWER_CLOSE}"


def parse_initial(trigger: str, text: str) -> Optional[str]:
    """The thinking of a z0 generation (which continues after the prefilled trigger), as the scorer
    reads it: the trigger and everything before the first `</think>`, unstripped (often with a line
    break before the tag) and with any `<think>` the model wrote kept; None when nothing was written.
    The trajectory kept as z0 is this text stripped."""
    body = text.split(THINK_CLOSE, 1)[0]
    if not body.strip():
        return None
    return trigger + body


def parse_refinement(text: str) -> Optional[str]:
    """The rewritten segment of a refinement reply, read as the reference reads it: from the last
    <refine> to the last </refine> (to the end when there is none), stripped; None when the reply has
    no <refine>. An empty block is an empty candidate, and so is a last </refine> that comes before
    the last <refine> (the reference's slice is then empty)."""
    start = text.rfind(REFINE_OPEN)
    if start < 0:
        return None
    start += len(REFINE_OPEN)
    end = text.rfind(REFINE_CLOSE)
    return text[start : end if end >= 0 else None].strip()


def _alternatives(phrases: List[str]) -> str:
    return "|".join(re.escape(p) for p in sorted(set(phrases), key=len, reverse=True))


def find_reflections(text: str, lang: Optional[str] = None) -> List[int]:
    """Start offsets of thinking phrases in text (case-sensitive: "Wait," opens a doubt, "wait" is a
    verb). `lang`: the pair's language; None: the text's own (is_chinese)."""
    if (lang or language(text)) == "zh":
        pat = re.compile(_alternatives(REFLECTION_PHRASES_ZH))
    else:
        pat = re.compile(rf"(?<![\w])(?:{_alternatives(REFLECTION_PHRASES_EN)})\b")
    return [m.start() for m in pat.finditer(text)]


_DECLARATIVE_EN = [
    ("Maybe I should", "I should"),
    ("Let me reconsider", "Reconsidering"),
    ("Let me think about", "Thinking about"),
]


def strip_reflection(text: str, lang: Optional[str] = None) -> str:
    """Remove doubt interjections ("Hmm,", "Wait...", "Alternatively,") with their punctuation,
    re-capitalising the sentence they opened. Phrases that carry content are left alone."""
    if (lang or language(text)) == "zh":
        return re.sub(rf"(?:{_alternatives(INTERJECTIONS_ZH)})[，,。…、]+", "", text).strip()
    pat = re.compile(rf"(?<![\w])(?:{_alternatives(INTERJECTIONS_EN)})(?:\s*(?:\.\.\.|[,.!?…;:—-]))+[ \t]*")
    out = pat.sub("", text)
    # Phrases that carry content keep it in a plain, declarative form.
    for phrase, plain in _DECLARATIVE_EN:
        out = re.sub(rf"(?<![\w])[{phrase[0]}{phrase[0].lower()}]{re.escape(phrase[1:])}\b", plain, out)
    out = re.sub(r"(^|[.!?]\s+|\n\s*)([a-z])", lambda m: m.group(1) + m.group(2).upper(), out)
    out = re.sub(r"[ \t]{2,}", " ", out)
    return out.strip()

"""Segmentation, prompt parsing, reflection stripping and the discard filters."""

from __future__ import annotations

import random

import pytest

from deepwriter.synthesis import filters, prompts, segments
from deepwriter.synthesis.config import FilterConfig

P = "I will open with the keeper climbing the stairs at dusk, because the ritual tells the reader who she is. "


def test_splits_on_blank_lines_and_rejoins_exactly():
    z = "\n\n".join([P + "One.", P + "Two.", P + "Three."])
    segs = segments.split(z, 100)
    assert segs == [P + "One.", P + "Two.", P + "Three."]
    assert segments.join(segs, segments.separator(z)) == z


def test_falls_back_to_single_newlines_without_blank_lines():
    z = "\n".join([P + "One.", P + "Two."])
    assert segments.separator(z) == "\n"
    assert segments.split(z, 100) == [P + "One.", P + "Two."]
    assert segments.join(segments.split(z, 100), "\n") == z


def test_short_chunks_merge_into_the_next_and_the_last_into_the_previous():
    z = "Short one.\n\n" + P + "A.\n\n" + P + "B.\n\nTail."
    segs = segments.split(z, 100)
    assert segs == ["Short one.\n\n" + P + "A.", P + "B.\n\nTail."]
    assert segments.split("tiny\n\nbits", 100) == ["tiny\n\nbits"]


def test_latex_display_blocks_stay_whole_across_blank_lines():
    z = (
        P + "First.\n\n$$\na = b\n\nc = d\n$$\n\n" + P + "Then.\n\n\\[ x \n\n y \\]\n\n"
        "\\begin{align}\nf(x) &= 1\n\n g &= 2\n\\end{align}\n\n" + P + "End."
    )
    segs = segments.split(z, 0)
    assert "$$\na = b\n\nc = d\n$$" in segs
    assert "\\[ x \n\n y \\]" in segs
    assert "\\begin{align}\nf(x) &= 1\n\n g &= 2\n\\end{align}" in segs
    assert len(segs) == 6
    assert segments.join(segs) == z


def test_join_split_preserves_text_content_on_messy_input():
    rng = random.Random(3)
    words = "plan reader intent outline draft $$ \\[ \\] hmm wait structure".split()
    for _ in range(200):
        parts = []
        for _ in range(rng.randint(1, 12)):
            parts.append(" ".join(rng.choice(words) for _ in range(rng.randint(1, 30))))
            parts.append(rng.choice(["\n", "\n\n", "\n \n\n", "  ", "\n\t\n"]))
        z = "".join(parts)
        for min_chars in (0, 50, 100, 1000):
            segs = segments.split(z, min_chars)
            assert segments.join(segs, segments.separator(z)).split() == z.split()
            assert all(s == s.strip() and s for s in segs)


def test_parse_rewrite():
    assert prompts.parse_rewrite("analysis...\n<rewrite>\nNew paragraph.\n</rewrite>") == "New paragraph."
    assert prompts.parse_rewrite("<rewrite>cut off by the stop string") == "cut off by the stop string"
    assert prompts.parse_rewrite("no tags at all") is None
    assert prompts.parse_rewrite("<rewrite>  \n </rewrite>") is None


def test_parse_initial_and_triggers():
    assert prompts.parse_initial("Alright", ", the plan.\n</think>\nignored") == "Alright, the plan."
    assert prompts.parse_initial("Alright", "   ") is None
    rng = random.Random(0)
    picks = {prompts.pick_trigger("Write a poem", rng) for _ in range(200)}
    assert picks <= set(dict(prompts.TRIGGERS_EN)) and len(picks) >= 3
    assert prompts.pick_trigger("请写一首关于大海的诗", random.Random(0)) in dict(prompts.TRIGGERS_ZH)


def test_initial_prompt_carries_x_and_y_and_the_meta_structure():
    msg = prompts.initial_messages("Write about the sea.", "The sea is wide.")[0]["content"]
    assert "Write about the sea." in msg and "The sea is wide." in msg
    for needle in ("Golden Circle", "AIDA", "Outline:", "first person", "no bullet lists", "Hmm, maybe"):
        assert needle in msg
    assert "Hmm, maybe" not in prompts.initial_messages("x", "y", reflection=False)[0]["content"]


def test_refine_prompt_marks_the_segment_and_its_context():
    msg = prompts.refine_messages("REQ", "ANS", "PREFIX", "SEGMENT", "SUFFIX")[0]["content"]
    assert msg.index("PREFIX") < msg.index("<target_paragraph>\nSEGMENT\n</target_paragraph>") < msg.index("SUFFIX")
    assert "analyse" in msg and prompts.refine_prefill(True) == ""
    assert prompts.refine_prefill(False) == "<rewrite>\n"


def test_strip_reflection_removes_phrases_cleanly():
    text = (
        "Hmm, maybe the reader is a student. Wait... I will open with a scene. Alternatively, a question. "
        "Let me think about who reads it. But wait, the tone matters."
    )
    out = prompts.strip_reflection(text)
    assert out == (
        "Maybe the reader is a student. I will open with a scene. A question. "
        "Thinking about who reads it. The tone matters."
    )
    assert prompts.strip_reflection("嗯，我需要先想想读者。等等，结构呢？") == "我需要先想想读者。结构呢？"


FC = FilterConfig(min_think_tokens=100, late_reflection_fraction=0.1, max_top3_trigram_share=0.30)


def good_z() -> str:
    rng = random.Random(1)
    vocab = (
        "reader intent story keeper light sea tone scene dusk structure outline draft voice image salt glass "
        "stairs lamp signal answer mystery pacing ending opening"
    ).split()
    paras = [" ".join(rng.choice(vocab) for _ in range(60)) + "." for _ in range(3)]
    paras[0] = "Hmm, maybe " + paras[0]
    return "\n\n".join(paras)


def test_filters_keep_a_good_trajectory():
    assert filters.discard_reason(good_z(), "answer", FC, 100) is None


@pytest.mark.parametrize(
    "z,y,reason",
    [
        (good_z(), "  ", filters.EMPTY_ANSWER),
        (None, "answer", filters.UNPARSEABLE),
        ("word " * 99 + "\n\n" + "", "answer", filters.TOO_SHORT),
        (" ".join(f"w{i}" for i in range(150)), "answer", filters.SINGLE_SEGMENT),
        (good_z() + "\n\nBut wait, the end.", "answer", filters.LATE_REFLECTION),
        ("\n\n".join(["the keeper climbs " * 40] * 2), "answer", filters.REPETITION),
    ],
)
def test_each_discard_reason(z, y, reason):
    assert filters.discard_reason(z, y, FC, 100) == reason


def test_too_short_counts_whitespace_words():
    z = "\n\n".join([" ".join(f"a{i}" for i in range(50)), " ".join(f"b{i}" for i in range(50))])
    assert filters.discard_reason(z, "y", FC, 100) is None
    assert filters.discard_reason(z, "y", FilterConfig(101, 0.1, 0.3), 100) == filters.TOO_SHORT


def test_trigram_share_and_late_reflection_thresholds():
    assert filters.top_trigram_share("a b c a b c a b c") == pytest.approx(1.0)
    assert filters.top_trigram_share("one two") == 0.0
    assert not filters.has_late_reflection("Wait, " + "x " * 100, 0.1)
    assert filters.has_late_reflection("x " * 100 + "Hmm, ok", 0.1)
    assert not filters.has_late_reflection("x " * 100 + "I will wait here", 0.1)  # the verb is not a phrase

"""Segmentation, prompt parsing, reflection stripping and the discard filters."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from deepwriter.config.synthesis import FilterConfig
from deepwriter.synthesis import filters, prompts, segments
from deepwriter.testing.repo import FIXTURES, compose_typed

P = "I will open with the keeper climbing the stairs at dusk, because the ritual tells the reader who she is. "


def test_splits_on_blank_lines_and_rejoins_with_blank_lines():
    z = "\n\n".join([P + "One.", P + "Two.", P + "Three."])
    segs = segments.split(z, 100)
    assert segs == [P + "One.", P + "Two.", P + "Three."]
    assert segments.join(segs) == z


def test_falls_back_to_single_newlines_when_blank_lines_give_one_segment():
    z = "\n".join([P + "One.", P + "Two."])
    assert segments.split(z, 100) == [P + "One.", P + "Two."]
    # blank lines that only separate short chunks give one segment: lines are tried next
    blocks = "A title\n\n" + P + "One.\n" + P + "Two."
    assert segments.spans(blocks, 100) == ["A title\n\n" + P + "One.", "\n" + P + "Two."]
    # the reference rejoins with blank lines whatever the split was
    assert segments.join(segments.split(z, 100)) == z.replace("\n", "\n\n")


def test_short_chunks_join_the_front_of_the_next_long_chunk_and_the_tail_joins_the_last():
    z = "Short one.\n\n" + P + "A.\n\n" + P + "B.\n\nTail."
    assert segments.split(z, 100) == ["Short one.\n\n" + P + "A.", P + "B.\n\nTail."]
    assert segments.split("tiny\n\nbits", 100) == ["tiny\n\nbits"]
    # two short chunks that together pass min_chars still do not make a segment of their own: only a
    # chunk long enough by itself closes one
    half = "x" * 60
    assert segments.spans(f"{half}\n\n{half}\n\n{P}", 100) == [f"{half}\n\n{half}\n\n{P}"]


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


def test_an_unclosed_display_math_block_keeps_the_rest_of_the_text_whole():
    # the reference scans from \\[ to the next \\] or, when there is none, to the end of the text
    z = P + "First.\n\n\\[ x = 1 \n\n" + P + "Second.\n\n" + P + "Third."
    assert segments.split(z, 100) == [P + "First.", "\\[ x = 1 \n\n" + P + "Second.\n\n" + P + "Third."]
    # a closed block still ends where it closes
    closed = P + "First.\n\n\\[ x = 1 \\]\n\n" + P + "Second."
    assert segments.split(closed, 0) == [P + "First.", "\\[ x = 1 \\]", P + "Second."]


def test_compose_puts_a_candidate_together_as_the_reference_does():
    assert segments.compose(["a", "b"], "NEW", ["c"]) == "a\n\nb\n\nNEW\n\nc"
    assert segments.compose([], "NEW", ["c"]) == "NEW\n\nc"
    # an empty rewrite leaves its blank lines; an empty first segment adds no separator before it
    assert segments.compose(["a"], "", ["c"]) == "a\n\n\n\nc"
    assert segments.compose([""], "NEW", []) == "NEW"
    assert segments.join(["a", "", "c"]) == "a\n\n\n\nc"


def _random_texts(n: int, seed: int):
    rng = random.Random(seed)
    words = "plan reader intent outline draft $$ \\[ \\] hmm wait structure 读者 结构".split()
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            parts.append(" ".join(rng.choice(words) for _ in range(rng.randint(1, 30))))
            parts.append(rng.choice(["\n", "\n\n", "\n \n\n", "  ", "\n\t\n", "\n\n\n"]))
        yield "".join(parts)[: rng.randint(0, 400)]


def test_span_properties_on_random_text():
    for text in _random_texts(300, 3):
        for min_chars in (0, 50, 100, 1000):
            out = segments.spans(text, min_chars)
            assert "".join(out) == text  # nothing lost, nothing added
            # every segment but the last holds a chunk long enough by itself
            assert all(len(seg) >= min_chars for seg in out[:-1])
            assert all(seg.strip() for seg in out) or not text.strip()
            stripped = segments.split(text, min_chars)
            assert all(s == s.strip() and s for s in stripped)
            assert segments.join(stripped).split() == text.split()


def test_answer_head_is_ys_first_segment():
    y = "# Title\n\n" + P + "First.\n\n" + P + "Second.\n\nThe end."
    head, rest = prompts.split_answer(y, 100)
    assert head == "# Title\n\n" + P + "First." and rest == "\n\n" + P + "Second.\n\nThe end."
    assert head + rest == y
    # one paragraph, or only short lines: a single segment, scored whole
    assert prompts.split_answer(P + "Only.", 100) == ("", P + "Only.")
    assert prompts.split_answer("a\nb\n\nc", 100) == ("", "a\nb\n\nc")
    # lines are used when blank lines give one segment
    y2 = P + "One.\n" + P + "Two."
    assert prompts.split_answer(y2, 100) == (P + "One.", "\n" + P + "Two.")
    for text in _random_texts(200, 5):
        head, rest = prompts.split_answer(text, 100)
        assert head + rest == text and (head == "" or rest != "")


def test_parse_refinement_takes_the_last_block():
    assert prompts.parse_refinement("analysis...\n<refine>\nNew paragraph.\n</refine>") == "New paragraph."
    assert prompts.parse_refinement("<refine>cut off by the stop string") == "cut off by the stop string"
    assert prompts.parse_refinement("I will use <refine></refine>. <refine>Real one.</refine>") == "Real one."
    assert prompts.parse_refinement("no tags at all") is None
    # as the reference reads them: an empty block is an empty candidate (not dropped), and an unclosed
    # last block after a closed one reads empty (its slice ends before it starts)
    assert prompts.parse_refinement("<refine>  \n </refine>") == ""
    assert prompts.parse_refinement("<refine>draft</refine> then <refine>unclosed tail") == ""
    assert prompts.parse_refinement("<refine>one</refine> <refine>two</refine> trailing") == "two"


def test_triggers_follow_the_reference_odds():
    # the thinking as the scorer reads it: up to the first </think>, unstripped, a written <think> kept
    assert prompts.parse_initial("Alright", ", the plan.\n</think>\nignored") == "Alright, the plan.\n"
    assert prompts.parse_initial("Alright", " <think> again\n\n</think>a</think>") == "Alright <think> again\n\n"
    assert prompts.parse_initial("Alright", "   ") is None
    rng = random.Random(0)
    picks = Counter(prompts.pick_trigger("en", rng) for _ in range(20000))
    for word, p in prompts.TRIGGERS_EN:
        assert abs(picks[word] / 20000 - p) < 0.015
    assert dict(prompts.TRIGGERS_EN) == {"Okay, I am given": 0.20, "Alright, the user": 0.48, "Alright": 0.32}
    zh = Counter(prompts.pick_trigger("zh", rng) for _ in range(4000))
    assert set(zh) == {"好的", "嗯"} and abs(zh["好的"] / 4000 - 0.5) < 0.03


def test_language_rule_is_any_cjk_ideograph():
    assert prompts.language("Write a poem about the sea") == "en"
    assert prompts.language("Write a poem titled 海 in English") == "zh"  # one ideograph is enough
    assert prompts.language("请写一首诗") == "zh" and prompts.language("请写一首诗", "en") == "en"


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_initial_prompt_has_the_reference_structure(lang):
    system, user = prompts.initial_messages("TASK-X", "SOLUTION-Y", lang)
    assert system == {"role": "system", "content": prompts.DEFAULT_SYSTEM}
    msg = user["content"]
    assert msg.index("TASK-X") < msg.index("SOLUTION-Y")
    outline = "--- Outline (or Draft) ---" if lang == "en" else "--- 提纲（或者草稿） ---"
    needles = {
        "en": ["<think></think>", "First person", "Golden Circle", "AIDA", outline, "`wait`", "Hmm, maybe", "NO PAST"],
        "zh": ["<think></think>", "第一人称", "黄金圈", "AIDA", outline, "嗯，也许"],
    }[lang]
    for needle in needles:
        assert needle in msg, needle
    reflect = "Hmm, maybe" if lang == "en" else "嗯，也许"
    # the requirements come in the reference's order: framework, then reflection, then the ending
    assert msg.index("AIDA") < msg.index(outline) < msg.index(reflect)
    plain = prompts.initial_messages("x", "y", lang, reflection=False)[-1]["content"]
    assert reflect not in plain and outline in plain
    tail = msg[msg.rindex("\n\n") :]
    if lang == "en":
        # English ends: no past tense, monologue without bullets or headings, then write the thinking
        assert tail.index("NO PAST TENSE") < tail.index("bullet points") < tail.index("Now write your thinking")
    else:
        # the reference's Chinese initial prompt ends with one line (brainstorm as an inner monologue,
        # in the tags): no tense or formatting rules, unlike its scorer prompt and the English one
        assert tail.strip() == "现在，想象我正在用内心独白的方式头脑风暴……写在`<think></think>`标签中。"
        assert "过去时" not in msg and "项目符号" not in msg


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_scorer_prompt_is_the_inference_instruction_without_y(lang):
    msgs = prompts.scorer_messages("TASK-X", lang)
    msg = msgs[-1]["content"]
    draft = "--- The Draft ---" if lang == "en" else "--- 草稿 ---"
    assert "TASK-X" in msg and draft in msg and "{solution}" not in msg
    assert prompts.scorer_messages("x", lang, system=None)[0]["role"] == "user"
    if lang == "en":
        # asks for the thinking first, then the tense and monologue rules (the reverse of the initial prompt)
        order = ["Now write your clear, complete and logical thinking", "NO PAST TENSE", "bullet points"]
        assert msg.index(draft) < msg.index(order[0]) < msg.index(order[1]) < msg.index(order[2])
        assert msg.rstrip().endswith("formal section headings.")
        assert "The thinking and the response are one" in msg  # kept, as in the reference's English one
    else:
        # framed as explaining the thinking behind an answer; no "thinking and piece are one" item;
        # record in the tags, no past tense, monologue, then: first time, do not hint at explaining
        head = msg[: msg.index("TASK-X")]
        assert "回答" in head and "讲出背后的思考过程" in head
        assert "思考与作品一致" not in msg and "思考即作品" not in msg
        order = ["格式上", "不要用过去时", "项目符号", "第一次看到这个用户请求", "不要暗示你是在解释"]
        assert [msg.index(o) for o in order] == sorted(msg.index(o) for o in order)
        assert msg.index(draft) < msg.index(order[0])
        assert msg.rstrip().endswith("（不要暗示你是在解释一个已有的回答）。")
        # the initial prompt keeps the numbered "thinking and piece are one" requirement
        assert "2. 思考与作品一致" in prompts.initial_messages("x", "y", "zh")[-1]["content"]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_refine_prompt_marks_the_segment_in_place_and_asks_for_analysis_then_refine(lang):
    msgs = prompts.refine_messages("REQ", "ANS", "PREFIX", "SEGMENT", "SUFFIX", lang)
    msg = msgs[-1]["content"]
    marked = "<replace>\nSEGMENT\n</replace>"
    assert msg.index("REQ") < msg.index("ANS") < msg.index("PREFIX") < msg.index(marked) < msg.index("SUFFIX")
    assert msg.count(marked) == 2  # in place, and again as the only part to refine
    assert msg.index("<analyze></analyze>") < msg.rindex("<refine></refine>")
    prefill = prompts.refine_prefill(lang, True)
    assert prefill.endswith("\n<analyze>\n") and len(prefill) > len("<analyze>\n") + 10
    assert prompts.refine_stop(True) == () and prompts.refine_stop(False) == ("</refine>",)
    assert prompts.refine_prefill(lang, False) == "<refine>\n"
    only = prompts.refine_messages("REQ", "ANS", "", "SEG", "", lang, analysis=False)[-1]["content"]
    assert "<analyze></analyze>" not in only
    # text that looks like a placeholder is never expanded
    odd = prompts.refine_messages("{solution}", "ANS", "", "{after}", "", lang)[-1]["content"]
    assert "{solution}" in odd and "{after}" in odd


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
    z = good_z()
    assert filters.before_search(z, 150, len(segments.split(z)), FC) is None
    assert filters.after_search(z, FC) is None


@pytest.mark.parametrize(
    "z,tokens,reason",
    [
        (None, 150, filters.UNPARSEABLE),
        ("  ", 150, filters.UNPARSEABLE),
        (good_z(), 99, filters.TOO_SHORT),
        (" ".join(f"w{i}" for i in range(150)), 150, filters.SINGLE_SEGMENT),
    ],
)
def test_each_reference_discard_before_search(z, tokens, reason):
    n = len(segments.split(z)) if z else 0
    assert filters.before_search(z, tokens, n, FC) == reason
    assert reason in filters.BEFORE_SEARCH and reason not in filters.QUALITY


@pytest.mark.parametrize(
    "z,reason",
    [
        (good_z() + "\n\nBut wait, the end.", filters.LATE_REFLECTION),
        ("\n\n".join(["the keeper climbs " * 40] * 2), filters.REPETITION),
    ],
)
def test_each_quality_filter_after_search(z, reason):
    assert filters.after_search(z, FC) == reason and reason in filters.QUALITY


# A Chinese planning paragraph (written for this test), then the same trajectory stuck in a loop.
ZH_PLAN = (
    "我先想清楚这篇通知是写给谁的：主要是小区里的住户，他们关心停水的时间、影响的范围和需要提前做的准备。"
    "开头我打算直接说明停水的原因和具体时段，避免大家猜测。接着分楼栋列出影响范围，再提醒大家提前储水。"
    "结尾留下物业的联系电话，语气要诚恳，对给大家带来的不便表示歉意。\n\n"
    "结构上，我准备用三段：原因和时间、范围和准备、联系方式和致歉。每段不要太长，老人也能一眼看懂。"
)


def test_repetition_filter_counts_characters_in_chinese():
    # whitespace finds no words in Chinese: the filter used to see no 3-grams there and never fire
    assert len(ZH_PLAN.split()) < 3
    # a model stuck repeating a short sentence until its token budget ran out (the filter sees loops of
    # up to ~9 units, words in English and characters in Chinese alike: the top three 3-grams then hold
    # over 30 % of all)
    looping = ZH_PLAN + "\n\n" + "然后我写开头。" * 100
    assert filters.top_trigram_share(looping) > FC.max_top3_trigram_share
    assert filters.after_search(looping, FC, "zh") == filters.REPETITION
    assert filters.after_search(ZH_PLAN, FC, "zh") is None
    # units: characters for CJK, whitespace-separated runs elsewhere (English is counted as before)
    assert filters.units("我们 plan it，好 。") == ["我", "们", "plan", "it，", "好", "。"]
    assert filters.top_trigram_share("a b c d a b c") == pytest.approx(4 / 5)


def test_repetition_filter_keeps_real_chinese_text(shared_dir):
    import json

    rows = [json.loads(line) for line in (shared_dir / "benchmarks/writingbench/length_subset.jsonl").open()]
    chinese = [r["query"] for r in rows if prompts.language(r["query"]) == "zh"]
    assert len(chinese) > 50
    assert max(filters.top_trigram_share(t) for t in chinese) < FC.max_top3_trigram_share


def test_late_reflection_uses_the_pairs_language():
    z = "我会先想清楚读者是谁。" * 30 + "等等，结尾呢？"
    assert filters.after_search(z, FC, "zh") == filters.LATE_REFLECTION
    assert filters.after_search(z, FC, "en") is None


def _zh_trajectories() -> list:
    """Chinese think-aloud plans of the shape the Chinese initial prompt asks for (first person: intent
    and reader, content, structure; reflections along the way), written for these tests: the shared
    data has no Chinese trajectory, and WritingBench's queries are requests, not plans."""
    import json

    path = FIXTURES / "data" / "zh_trajectories.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_repetition_filter_on_chinese_thinking_trajectories():
    """The filter as the stage applies it to a final z (the pair's language, the demo's filter
    settings): a whole plan is kept; the same plan whose model got stuck in a short loop of its own
    words until the token budget ran out is discarded for repetition."""
    cfg = compose_typed("+recipe=demo").synthesis.filters
    plans = _zh_trajectories()
    assert len(plans) == 2
    for p in plans:
        lang = prompts.language(p["x"])
        assert lang == "zh" and len(segments.split(p["z"])) >= 2, p["id"]  # searchable: several segments
        assert filters.after_search(p["z"], cfg, lang) is None, (p["id"], filters.top_trigram_share(p["z"]))
        # stuck on its own last words for a few hundred tokens: the filter sees loops of up to ~9 units
        # (characters here), so the loop is the plan's last three characters and a full stop
        tail = p["z"].rstrip("。")[-3:] + "。"
        stuck = p["z"] + "\n\n" + tail * 150
        assert filters.top_trigram_share(stuck) > cfg.max_top3_trigram_share, p["id"]
        assert filters.after_search(stuck, cfg, lang) == filters.REPETITION, p["id"]

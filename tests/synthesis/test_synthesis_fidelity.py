"""Rules of the authors' released synthesis code that no other test pins: sampling defaults, stop
sequences, the chat template's own <think>, and the reverse-query prompt's language (docs/FIDELITY.md)."""

from __future__ import annotations

from deepwriter.config.compose import compose
from deepwriter.config.root import to_typed
from deepwriter.config.synthesis import SynthesisConfig
from deepwriter.llm.base import Generation, TokenLogprobs
from deepwriter.llm.hf import render_prompt
from deepwriter.pairs.queries import query_messages
from deepwriter.synthesis import prompts
from deepwriter.synthesis.schedule import synthesize


def test_full_recipe_search_settings_are_the_references():
    s = to_typed(compose(["+recipe=full"])).synthesis
    assert (s.max_steps, s.num_candidates, s.stop_threshold, s.clip_min, s.clip_max) == (10, 2, 0.25, -2.0, 0.0)
    for sampling in (s.initial, s.refine):  # config.yaml: temperature 0.8, top_p 0.85, max_tokens 8000, no top_k
        assert (sampling.temperature, sampling.top_p, sampling.max_new_tokens) == (0.8, 0.85, 8000)
    assert s.min_segment_chars == 100 and s.filters.min_think_tokens == 100
    assert s.system_prompt == prompts.DEFAULT_SYSTEM == "You are a helpful assistant."
    assert s.language == "auto" and s.refine_analysis is True and s.score_answer_from_second_segment is True


class _Recorder:
    model_id = "rec"

    def __init__(self):
        self.samplings = []

    def generate(self, prompts_, sampling, n=1, prefill=None, seeds=None):
        self.samplings.append(sampling)
        if prefill[0].startswith("<think>"):
            body = "\n\n".join(["I will plan the letter with care, paragraph by paragraph, for the reader. " * 2] * 3)
            return [[Generation(" " + body + "\n</think>", 10, 120)]]
        return [[Generation("<analyze>x</analyze><refine>New.</refine>", 10, 5) for _ in range(n)]]


class _Flat:
    model_id = "flat"

    def score(self, requests):
        return [TokenLogprobs(["t"], [-1.0]) for _ in requests]


def test_z0_stops_at_the_think_close_and_analysed_rewrites_run_to_their_end():
    gen = _Recorder()
    synthesize("p", "Write a letter.", "A letter.", gen, _Flat(), SynthesisConfig(max_steps=1))
    assert gen.samplings[0].stop == ("</think>",)  # the answer after </think> is never used
    assert gen.samplings[1].stop == ()  # the last <refine> block is taken, as the reference does
    gen = _Recorder()
    synthesize("p", "Write a letter.", "A letter.", gen, _Flat(), SynthesisConfig(max_steps=1, refine_analysis=False))
    assert gen.samplings[1].stop == ("</refine>",)


class _ThinkingTemplate:
    """A tokenizer whose chat template opens the think block itself (as R1-style templates do)."""

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>\n<think>\n"


def test_a_templates_own_think_opening_is_cut_before_the_prefix():
    text = render_prompt(_ThinkingTemplate(), [{"role": "user", "content": "hi"}], "<think>\nAlright")
    assert text == "<user>hi<assistant>\n<think>\nAlright" and text.count("<think>") == 1


def test_reverse_query_prompt_follows_the_answers_language():
    en = query_messages("The sea was calm that morning. " * 20, 1000)[0]["content"]
    zh = query_messages("那天早上海面很平静。" * 20, 1000)[0]["content"]
    assert "Write the message the user most plausibly sent" in en and "约 200 字" in zh
    assert "那天早上海面很平静。" in zh and "用户" in zh
    cut = query_messages("海" * 50, 10)[0]["content"]
    assert "海" * 10 + " [...]" in cut and "海" * 11 not in cut


def test_an_answer_without_think_is_taken_as_it_is(tmp_path):
    # REER synthesize.py: a solution without </think> is y unchanged (not even stripped); with one, y is
    # what follows the last </think>, stripped
    import json

    from deepwriter.config.data import SourceConfig
    from deepwriter.pairs.read import load_pairs

    f = tmp_path / "ref.json"
    rows = [{"index": 0, "question": "q", "solution": "  Rain on the roof.\n\n"}]
    rows.append({"index": 1, "question": "q", "solution": "<think>plan</think>\n\n  Rain.  \n"})
    f.write_text(json.dumps(rows))
    src = SourceConfig(name="ref", path=str(f), fields={"id": "index", "x": "question", "y": "solution"})
    pairs, _ = load_pairs(src, strict=True)
    assert [p.y for p in pairs] == ["  Rain on the roof.\n\n", "Rain."]

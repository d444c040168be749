"""The REER search over small scripted Generator/Scorer objects: acceptance, stopping, ablations."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Callable, List

import pytest

from deepwriter.config.synthesis import SynthesisConfig
from deepwriter.llm.base import Generation, ScoreRequest, TokenLogprobs
from deepwriter.synthesis import filters, prompts
from deepwriter.synthesis.schedule import run_pairs, synthesize
from deepwriter.synthesis.search import pair_seed

PARA = (
    "I want the opening to place the reader inside the lighthouse at dusk, with the salt on the glass and the "
    "lamp turning, so the strangeness arrives slowly. {tag}"
)
Z0_BODY = " " + "\n\n".join(PARA.format(tag=f"Part {i} of the plan, word{i} here.") for i in range(5))
Y = "The Title\n\nThe light began answering on a Tuesday. Mara climbed the steps.\n\nShe waited."


class ScriptedGenerator:
    model_id = "fake-gen"

    def __init__(self, initial: str = Z0_BODY, rewrites: List[List[str]] = ()):
        self.initial = initial
        self.rewrites = list(rewrites)
        self.calls = []

    def generate(self, prompts_, sampling, n=1, prefill=None, seeds=None):
        self.calls.append({"n": n, "prefill": prefill, "seed": sampling.seed, "messages": prompts_})
        if prefill and prefill[0].startswith("<think>"):
            return [[Generation(self.initial + "\n</think>", 10, len(self.initial.split()))] for _ in prompts_]
        texts = self.rewrites.pop(0) if self.rewrites else ["no tags here"] * n
        assert len(texts) == n
        return [[Generation(t, 10, 5) for t in texts]]


class FunctionScorer:
    """Score = fn(assistant_prefix): every target token gets log-prob -score (so the clipped mean NLL
    is exactly the score for scores in [0, 2])."""

    model_id = "fake-scorer"

    def __init__(self, fn: Callable[[str], float]):
        self.fn = fn
        self.batches: List[List[ScoreRequest]] = []

    def score(self, requests):
        self.batches.append(list(requests))
        return [TokenLogprobs(tokens=["t"] * 4, logprobs=[-self.fn(r.assistant_prefix)] * 4) for r in requests]


def tagged(text: str) -> str:
    return f"The paragraph should set the scene. <refine>{text}</refine>"


def by_markers(base: float = 1.0) -> Callable[[str], float]:
    """Each BETTER lowers the score by 0.2, each SAME changes nothing."""
    return lambda prefix: round(base - 0.2 * prefix.count("BETTER"), 6)


def cfg(**kw) -> SynthesisConfig:
    c = SynthesisConfig(min_segment_chars=100, num_candidates=2, max_steps=10, stop_threshold=0.25)
    return replace(c, **kw)


def test_stops_before_refinement_when_z0_is_below_threshold():
    gen, sc = ScriptedGenerator(), FunctionScorer(lambda p: 0.1)
    rec = synthesize("p1", "Write a story.", Y, gen, sc, cfg())
    assert rec["scores"] == [pytest.approx(0.1)]
    assert len(gen.calls) == 1 and rec["steps"] == []
    assert rec["z_final"] == rec["z0"]


def test_a_visited_trajectory_is_its_segments_rejoined_even_without_an_accepted_edit():
    """S41: once refinement ran, the reference writes the segments (stripped) as its corrected
    thinking, rejoined here with blank lines; z0 as written stays only when no segment was visited."""
    z0 = " " + "\n\n\n".join(PARA.format(tag=f"Part {i}.") for i in range(5)) + "  "  # extra blank lines
    gen, sc = (
        ScriptedGenerator(initial=z0, rewrites=[[tagged("SAME"), tagged("SAME")]] * 5),
        FunctionScorer(by_markers()),
    )
    rec = synthesize("p1", "Write a story.", Y, gen, sc, cfg())
    assert rec["accepted_edits"] == [] and len(rec["steps"]) == 5
    assert "\n\n\n" in rec["z0"] and rec["z_final"] == rec["z0"].replace("\n\n\n", "\n\n")


def test_accepts_only_strictly_lower_and_splices_in_place():
    rewrites = [
        [tagged("SAME paragraph one, long enough."), tagged("SAME other")],  # tie: keep
        [tagged("BETTER paragraph two"), tagged("SAME")],  # lower: accept the BETTER one
        [tagged("SAME"), tagged("SAME again")],  # tie with the new best: keep
    ]
    gen, sc = ScriptedGenerator(rewrites=rewrites), FunctionScorer(by_markers(1.0))
    rec = synthesize("p1", "Write a story.", Y, gen, sc, cfg(max_steps=3))
    assert rec["scores"] == pytest.approx([1.0, 1.0, 0.8, 0.8])
    assert [s["accepted"] for s in rec["steps"]] == [False, True, False]
    assert len(rec["accepted_edits"]) == 1 and rec["accepted_edits"][0]["segment"] == 1
    paras = rec["z_final"].split("\n\n")
    assert paras[1] == "BETTER paragraph two" and "word0" in paras[0] and "word2" in paras[2]
    # each candidate is recorded with its score
    assert [c["score"] for c in rec["steps"][1]["candidates"]] == pytest.approx([0.8, 1.0])


def test_k_candidates_come_from_one_generate_call_and_one_scorer_call():
    rewrites = [[tagged(f"SAME {k}") for k in range(3)]]
    gen, sc = ScriptedGenerator(rewrites=rewrites), FunctionScorer(by_markers())
    synthesize("p1", "x", Y, gen, sc, cfg(max_steps=1, num_candidates=3))
    assert [c["n"] for c in gen.calls] == [1, 3] and gen.calls[1]["prefill"] == [prompts.refine_prefill("en", True)]
    assert [len(b) for b in sc.batches] == [1, 3]


def test_max_steps_bounds_the_search():
    gen, sc = ScriptedGenerator(rewrites=[[tagged("SAME"), tagged("SAME")]] * 10), FunctionScorer(by_markers())
    rec = synthesize("p1", "x", Y, gen, sc, cfg(max_steps=2))
    assert len(rec["steps"]) == 2 and len(rec["scores"]) == 3


def test_search_visits_each_segment_once_left_to_right():
    gen, sc = ScriptedGenerator(rewrites=[[tagged("SAME"), tagged("SAME")]] * 10), FunctionScorer(by_markers())
    rec = synthesize("p1", "x", Y, gen, sc, cfg(max_steps=10))
    assert [s["segment"] for s in rec["steps"]] == [0, 1, 2, 3, 4]


def test_stops_once_the_threshold_is_crossed():
    rewrites = [[tagged("BETTER BETTER BETTER BETTER"), tagged("SAME")]] + [[tagged("BETTER"), tagged("SAME")]] * 5
    gen, sc = ScriptedGenerator(rewrites=rewrites), FunctionScorer(by_markers(1.0))
    rec = synthesize("p1", "x", Y, gen, sc, cfg(stop_threshold=0.25))
    assert rec["scores"] == pytest.approx([1.0, 0.2])
    assert len(rec["steps"]) == 1


def test_search_false_keeps_z0_but_scores_it():
    gen, sc = ScriptedGenerator(rewrites=[[tagged("BETTER"), tagged("BETTER")]]), FunctionScorer(by_markers())
    rec = synthesize("p1", "x", Y, gen, sc, cfg(search=False))
    assert rec["z_final"] == rec["z0"] and rec["scores"] == pytest.approx([1.0])
    assert len(gen.calls) == 1 and rec["verdict"]["kept"] is True


def test_unparseable_candidates_use_a_step_and_change_nothing():
    gen, sc = ScriptedGenerator(rewrites=[["no tag", "</refine> only a closing tag"]]), FunctionScorer(by_markers())
    rec = synthesize("p1", "x", Y, gen, sc, cfg(max_steps=1))
    assert rec["steps"][0]["accepted"] is False
    assert all(c["text"] is None and c["score"] is None for c in rec["steps"][0]["candidates"])
    assert rec["z_final"] == rec["z0"] and len(sc.batches) == 1


def test_an_empty_rewrite_is_a_candidate_and_can_be_accepted():
    # the reference keeps "<refine></refine>" as a candidate: scored like any other, it wins when the
    # trajectory without the segment makes y likelier (here: the scorer prefers fewer "word1")
    gen = ScriptedGenerator(rewrites=[[tagged("SAME"), tagged("SAME")], ["<refine></refine>", tagged("SAME")]])
    sc = FunctionScorer(lambda p: 1.0 - 0.3 * ("word1" not in p))
    rec = synthesize("p1", "x", Y, gen, sc, cfg(max_steps=2))
    cands = rec["steps"][1]["candidates"]
    assert cands[0]["text"] == "" and cands[0]["score"] == pytest.approx(0.7) and rec["steps"][1]["accepted"]
    segs = rec["z0"].split("\n\n")
    # the candidate as the reference composes it: the empty segment leaves its blank lines
    scored = sc.batches[2][0].assistant_prefix
    assert f"{segs[0]}\n\n\n\n{segs[2]}" in scored
    assert rec["z_final"] == "\n\n".join([segs[0], ""] + segs[2:])
    assert rec["accepted_edits"][0]["after"] == ""


def test_a_scorer_reply_without_log_probs_leaves_the_pair_unfinished():
    # the reference scores such a reply 1000 (the candidate can never win); ours is no verdict
    from deepwriter.synthesis.search import UnfinishedPair

    class Empty:
        model_id = "empty"

        def score(self, requests):
            return [TokenLogprobs() for _ in requests]

    rec = synthesize("p1", "x", Y, ScriptedGenerator(), Empty(), cfg())
    assert isinstance(rec, UnfinishedPair) and "no log-probs" in rec.error


@pytest.mark.parametrize("lang_x", ["Write a story.", "写一个故事。"])
def test_rewrites_are_prefilled_without_a_wait_trigger(lang_x):
    # the reference draws "Wait" / "But wait" / "Meanwhile" (等等我再想想) per step, but only code that is
    # commented out uses it: every rewrite turn is prefilled with the opening line and <analyze> alone
    rewrites = [[tagged("SAME"), tagged("SAME")]] * 3
    gen = ScriptedGenerator(rewrites=rewrites)
    rec = synthesize("p1", lang_x, Y, gen, FunctionScorer(by_markers()), cfg(max_steps=3))
    prefills = [c["prefill"][0] for c in gen.calls[1:]]
    assert len(prefills) == 3 and set(prefills) == {prompts.refine_prefill(rec["language"], True)}
    assert not any(w in p for p in prefills for w in ("Wait", "Meanwhile", "等等我再想想"))


def test_unparseable_initial_output_is_discarded_with_reason():
    gen, sc = ScriptedGenerator(initial="   "), FunctionScorer(by_markers())
    rec = synthesize("p1", "x", Y, gen, sc, cfg())
    assert rec["verdict"] == {"kept": False, "reason": filters.UNPARSEABLE}
    assert sc.batches == []


def test_empty_answer_is_discarded_without_generating():
    gen, sc = ScriptedGenerator(), FunctionScorer(by_markers())
    rec = synthesize("p1", "x", "  \n", gen, sc, cfg())
    assert rec["verdict"]["reason"] == filters.EMPTY_ANSWER and gen.calls == []


class FailingAt:
    """Wraps a generator and a scorer; the call numbered `fail_call` (0-based, generate and score
    calls counted together) comes back failed for the request at `index` only, as an HTTP backend
    returns a request it gave up on."""

    def __init__(self, gen, scorer, fail_call: int, index: int = 0):
        self.gen, self.scorer, self.fail_call, self.index, self.n = gen, scorer, fail_call, index, 0
        self.model_id = "fake"

    def _failing(self) -> bool:
        self.n += 1
        return self.n - 1 == self.fail_call

    def generate(self, prompts_, sampling, n=1, prefill=None, seeds=None):
        out = self.gen.generate(prompts_, sampling, n=n, prefill=prefill)
        if self._failing():
            out[0][self.index] = Generation("", finish_reason="error", error="HTTP 503 after 7 attempts")
        return out

    def score(self, requests):
        out = self.scorer.score(requests)
        if self._failing():
            out[self.index] = TokenLogprobs(error="ConnectError after 7 attempts")
        return out


@pytest.mark.parametrize(
    "fail_call,index,where",
    [
        (0, 0, "generator"),  # the initial trajectory
        (1, 0, "scorer"),  # z0's score
        (2, 1, "generator"),  # the second rewrite candidate of step 1
        (3, 1, "scorer"),  # the second candidate's score of step 1
    ],
)
def test_a_failed_call_leaves_the_pair_unfinished_never_a_verdict(fail_call, index, where):
    from deepwriter.synthesis.search import UnfinishedPair

    rewrites = [[tagged(PARA.format(tag="BETTER one")), tagged(PARA.format(tag="BETTER BETTER two"))]] * 3
    both = FailingAt(ScriptedGenerator(rewrites=rewrites), FunctionScorer(by_markers()), fail_call, index)
    rec = synthesize("p1", "x", Y, both, both, cfg())
    assert isinstance(rec, UnfinishedPair) and rec.id == "p1"
    assert rec.error.startswith(where + ":") and "after 7 attempts" in rec.error
    # the same pair with healthy backends gives a record (the failure was the only difference)
    healthy = FailingAt(ScriptedGenerator(rewrites=rewrites), FunctionScorer(by_markers()), fail_call=-1)
    assert synthesize("p1", "x", Y, healthy, healthy, cfg())["verdict"]["kept"] in (True, False)


def test_one_unfinished_pair_leaves_its_batch_mates_untouched():
    from deepwriter.synthesis.search import UnfinishedPair

    class FailFor:  # fails every score request of pair "bad" (its x is "bad request")
        model_id = "s"

        def __init__(self):
            self.inner = FunctionScorer(lambda p: 0.1)

        def score(self, requests):
            out = self.inner.score(requests)
            return [
                TokenLogprobs(error="timeout") if "bad request" in r.messages[-1]["content"] else o
                for r, o in zip(requests, out)
            ]

    out = list(
        run_pairs(
            [("good", "good request", Y, None), ("bad", "bad request", Y, None)], ScriptedGenerator(), FailFor(), cfg()
        )
    )
    by = {(o.id if isinstance(o, UnfinishedPair) else o["id"]): o for o in out}
    assert isinstance(by["bad"], UnfinishedPair) and by["bad"].error == "scorer: timeout"
    assert by["good"]["scores"] == [pytest.approx(0.1)]


P1 = "The light began answering on a Tuesday, three knocks on the lamp glass, and Mara climbed the steps to see."
P2 = "Nobody else in the village had heard it, and by the time she reached the gallery the sea had gone quiet."
Y_LONG = f"The Title\n\n{P1}\n\n{P2}\n\nShe waited."


def test_scorer_context_is_the_reference_layout_with_ys_first_segment():
    sc = FunctionScorer(lambda p: 0.1)
    rec = synthesize("p1", "Write a story.", Y_LONG, ScriptedGenerator(), sc, cfg())
    req = sc.batches[0][0]
    # z0 is scored as written (the generator's line break before </think> kept, so "\n\n</think>"); the
    # short title line is carried into the first segment, which joins the context; </answer> follows y
    assert rec["z0_scored"] == rec["z0"] + "\n" and rec["z0"] == rec["z0"].strip()
    assert req.assistant_prefix == f"<think>\n{rec['z0']}\n\n</think>\n<answer>\nThe Title\n\n{P1}"
    assert req.target == f"\n\n{P2}\n\nShe waited." and req.suffix == "\n</answer>"
    system, user = req.messages
    assert system == {"role": "system", "content": prompts.DEFAULT_SYSTEM}
    assert "Write a story." in user["content"] and P1 not in user["content"] and "--- The Draft ---" in user["content"]
    sc2 = FunctionScorer(lambda p: 0.1)
    synthesize("p1", "Write a story.", Y_LONG, ScriptedGenerator(), sc2, cfg(score_answer_from_second_segment=False))
    assert sc2.batches[0][0].target == Y_LONG and sc2.batches[0][0].assistant_prefix.endswith("</think>\n<answer>\n")


def test_answer_of_one_segment_is_scored_whole():
    # Y has no chunk of 100 characters: one segment, on blank lines and on lines alike
    for y in ("Just one paragraph.", Y):
        sc = FunctionScorer(lambda p: 0.1)
        synthesize("p1", "x", y, ScriptedGenerator(), sc, cfg())
        assert sc.batches[0][0].target == y and sc.batches[0][0].assistant_prefix.endswith("<answer>\n")


def test_system_prompt_is_a_config_value():
    gen, sc = ScriptedGenerator(), FunctionScorer(lambda p: 0.1)
    synthesize("p1", "x", Y, gen, sc, cfg(system_prompt=None))
    assert [m["role"] for m in gen.calls[0]["messages"][0]] == ["user"]
    assert [m["role"] for m in sc.batches[0][0].messages] == ["user"]
    gen = ScriptedGenerator()
    synthesize("p1", "x", Y, gen, FunctionScorer(lambda p: 0.1), cfg(system_prompt="Be brief."))
    assert gen.calls[0]["messages"][0][0] == {"role": "system", "content": "Be brief."}


def test_chinese_request_gets_chinese_prompts_trigger_and_scorer_context():
    gen, sc = ScriptedGenerator(), FunctionScorer(lambda p: 0.1)
    rec = synthesize("p1", "Write a poem about 海.", Y, gen, sc, cfg())
    assert rec["language"] == "zh" and rec["trigger"] in dict(prompts.TRIGGERS_ZH)
    assert gen.calls[0]["prefill"] == ["<think>\n" + rec["trigger"]]
    assert "用户请求" in gen.calls[0]["messages"][0][-1]["content"]
    assert "用户请求" in sc.batches[0][0].messages[-1]["content"]
    forced = synthesize(
        "p1", "Write a poem about 海.", Y, ScriptedGenerator(), FunctionScorer(lambda p: 0.1), cfg(language="en")
    )
    assert forced["language"] == "en" and forced["trigger"] in dict(prompts.TRIGGERS_EN)


def test_seeds_are_reproducible_and_per_pair():
    assert pair_seed(0, "a") == pair_seed(0, "a")
    assert pair_seed(0, "a") != pair_seed(0, "b") and pair_seed(0, "a") != pair_seed(1, "a")
    runs = []
    for _ in range(2):
        gen = ScriptedGenerator(rewrites=[[tagged("SAME"), tagged("SAME")]])
        rec = synthesize("p1", "x", Y, gen, FunctionScorer(by_markers()), cfg(max_steps=1))
        runs.append(([c["seed"] for c in gen.calls], rec["trigger"], rec["seed"]))
    assert runs[0] == runs[1]
    assert runs[0][1] in dict(prompts.TRIGGERS_EN)


def test_z0_starts_with_the_trigger_and_record_has_required_fields():
    rec = synthesize("p1", "x", Y, ScriptedGenerator(), FunctionScorer(lambda p: 0.1), cfg())
    assert rec["z0"].startswith(rec["trigger"])
    for key in (
        "id",
        "x",
        "y",
        "z0",
        "z_final",
        "category",
        "scores",
        "verdict",
        "steps",
        "accepted_edits",
        "tokens",
        "timings",
        "models",
        "seed",
        "perplexities",
    ):
        assert key in rec
    assert rec["perplexities"][0] == pytest.approx(2.718281828**0.1)
    assert rec["models"] == {"generator": "fake-gen", "scorer": "fake-scorer"}


def test_reflection_false_strips_phrases_from_trajectories():
    body = " " + "\n\n".join(PARA.format(tag=f"Hmm, maybe part {i} works.") for i in range(3))
    rec = synthesize(
        "p1", "x", Y, ScriptedGenerator(initial=body), FunctionScorer(lambda p: 0.1), cfg(reflection=False)
    )
    assert "Hmm" not in rec["z0"] and "Maybe part 1 works." in rec["z0"]
    gen = ScriptedGenerator(initial=body)
    synthesize("p1", "x", Y, gen, FunctionScorer(lambda p: 0.1), cfg(reflection=False))
    assert "Hmm, maybe" not in gen.calls[0]["messages"][0][-1]["content"]


def test_refine_without_analysis_prefills_the_tag_and_parses_the_continuation():
    gen = ScriptedGenerator(rewrites=[["BETTER plain text, no closing tag", "SAME</refine> trailing"]])
    rec = synthesize("p1", "x", Y, gen, FunctionScorer(by_markers()), cfg(max_steps=1, refine_analysis=False))
    assert gen.calls[1]["prefill"] == ["<refine>\n"]
    assert [c["text"] for c in rec["steps"][0]["candidates"]] == ["BETTER plain text, no closing tag", "SAME"]
    assert rec["steps"][0]["accepted"] is True


class BatchGenerator:
    """Answers any number of prompts per call; the rewrite depends only on the prompt, so batched
    and one-by-one searches must give the same records."""

    model_id = "batch-gen"

    def __init__(self):
        self.calls = []

    def generate(self, prompts_, sampling, n=1, prefill=None, seeds=None):
        self.calls.append(len(prompts_))
        out = []
        for msgs, pre in zip(prompts_, prefill or [""] * len(prompts_)):
            if pre.startswith("<think>"):
                out.append([Generation(Z0_BODY + "\n</think>", 10, len(Z0_BODY.split()))])
            else:
                segment = re.search(r"<replace>.*?Part (\d) of the plan", msgs[-1]["content"], re.S)
                tag = "BETTER" if segment and int(segment.group(1)) % 2 == 0 else "SAME"
                out.append([Generation(tagged(f"{tag} rewrite {k} of the part."), 10, 5) for k in range(n)])
        return out


def test_lockstep_batches_merge_calls_and_match_one_by_one():
    cfg = replace(SynthesisConfig(), max_steps=3, stop_threshold=0.0, schedule="lockstep")
    pairs = [(f"p{i}", f"Write story {i}.", Y, None) for i in range(3)]
    one_gen, one_scorer = BatchGenerator(), FunctionScorer(by_markers())
    singles = [synthesize(pid, x, y, one_gen, one_scorer, cfg) for pid, x, y, _ in pairs]
    many_gen, many_scorer = BatchGenerator(), FunctionScorer(by_markers())
    batched = {r["id"]: r for r in run_pairs(pairs, many_gen, many_scorer, cfg)}
    assert set(batched) == {"p0", "p1", "p2"}
    for single in singles:
        b = batched[single["id"]]
        assert (b["z0"], b["z_final"], b["scores"], b["verdict"]) == (
            single["z0"],
            single["z_final"],
            single["scores"],
            single["verdict"],
        )
    assert max(one_gen.calls) == 1
    assert max(many_gen.calls) == 3 and len(many_gen.calls) == len(one_gen.calls) // 3
    assert len(many_scorer.batches) == len(one_scorer.batches) // 3
    assert all(r["timings"]["generate_s"] > 0 and r["timings"]["score_s"] > 0 for r in batched.values())

"""Reverse query synthesis, category labelling, quotas and prepare_pairs (mechanics: fake backends
with controlled outputs, and the tiny random model for the real transformers path)."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from deepwriter.config.data import LabelConfig, LongTextConfig, QueryConfig, QuotaConfig, SourceConfig
from deepwriter.llm.base import Generation, TokenLogprobs
from deepwriter.pairs.categories import (
    UNLABELLED,
    apply_quotas,
    flat_labels,
    label_with_generator,
    label_with_scorer,
    map_reply,
)
from deepwriter.pairs.prepare import LABELS, QUERIES, prepare_pairs
from deepwriter.pairs.queries import clean_query, copied_span, query_messages, rejection, synthesize_queries
from deepwriter.pairs.read import load_pairs
from deepwriter.testing.repo import FIXTURES, compose_typed

FIX = FIXTURES / "data" / "sources"
TAXONOMY = compose_typed().data.taxonomy
LABELS_25 = flat_labels(TAXONOMY)
ANSWER = (
    "The toll house stood where the salt road bent away from the river, and Ada Pell had kept its "
    "ledger for eleven winters without missing a single cart."
)


class ScriptedGenerator:
    """Replies from a script (one list per call), recording every call."""

    model_id = "scripted"

    def __init__(self, script=None, reply=None):
        self.script = list(script or [])
        self.reply = reply
        self.calls = []

    def generate(self, prompts, sampling, n=1, prefill=None, seeds=None):
        self.calls.append((len(prompts), n, sampling.seed))
        if self.reply is not None:
            return [[self.reply(p[0]["content"], j, sampling) for j in range(n)] for p in prompts]
        texts = self.script.pop(0)
        return [
            [texts.pop(0) if isinstance(texts[0], Generation) else Generation(texts.pop(0)) for _ in range(n)]
            for _ in prompts
        ]


class LabelScorer:
    """Log-prob -v for every token of label L, where v comes from `values` (missing: -5)."""

    model_id = "fake-scorer"

    def __init__(self, values, by_text=None):
        self.values, self.by_text = values, by_text or {}
        self.requests = []

    def score(self, requests):
        self.requests += requests
        out = []
        for r in requests:
            values = self.values
            for key, vals in self.by_text.items():
                if key in r.messages[0]["content"]:
                    values = vals
            toks = r.target.split()
            out.append(TokenLogprobs(tokens=toks, logprobs=[values.get(r.target, -5.0)] * len(toks)))
        return out


def polite_request(content, j, sampling):
    n = len(re.search(r"<text>\n(.*)\n</text>", content, re.S).group(1).split())
    return Generation(
        f'Request: "Please write a quiet literary passage for adult readers, about {n} words, '
        f'version {j} with seed {sampling.seed % 97}."'
    )


# --- reverse queries ---------------------------------------------------------------------------


def test_clean_query_strips_labels_quotes_and_preambles():
    cases = {
        "Request: Write a poem about rain.": "Write a poem about rain.",
        '**Request:** "Write a poem about rain."': "Write a poem about rain.",
        "Sure! Here is a plausible request:\n\nWrite a blog post for parents.": "Write a blog post for parents.",
        "\u201cWrite an essay on libraries.\u201d": "Write an essay on libraries.",
        "<request>Write a story</request>": "Write a story",
        "```\nWrite a memo.\n```": "Write a memo.",
        'Write "Rain", a poem in four stanzas.': 'Write "Rain", a poem in four stanzas.',
        "User's message: Draft a letter to my landlord.": "Draft a letter to my landlord.",
        '  ""  ': "",
    }
    for raw, want in cases.items():
        assert clean_query(raw) == want, raw


def test_rejection_reasons():
    cfg = QueryConfig(min_words=5, copy_ngram=8)
    ok = "Write a short literary opening about a toll-house keeper and her ledger, around 30 words."
    assert rejection(ok, ANSWER, cfg, []) is None
    copy = "Write about how the salt road bent away from the river, and Ada Pell had kept it."
    assert copied_span(copy, ANSWER, 8) == "the salt road bent away from the river"
    assert rejection(copy, ANSWER, cfg, []) == "copies_answer"
    assert rejection("", ANSWER, cfg, []) == "empty"
    assert rejection("Write a story.", ANSWER, cfg, []) == "too_short"
    assert rejection(ok, ANSWER, cfg, [], finish_reason="length") == "truncated"
    assert rejection(ok.upper() + "  ", ANSWER, cfg, [ok]) == "duplicate"
    long = " ".join([ANSWER] * 20)  # 560 words
    prompt = query_messages(long, max_answer_words=50)[0]["content"]
    assert "[...]" in prompt and "roughly 550 words" in prompt
    assert len(prompt.split("<text>")[1].split("</text>")[0].split()) == 51


def test_synthesize_queries_retries_rejections_and_counts_them():
    gen = ScriptedGenerator(
        script=[
            # round 1: both answers, 2 requests each
            [
                "Request: Write a fable about a patient toll keeper for children, 100 words.",
                "Write a fable about a patient toll keeper for children, 100 words.",  # duplicate
                "",
                "the salt road bent away from the river, and Ada Pell had kept its ledger",
            ],
            # round 2: "a" misses one request, "b" two: one call per count
            ["Now a brisk ghost story for teenagers set at a toll gate, 150 words."],
            ["Write.", "A letter from Ada to her grandmother about the ledger, warm in tone."],
            # round 3: only "b" is still short
            ["A reply from the grandmother to Ada, equally warm, about 120 words."],
        ]
    )
    cfg = QueryConfig(queries_per_answer=2, max_attempts=3, min_words=5, copy_ngram=8, batch_size=4, seed=7)
    outs = synthesize_queries([("a", ANSWER), ("b", ANSWER)], gen, cfg)
    assert outs[0].queries == [
        "Write a fable about a patient toll keeper for children, 100 words.",
        "Now a brisk ghost story for teenagers set at a toll gate, 150 words.",
    ]
    assert outs[0].rejected == {"duplicate": 1} and outs[0].attempts == 2
    assert outs[1].queries == [
        "A letter from Ada to her grandmother about the ledger, warm in tone.",
        "A reply from the grandmother to Ada, equally warm, about 120 words.",
    ]
    assert outs[1].rejected == {"empty": 1, "copies_answer": 1, "too_short": 1} and outs[1].attempts == 3
    assert [(p, n) for p, n, _ in gen.calls] == [(2, 2), (1, 1), (1, 2), (1, 1)]
    assert len({s for _, _, s in gen.calls}) == 4
    assert not gen.script  # every scripted reply was used


def test_seeded_queries_with_the_tiny_model_are_reproducible(tiny_model):
    from deepwriter.llm.hf import TransformersGenerator

    model, tok = tiny_model
    gen = TransformersGenerator(model, tok, "tiny-qwen3", batch_size=4)
    cfg = QueryConfig(
        queries_per_answer=2,
        max_attempts=1,
        max_new_tokens=12,
        min_words=1,
        copy_ngram=50,
        batch_size=2,
        seed=3,
        temperature=1.0,
        top_p=1.0,
    )
    answers = [("a", ANSWER), ("b", "A different answer about the marsh and the rain over it.")]
    first = [o.to_json() for o in synthesize_queries(answers, gen, cfg)]
    again = [o.to_json() for o in synthesize_queries(answers, gen, cfg)]
    other = [o.to_json() for o in synthesize_queries(answers, gen, dataclasses.replace(cfg, seed=4))]
    assert first == again
    assert first != other
    for o in first:  # nonsense text, but every draw is either accepted or rejected with a reason
        assert len(o["queries"]) + sum(o["rejected"].values()) == 2


# --- labelling ---------------------------------------------------------------------------------


def test_scorer_labeller_takes_the_highest_mean_logprob():
    labels = ["poetry & lyrics", "academic paper", "legal analysis"]
    # "academic paper": 2 tokens at -0.6 (sum -1.2, mean -0.6); "poetry & lyrics": 3 tokens at -0.5
    # (sum -1.5, mean -0.5). The mean decides, not the sum.
    scorer = LabelScorer(
        {"poetry & lyrics": -0.5, "academic paper": -0.6, "legal analysis": -3.0},
        by_text={"contract": {"legal analysis": -0.1}},
    )
    got = label_with_scorer(
        [("", "Roses in the rain."), ("Review this contract.", "Clause 4 is void.")],
        scorer,
        labels,
        LabelConfig(batch_size=8, max_text_words=50),
    )
    assert [r.category for r in got] == ["poetry & lyrics", "legal analysis"]
    assert got[0].detail["top"][0] == ["poetry & lyrics", -0.5]
    assert len(scorer.requests) == 6 and {r.target for r in scorer.requests} == set(labels)
    # All requests of one text share the prompt (prefix-caching scorers reuse it).
    assert len({r.messages[0]["content"] for r in scorer.requests[:3]}) == 1


def test_scorer_labeller_always_answers_from_the_set_with_the_tiny_model(tiny_model):
    from deepwriter.llm.hf import TransformersScorer

    model, tok = tiny_model
    scorer = TransformersScorer(model, tok, "tiny-qwen3")
    labels = LABELS_25[::5]  # five labels keep the random model's prompts short
    items = [("", ANSWER), ("Write a limerick.", "There once was a clerk from the marsh."), ("", "zzz " * 30)]
    got = label_with_scorer(items, scorer, labels, LabelConfig(batch_size=2, max_text_words=12))
    assert len(got) == 3 and all(r.category in labels for r in got)
    for r in got:  # the winner is the best of the scored labels
        assert r.detail["top"][0][0] == r.category and r.detail["top"][0][1] >= r.detail["top"][1][1]
    again = label_with_scorer(items[:2], scorer, labels, LabelConfig(batch_size=1, max_text_words=12))
    assert [r.category for r in got[:2]] == [r.category for r in again]


def test_reply_mapping_onto_the_label_set():
    assert map_reply("poetry & lyrics", LABELS_25) == "poetry & lyrics"
    assert map_reply("Category: Poetry & Lyrics.", LABELS_25) == "poetry & lyrics"
    assert map_reply('  "ACADEMIC PAPER" ', LABELS_25) == "academic paper"
    assert map_reply("I think it is poetry", LABELS_25) == "poetry & lyrics"
    assert map_reply("a literature review of sorts", LABELS_25) == "literature review"
    assert map_reply("legal", LABELS_25) is None  # legal documents vs legal analysis: a tie
    assert map_reply("banana bread", LABELS_25) is None
    assert map_reply("", LABELS_25) is None


def test_generator_labeller_counts_unmappable_replies():
    gen = ScriptedGenerator(script=[["Travel & Lifestyle", "no idea, sorry"]])
    got = label_with_generator([("", "a"), ("", "b")], gen, LABELS_25, LabelConfig(batch_size=8))
    assert [r.category for r in got] == ["travel & lifestyle", None]
    assert got[1].detail["reply"] == "no idea, sorry"


# --- quotas ------------------------------------------------------------------------------------


def _items(counts):
    return [(f"{c}-{i}", c) for c, n in counts.items() for i in range(n)]


def test_max_per_category_is_a_seeded_draw_in_input_order():
    items = _items({"a": 10, "b": 3})
    kept, targets = apply_quotas(items, QuotaConfig(max_per_category=4, seed=1))
    assert targets == {"a": 4, "b": 3}
    assert [i for i in kept if i.startswith("b")] == ["b-0", "b-1", "b-2"]
    order = [iid for iid, _ in items]
    assert kept == sorted(kept, key=order.index)
    assert kept == apply_quotas(items, QuotaConfig(max_per_category=4, seed=1))[0]
    assert kept != apply_quotas(items, QuotaConfig(max_per_category=4, seed=2))[0]


def test_shares_balance_and_shortfall_goes_to_the_others():
    items = _items({"a": 100, "b": 100, "c": 5, "d": 50})
    _, t = apply_quotas(items, QuotaConfig(shares={"a": 1, "b": 1, "c": 2}, total=60))
    assert t == {"a": 28, "b": 27, "c": 5, "d": 0}  # c takes all 5; rounding ties go by name
    # No total: the largest set meeting the shares exactly (c's 5 answers are 2/4 of it).
    _, t = apply_quotas(items, QuotaConfig(shares={"a": 1, "b": 1, "c": 2}))
    assert t == {"a": 3, "b": 2, "c": 5, "d": 0}
    _, t = apply_quotas(items, QuotaConfig(shares={"a": 1, "d": 1}, max_per_category=30))
    assert t == {"a": 30, "b": 0, "c": 0, "d": 30}
    with pytest.raises(ValueError, match="only used with shares"):
        apply_quotas(items, QuotaConfig(total=5))


# --- prepare_pairs -----------------------------------------------------------------------------


def _cfg(tmp_path, **data):
    cfg = compose_typed()
    src = SourceConfig(
        name="book",
        kind="long_text",
        path=str(FIX / "gutenberg_small.txt"),
        long_text=LongTextConfig(target_words=60, min_words=20),
    )
    fields = dict(
        pairs=src,
        label_categories=True,
        labels=LabelConfig(batch_size=4, max_text_words=60),
        queries=QueryConfig(batch_size=3, seed=5),
    )
    d = dataclasses.replace(cfg.data, **{**fields, **data})
    return dataclasses.replace(cfg, data=d)


class FailingGenerator:
    model_id = "must-not-run"

    def generate(self, *a, **kw):
        raise AssertionError("work already done was redone")


def test_prepare_pairs_long_text_end_to_end_and_resume(tmp_path):
    out = tmp_path / "prep"
    cfg = _cfg(tmp_path, quotas=QuotaConfig(max_per_category=3, seed=0))
    scorer = LabelScorer({"creative & narrative": -0.2}, by_text={"Rain over the Marsh": {"poetry & lyrics": -0.1}})
    res = prepare_pairs(cfg, out, generator=ScriptedGenerator(reply=polite_request), scorer=scorer)
    c = res.counts
    assert c["loaded"] == 9 and c["labels_by_model"] == 9 and c["label_failures"] == 0
    assert c["kept_by_quota"] == 4 and c["dropped_by_quota"] == 5  # 3 narrative + 1 poetry
    assert c["queries_accepted"] == 4 and c["answers_without_query"] == 0 and c["pairs"] == 4
    rows = [json.loads(l) for l in (out / "pairs.jsonl").read_text().splitlines()]
    assert sorted(r["category"] for r in rows) == ["creative & narrative"] * 3 + ["poetry & lyrics"]
    for r in rows:
        assert r["request"].startswith("Please write a quiet literary passage") and r["origin"] == "reverse_query"
        assert f"about {len(r['answer'].split())} words" in r["request"] and r["source"] == "book"
    # The written file is a pairs source in its own right.
    pairs, skipped = load_pairs(
        SourceConfig(
            name="prepared",
            path=str(res.path),
            fields={"id": "id", "x": "request", "y": "answer", "category": "category"},
        ),
        True,
    )
    assert [p.id for p in pairs] == [r["id"] for r in rows] and not skipped
    md = (out / "categories.md").read_text()
    assert "| Artistic | creative & narrative | 8 | 3 | 3 |" in md and "| total |  | 9 | 4 | 4 |" in md
    assert (out / "categories.csv").read_text().startswith("group,category,loaded,after_quota,pairs\n")
    assert (out / "plots" / "categories.png").stat().st_size > 1000
    assert len((out / "quota_dropped.jsonl").read_text().splitlines()) == 5

    # Re-run: nothing is labelled or queried again; same output.
    before = (out / "pairs.jsonl").read_text()
    res2 = prepare_pairs(cfg, out, generator=FailingGenerator(), scorer=LabelScorer({}))
    assert (out / "pairs.jsonl").read_text() == before and res2.counts["queries_reused"] == 4

    # A killed run: the last query line is torn; only that answer is queried again.
    qpath = out / QUERIES
    lines = qpath.read_text().splitlines(keepends=True)
    qpath.write_text("".join(lines[:-1]) + lines[-1][:20])
    gen = ScriptedGenerator(reply=polite_request)
    prepare_pairs(cfg, out, generator=gen, scorer=LabelScorer({}))
    assert [n for n, _, _ in gen.calls] == [1]
    assert (out / "pairs.jsonl").read_text() == before
    assert len(qpath.read_text().splitlines()) == len(lines)


class DownAfter:
    """A generator whose server goes down after `ok_calls` calls: every later sample comes back
    failed, as the HTTP backend returns a request it gave up on."""

    model_id = "flaky"

    def __init__(self, inner, ok_calls: int):
        self.inner, self.ok_calls, self.calls = inner, ok_calls, 0

    def generate(self, prompts, sampling, n=1, prefill=None, seeds=None):
        self.calls += 1
        if self.calls > self.ok_calls:
            return [
                [Generation("", finish_reason="error", error="ConnectError: connection refused")] * n for _ in prompts
            ]
        return self.inner.generate(prompts, sampling, n=n, prefill=prefill)


def test_a_failed_query_call_is_no_rejection_and_stops_new_batches():
    cfg = QueryConfig(queries_per_answer=1, max_attempts=3, min_words=5, batch_size=2, seed=1)
    gen = DownAfter(ScriptedGenerator(reply=polite_request), ok_calls=1)
    written = []
    answers = [(f"a{i}", ANSWER) for i in range(6)]
    outs = synthesize_queries(answers, gen, cfg, on_batch=written.extend)
    assert [o.id for o in written] == ["a0", "a1"]  # the first batch; the failed one is not written
    assert [o.id for o in outs] == ["a0", "a1", "a2", "a3"] and gen.calls == 2  # no third batch
    failed = outs[2:]
    assert all(o.error == "ConnectError: connection refused" and not o.queries and not o.rejected for o in failed)
    assert all(o.attempts == 1 for o in failed)  # no re-draw: a failed call is not a bad request


def test_prepare_pairs_leaves_answers_unfinished_when_the_server_fails_and_resumes(tmp_path):
    from deepwriter.core.errors import UnfinishedError

    out = tmp_path / "prep"
    cfg = _cfg(tmp_path, label_categories=False)
    down = DownAfter(ScriptedGenerator(reply=polite_request), ok_calls=1)
    with pytest.raises(UnfinishedError) as err:
        prepare_pairs(cfg, out, generator=down)
    assert str(err.value).startswith("synthesize (prepare: reverse queries): 6 of 9 answers unfinished")
    assert "connection refused" in str(err.value) and "re-run" in str(err.value)
    assert not (out / "pairs.jsonl").exists()
    assert len((out / QUERIES).read_text().splitlines()) == 3  # the first batch's answers, kept
    back = ScriptedGenerator(reply=polite_request)
    res = prepare_pairs(cfg, out, generator=back)
    assert res.counts["queries_reused"] == 3 and res.counts["pairs"] == 9 and res.counts["queries_rejected"] == {}
    assert sum(n for n, _, _ in back.calls) == 6  # exactly the missing answers


def test_failed_label_calls_leave_pairs_unfinished_not_unlabelled(tmp_path):
    from deepwriter.core.errors import UnfinishedError

    class DownScorer(LabelScorer):
        def score(self, requests):
            return [TokenLogprobs(error="HTTP 503 after 7 attempts") for _ in requests]

    cfg = _cfg(tmp_path)
    with pytest.raises(UnfinishedError, match=r"prepare: category labels\): 9 of 9 answers unfinished.*HTTP 503"):
        prepare_pairs(cfg, tmp_path / "p", generator=ScriptedGenerator(reply=polite_request), scorer=DownScorer({}))
    assert not (tmp_path / "p" / LABELS).read_text()  # nothing was recorded as a label or a failure
    gen = DownAfter(ScriptedGenerator(reply=lambda *a: Generation("Travel & Lifestyle")), ok_calls=0)
    assert [r.error for r in label_with_generator([("x", ANSWER)], gen, LABELS_25, LabelConfig())] == [
        "ConnectError: connection refused"
    ]


def test_prepare_pairs_generator_labels_failures_and_missing_backends(tmp_path):
    cfg = _cfg(tmp_path, quotas=QuotaConfig(shares={"travel & lifestyle": 1, UNLABELLED: 1}, seed=0))
    replies = iter(["Travel & Lifestyle", "??"] * 10)

    def reply(content, j, sampling):
        if "<text>" in content:
            return polite_request(content, j, sampling)
        return Generation(next(replies))

    res = prepare_pairs(cfg, tmp_path / "gen", generator=ScriptedGenerator(reply=reply))
    assert res.counts["label_failures"] == 4 and res.counts["labels_by_model"] == 5
    # Shares 1:1 between the 5 travel and 4 unlabelled answers: 4 each.
    rows = [json.loads(l) for l in (tmp_path / "gen" / "pairs.jsonl").read_text().splitlines()]
    assert sorted(str(r["category"]) for r in rows) == ["None"] * 4 + ["travel & lifestyle"] * 4
    assert all(json.loads(l)["method"] == "generator" for l in (tmp_path / "gen" / LABELS).read_text().splitlines())

    with pytest.raises(ValueError, match="needs a scorer or a generator"):
        prepare_pairs(cfg, tmp_path / "none")
    with pytest.raises(ValueError, match="needs a generator to write them"):
        prepare_pairs(_cfg(tmp_path, label_categories=False), tmp_path / "nogen")
    with pytest.raises(ValueError, match="'poetry' is not a category"):
        prepare_pairs(_cfg(tmp_path, quotas=QuotaConfig(shares={"poetry": 1})), tmp_path / "bad")


def test_prepare_pairs_keeps_given_requests_and_categories(tmp_path):
    cfg = compose_typed()  # the demo pairs: every pair has a request and a category
    d = dataclasses.replace(cfg.data, label_categories=True)
    res = prepare_pairs(dataclasses.replace(cfg, data=d), tmp_path / "demo")
    assert res.counts["pairs"] == 8 and res.counts["labels_given"] == 8 and res.counts["answers_needing_query"] == 0
    rows = [json.loads(l) for l in res.path.read_text().splitlines()]
    assert all(r["origin"] == "source" and r["category"] in LABELS_25 for r in rows)


def test_extra_requests_for_answers_that_have_one(tmp_path):
    """The paper's 16K -> 20K growth: a seeded share of answers with a request get more requests,
    never a copy of their own; the rows keep the answer id, and a re-run redoes nothing."""
    base = compose_typed()  # the demo pairs: every pair has a request
    own = {p.y: p.x for p in load_pairs(base.data.pairs, True)[0]}

    def reply(content, j, sampling):  # the first draw for each answer repeats its own request
        answer = re.search(r"<text>\n(.*)\n</text>", content, re.S).group(1)
        full = next(a for a in own if a.startswith(answer[:200]))
        if j == 0 and full not in seen:
            seen.add(full)
            return Generation(own[full])
        return Generation(f"Please write this piece for a new reader, variant {j}, attempt seed {sampling.seed % 997}.")

    seen = set()
    queries = dataclasses.replace(base.data.queries, paired_extra=1, paired_extra_share=0.5, batch_size=3)
    cfg = dataclasses.replace(base, data=dataclasses.replace(base.data, queries=queries))
    out = tmp_path / "prep"
    res = prepare_pairs(cfg, out, generator=ScriptedGenerator(reply=reply))
    rows = [json.loads(l) for l in (out / "pairs.jsonl").read_text().splitlines()]
    extra = [r for r in rows if r["origin"] == "reverse_query_extra"]
    assert len(own) == 8 and len(rows) == 12 and len(extra) == 4
    assert res.counts["answers_given_extra_queries"] == 4 and res.counts["extra_queries_accepted"] == 4
    assert res.counts["extra_queries_rejected"] == {"duplicate": 4}  # its own request, drawn again, is refused
    by_id = {r["id"]: r for r in rows}
    for r in extra:
        parent = by_id[r["answer_id"]]
        assert r["id"] == parent["id"] + "-x1" and r["answer"] == parent["answer"]
        assert r["request"] != parent["request"] and r["request"].startswith("Please write this piece")
    # The written file is a pairs source carrying the answer id through to synthesis.
    pairs, _ = load_pairs(
        SourceConfig(
            name="prepared",
            path=str(res.path),
            fields={"id": "id", "x": "request", "y": "answer", "category": "category", "answer_id": "answer_id"},
        ),
        True,
    )
    assert {p.meta["answer_id"] for p in pairs if p.id.endswith("-x1")} == {r["answer_id"] for r in extra}

    before = (out / "pairs.jsonl").read_text()
    prepare_pairs(cfg, out, generator=FailingGenerator())
    assert (out / "pairs.jsonl").read_text() == before
    # Another seed picks another half; share 0 or paired_extra 0 adds nothing.
    other = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, queries=dataclasses.replace(queries, seed=9)))
    prepare_pairs(other, tmp_path / "other", generator=ScriptedGenerator(reply=reply))
    picked = {
        json.loads(l)["answer_id"]
        for l in (tmp_path / "other" / "pairs.jsonl").read_text().splitlines()
        if "-x1" in json.loads(l)["id"]
    }
    assert len(picked) == 4 and picked != {r["answer_id"] for r in extra}
    none = dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, queries=dataclasses.replace(queries, paired_extra_share=0.0))
    )
    assert prepare_pairs(none, tmp_path / "none", generator=FailingGenerator()).counts["pairs"] == 8
    bad = dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, queries=dataclasses.replace(queries, paired_extra_share=1.5))
    )
    with pytest.raises(ValueError, match="paired_extra_share in \\[0, 1\\]"):
        prepare_pairs(bad, tmp_path / "bad", generator=FailingGenerator())


def test_full_taxonomy_has_25_categories_in_9_groups():
    """docs/FIDELITY.md D6: the count of categories is the paper's; names and groups are ours."""
    full = compose_typed("+recipe=full").data.taxonomy
    labels = flat_labels(full)
    assert len(full) == 9 and len(labels) == 25 and len(set(labels)) == 25
    assert full["Artistic"] == [
        "creative & narrative",
        "poetry & lyrics",
        "essay & argument",
        "analytical & critical",
        "scriptwriting",
    ]

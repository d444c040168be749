"""The judges ask as the benchmarks' own evaluation code does: each prompt's required elements in the
reference's order (in our words), per-benchmark sampling reaching the backend, HelloBench's answer cut,
the configured settings, the prompt preview, and the HB group definitions beside the tables."""

from __future__ import annotations

import json

import pytest

from deepwriter.config.eval import BenchmarkConfig, BenchmarkJudgeConfig, EvalConfig, JudgeConfig
from deepwriter.config.root import ConfigError
from deepwriter.eval import tables
from deepwriter.eval.benchmarks import hellobench as hb
from deepwriter.eval.benchmarks import judge_settings
from deepwriter.eval.benchmarks import longbench_write as lb
from deepwriter.eval.benchmarks import writingbench as wb
from deepwriter.eval.benchmarks.base import Item, JudgeSettings
from deepwriter.eval.judge import Judge
from deepwriter.eval.preview import judge_prompts
from deepwriter.eval.words import count_words, truncate_answer, word_tokens
from deepwriter.llm.base import Generation, Sampling
from deepwriter.testing.repo import FIXTURES, compose_typed

FIX = FIXTURES / "bench"


def _in_order(text: str, *parts: str) -> None:
    """Every part occurs in `text`, each after the one before it."""
    pos = -1
    for part in parts:
        nxt = text.find(part, pos + 1)
        assert nxt > pos, f"{part!r} missing or out of order"
        pos = nxt


def _hb_item(n=3):
    return Item("hb", "h1", "Write a travel guide to Porto.", {"checklists": [f"Is point {i} met?" for i in range(n)]})


def _wb_item():
    crit = {
        "name": "Depth",
        "criteria_description": "Covers the topic in depth.",
        **{b: f"band {b}" for b in wb.RUBRIC_BANDS},
    }
    return Item("wb", "7", "Write a market analysis of e-bikes.", {"domain1": "x", "domain2": "y", "checklist": [crit]})


# --- prompts -------------------------------------------------------------------------------------


def test_longbench_prompt_has_the_reference_elements_in_order():
    """LongWriter evaluation/judge.txt: strictness, six dimensions with 5->1 anchors, tagged request and
    response, analysis before the scores in one JSON shape, length left out, one integer 1-5 each."""
    (task,) = lb.judge_tasks(Item("lb", "a", "Write a 300-word fable.", {"length": 300}), "Once upon a time.", None)
    assert [m["role"] for m in task.messages] == ["user"]  # the reference sends no system prompt
    text = task.messages[0]["content"]
    _in_order(
        text,
        "as strict in your judgment as you possibly can",
        "six dimensions below, each from 1 to 5",
        "from what deserves a 5 down to what deserves a 1",
        "1. Relevance: from",
        "2. Accuracy: from",
        "3. Coherence: from",
        "4. Clarity: from",
        "5. Breadth and Depth: from",
        "6. Reading Experience: from",
        "<User Request>\n\nWrite a 300-word fable.\n\n</User Request>",
        "<Response>\n\nOnce upon a time.\n\n</Response>",
        "Start with a short analysis",
        "after that give your overall judgment with a score for each dimension",
        '{"Analysis": ..., "Relevance": ..., "Accuracy": ..., "Coherence": ..., "Clarity": ..., '
        '"Breadth and Depth": ..., "Reading Experience": ...}',
        "Do not take into account whether the reply reaches the length the user asked for",
        "exactly one integer between 1 and 5 for each dimension",
    )
    for _, anchor in lb._ANCHORS:  # every anchor runs from the best score down to the worst
        assert anchor.startswith("from ") and ", down to " in anchor


def test_hellobench_prompt_has_the_reference_elements_in_order():
    """HelloBench llm_judge.py SYS_PROMPT / USER_PROMPT: a system prompt; task and five anchors before
    and again after the payload; the end-of-response reminder; strict but fair; a Python list of
    {checklist_id, reason, evaluation_score}; the count."""
    (task,) = hb.judge_tasks(
        _hb_item(3), "Porto is lovely.", judge_settings("hb", BenchmarkConfig(kind="hellobench"), JudgeConfig())
    )
    system, user = task.messages
    assert system == {"role": "system", "content": hb.SYSTEM_PROMPT} and "yes-or-no question" in system["content"]
    anchors = [
        "0: The response does not",
        "0.25: The response",
        "0.5: The response",
        "0.75: The response",
        "1: The response",
    ]
    first = [
        "Your central task is to assess a checklist",
        *anchors,
        '{"instruction": Write a travel guide to Porto.}',
        '{"response": Porto is lovely .}',  # the answer as nltk-style word tokens joined by spaces
        "note explicitly that it has now ended",
        '{"checklists": [{"checklist_id": 0, "checklist_content": "Is point 0 met?"}',
        "here they are once more",
        "Your central task is to assess a checklist",
        *anchors,
        "Be strict, but fair",
        "before you give a 1, think carefully",
        "Python List of Python Dictionaries",
        '"checklist_id": "the id of the checklist item", "reason": ',
        '"evaluation_score": "your score for this checklist item"',
        "You have 3 checklist items to assess",
        "Judge strictly",
        "nothing but a valid Python List",
    ]
    _in_order(user["content"], *first)
    assert user["content"].count("0.75: The response satisfies most") == 2


def test_writingbench_prompt_has_the_reference_elements_in_order():
    """WritingBench prompt.py: a system prompt; generic 1-10 scoring rules; quote the response; very
    strict, not swayed by format or length; fabricated content; an introduction only is a failure;
    the output format; criterion, query, response in ``` blocks; criterion and format again."""
    (task,) = wb.judge_tasks(_wb_item(), "E-bikes sell.", None)
    system, user = task.messages
    assert system == {"role": "system", "content": wb.SYSTEM_PROMPT}
    crit = json.dumps(_wb_item().meta["checklist"][0], ensure_ascii=False)
    _in_order(
        user["content"],
        "applying the Scoring Rules",
        "** Scoring Rules **",
        '"1-2": "Low score',
        '"3-4": "Below-average score',
        '"5-6": "Average score',
        '"7-8": "Above-average score',
        '"9-10": "High score',
        "Quote the exact passages",
        "Be very STRICT and do not let format or length sway you",
        "wholly invented",
        "only an introduction or an overview",
        "count such a Response as a failure",
        "give one integer from 1 to 10",
        "** Output format **",
        '"score": an integer from 1 to 10',
        f"** Criteria **\n```{crit}```",
        "** Query **\n```Write a market analysis of e-bikes.```",
        "** Response **\n```E-bikes sell.```",
        f"repeated here:\n\n```{crit}```",
        "** Output format **",
        '"reason": "A specific, detailed justification',
    )
    assert '"9-10": "band 9-10"' in crit  # the criterion's own rubric travels with it


def test_writingbench_critic_style_is_the_prompt_the_critic_was_released_with():
    settings = judge_settings(
        "wb", BenchmarkConfig(kind="writingbench", judge=BenchmarkJudgeConfig(style="critic")), JudgeConfig()
    )
    assert settings.style == "critic" and settings.system == wb.SYSTEM_PROMPT  # same system prompt
    (task,) = wb.judge_tasks(_wb_item(), "E-bikes sell.", settings)
    user = task.messages[-1]["content"]
    assert "** Scoring Rules **" not in user and "STRICT" not in user  # added to the prompt after the critic
    assert user.count("** Criteria **") == 1 and user.count("** Output format **") == 1
    _in_order(
        user,
        "against the Query and the criteria given",
        "** Criteria **",
        "** Query **",
        "** Response **",
        "Base your evaluation on the criteria",
        "cite particular passages",
        "give one integer from 1 to 10",
        "** Output format **",
        '"score": an integer from 1 to 10',
    )
    assert task.sampling == Sampling(temperature=1.0, top_p=0.95, max_new_tokens=2048, seed=0)


# --- settings --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, temperature, top_p, seed, max_new_tokens, has_system",
    [
        ("longbench_write", 0.5, 1.0, 7, 1024, False),  # LongWriter sends no seed: eval.judge.seed (7)
        ("hellobench", 0.8, 1.0, 42, 4096, True),
        ("writingbench", 1.0, 0.95, 7, 2048, True),
    ],
)
def test_reference_judge_settings_are_the_defaults(kind, temperature, top_p, seed, max_new_tokens, has_system):
    s = judge_settings(kind, BenchmarkConfig(kind=kind), JudgeConfig(temperature=0.0, top_p=0.5, seed=7))
    assert (s.temperature, s.top_p, s.seed, s.max_new_tokens, bool(s.system)) == (
        temperature,
        top_p,
        seed,
        max_new_tokens,
        has_system,
    )
    assert (s.max_answer_tokens, s.truncate_above_tokens, s.rejoin_tokens) == (
        (16000, 15000, True) if kind == "hellobench" else (None, None, False)
    )


def test_configured_judge_settings_override_the_reference():
    own = BenchmarkJudgeConfig(
        temperature=0.0, top_p=0.9, seed=3, max_new_tokens=10, system="", max_answer_tokens=0, rejoin_tokens=False
    )
    s = judge_settings("hb", BenchmarkConfig(kind="hellobench", judge=own), JudgeConfig())
    assert s == JudgeSettings(
        style="reference", temperature=0.0, top_p=0.9, seed=3, max_new_tokens=10, system="", truncate_above_tokens=15000
    )
    assert s.max_answer_tokens is None  # 0: never cut
    (task,) = hb.judge_tasks(_hb_item(), "Line one.\nLine two.", s)
    assert [m["role"] for m in task.messages] == ["user"]  # "" turns the system prompt off
    assert '{"response": Line one.\nLine two.}' in task.messages[0]["content"]  # the answer as written
    with pytest.raises(ConfigError, match=r"eval.benchmarks.lb.judge.style: 'critic' is not a style of longbench"):
        judge_settings(
            "lb", BenchmarkConfig(kind="longbench_write", judge=BenchmarkJudgeConfig(style="critic")), JudgeConfig()
        )


def test_shipped_configs_state_the_reference_values_and_are_checked():
    """conf/eval/full.yaml and shared.yaml write out each benchmark's reference values; the demo takes
    them from the code; bad values stop at composition or preflight naming the key."""
    from deepwriter.config.root import validate
    from deepwriter.eval.stage import preflight

    for group in ("full", "shared"):
        cfg = compose_typed(f"eval={group}", "seed=5")
        for name, mod in (("longbench_write", lb), ("hellobench", hb), ("writingbench", wb)):
            own = cfg.eval.benchmarks[name].judge
            ref = mod.REFERENCE_JUDGE
            assert (own.style, own.temperature, own.top_p, own.max_new_tokens) == (
                ref.style,
                ref.temperature,
                ref.top_p,
                ref.max_new_tokens,
            ), (group, name)
            s = judge_settings(name, cfg.eval.benchmarks[name], cfg.eval.judge)
            assert s == JudgeSettings(**{**ref.__dict__, "seed": ref.seed if ref.seed is not None else 5})
        preflight(cfg)
    import dataclasses

    import yaml

    from deepwriter.testing.repo import REPO

    fields = {f.name for f in dataclasses.fields(BenchmarkJudgeConfig)}
    for group in ("demo", "full", "shared"):  # no hidden defaults: every judge field is written out
        doc = yaml.safe_load((REPO / "deepwriter" / "conf" / "eval" / f"{group}.yaml").read_text())
        for name, bench in doc["benchmarks"].items():
            assert set(bench["judge"]) == fields, (group, name)
    demo = compose_typed()
    assert judge_settings("demo", demo.eval.benchmarks["demo"], demo.eval.judge).temperature == 0.5
    with pytest.raises(ConfigError, match=r"eval.benchmarks.demo.judge.style: got 'strict'"):
        validate(compose_typed("eval.benchmarks.demo.judge.style=strict"))
    with pytest.raises(ConfigError, match=r"eval.benchmarks.demo.judge.top_p: got 1.5; expected <= 1.0"):
        validate(compose_typed("eval.benchmarks.demo.judge.top_p=1.5"))
    with pytest.raises(ConfigError, match=r"eval.benchmarks.demo.judge.style: 'critic' is not a style"):
        preflight(compose_typed("eval.benchmarks.demo.judge.style=critic"))


# --- sampling reaches the backend ---------------------------------------------------------------


class RecordingGenerator:
    """Answers every judge prompt validly and records the Sampling each prompt was sent with."""

    model_id = "recorder"

    def __init__(self):
        self.sent = []  # (first user message, Sampling)

    def _reply(self, user: str) -> str:
        if "six dimensions" in user:
            return json.dumps({"Analysis": "ok", **{k: 3 for k in lb.REPLY_KEYS}})
        if "checklist items to assess" in user:
            n = int(user.split("You have ")[1].split(" ")[0])
            return json.dumps([{"checklist_id": i, "reason": "", "evaluation_score": 1} for i in range(n)])
        return '{"score": 6, "reason": "ok"}'

    def generate(self, prompts, sampling, n=1, prefill=None, seeds=None):
        out = []
        for messages in prompts:
            user = next(m["content"] for m in messages if m["role"] == "user")
            self.sent.append((user, sampling))
            out.append([Generation(text=self._reply(user))])
        return out


class RecordingConstrained:
    """A constrained local judge stand-in: records the Sampling of each batch, gives the lowest score."""

    batch_size = 8

    def __init__(self):
        self.batches = []  # (number of prompts, Sampling)

    def judge(self, prompts, slot_lists, sampling):
        self.batches.append((len(prompts), sampling))
        return [Generation(text=json.dumps({s.name: s.allowed[0] for s in slots})) for slots in slot_lists]


def _mixed_tasks():
    cfgs = {k: BenchmarkConfig(kind=k) for k in ("longbench_write", "hellobench", "writingbench")}
    settings = {k: judge_settings(k, b, JudgeConfig(seed=9)) for k, b in cfgs.items()}
    tasks = []
    for i in range(3):  # interleaved, so one batch would mix benchmarks if calls were not split by sampling
        tasks += lb.judge_tasks(
            Item("lb", f"l{i}", f"Write note {i}.", {"length": 50}), "Note.", settings["longbench_write"]
        )
        tasks += hb.judge_tasks(_hb_item(2), f"Guide {i}.", settings["hellobench"])
        tasks += wb.judge_tasks(_wb_item(), f"Analysis {i}.", settings["writingbench"])
    tasks += lb.judge_tasks(Item("lb", "plain", "Write a plain note.", {"length": 50}), "Note.")  # no settings
    return tasks, settings


def test_each_benchmarks_sampling_reaches_the_backend(tmp_path):
    tasks, settings = _mixed_tasks()
    gen = RecordingGenerator()
    fallback = JudgeConfig(temperature=0.3, top_p=0.7, max_new_tokens=99, seed=1, max_concurrency=8)
    judge = Judge(lambda: gen, "recorder", fallback, tmp_path / "c", constrained=False)
    outs = judge.run(tasks, show_progress=False)
    assert all(o.ok for o in outs)
    by_bench = {}
    for user, sampling in gen.sent:
        bench = (
            "plain"
            if "Write a plain note." in user
            else "lb"
            if "six dimensions" in user
            else "hb"
            if "checklist items" in user
            else "wb"
        )
        by_bench.setdefault(bench, set()).add(
            (sampling.temperature, sampling.top_p, sampling.max_new_tokens, sampling.seed)
        )
    assert by_bench == {
        "lb": {(0.5, 1.0, 1024, 9)},
        "hb": {(0.8, 1.0, 4096, 42)},
        "wb": {(1.0, 0.95, 2048, 9)},
        "plain": {(0.3, 0.7, 99, 1)},  # a task without settings: eval.judge's sampling
    }
    cached = [json.loads(line) for line in (tmp_path / "c" / "calls.jsonl").read_text().splitlines()]
    assert {(r["temperature"], r["seed"]) for r in cached} == {(0.5, 9), (0.8, 42), (1.0, 9), (0.3, 1)}

    # a different benchmark sampling is another cache key: no reuse
    again = RecordingGenerator()
    other = settings["hellobench"].__class__(**{**settings["hellobench"].__dict__, "temperature": 0.2})
    hb_task = hb.judge_tasks(_hb_item(2), "Guide 0.", other)
    Judge(lambda: again, "recorder", fallback, tmp_path / "c", constrained=False).run(hb_task, show_progress=False)
    assert len(again.sent) == 1 and again.sent[0][1].temperature == 0.2

    # the constrained local judge also decodes each batch with its tasks' own sampling
    backend = RecordingConstrained()
    outs = Judge(lambda: backend, "local", fallback, tmp_path / "k", constrained=True).run(tasks, show_progress=False)
    assert all(o.ok for o in outs)
    assert sorted((n, s.temperature, s.seed) for n, s in backend.batches) == [
        (1, 0.3, 1),
        (3, 0.5, 9),
        (3, 0.8, 42),
        (3, 1.0, 9),
    ]


# --- HelloBench's answer cut ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("Don't stop, it's fine.", ["Do", "n't", "stop", ",", "it", "'s", "fine", "."]),
        (
            "I can't pay $3.50 for 1,000 well-known U.S. items...",
            ["I", "ca", "n't", "pay", "$", "3.50", "for", "1,000", "well-known", "U.S.", "items", "..."],
        ),
        ('She said "go" -- then left.', ["She", "said", '"', "go", '"', "--", "then", "left", "."]),
        ("你好，世界。", ["你好", "，", "世界", "。"]),
        ("o'clock (a test)", ["o'clock", "(", "a", "test", ")"]),
    ],
)
def test_word_tokens_follow_nltks_treebank_rules(text, tokens):
    assert [t for t, _, _ in word_tokens(text)] == tokens and count_words(text) == len(tokens)


def test_hellobench_cuts_an_over_long_answer_and_leaves_a_short_one_whole():
    ref = hb.REFERENCE_JUDGE
    long_answer = "\n\n".join(f"Paragraph {i} has words." for i in range(4000))  # 5 tokens each: 20,000
    assert count_words(long_answer) == 20000
    shown, n, cut = truncate_answer(long_answer, ref.max_answer_tokens, ref.truncate_above_tokens, True)
    assert (n, cut) == (20000, True) and count_words(shown) == 16000
    assert shown.startswith("Paragraph 0 has words . Paragraph 1") and shown.endswith("Paragraph 3199 has words .")
    (task,) = hb.judge_tasks(
        _hb_item(), long_answer, judge_settings("hb", BenchmarkConfig(kind="hellobench"), JudgeConfig())
    )
    assert (
        "Paragraph 3199 has words .}" in task.messages[1]["content"]
        and "Paragraph 3200" not in task.messages[1]["content"]
    )

    # over 15,000 but under 16,000: nothing is lost (the reference keeps the first 16,000)
    mid = " ".join(["word"] * 15500)
    assert truncate_answer(mid, 16000, 15000, True) == (mid, 15500, False)

    # a short answer keeps every token; re-joined as the reference does, or byte for byte when asked
    short = 'A "short" answer.\n\nWith two paragraphs.'
    assert truncate_answer(short, 16000, 15000, False) == (short, 10, False)
    assert truncate_answer(short, 16000, 15000, True)[0] == "A `` short '' answer . With two paragraphs ."
    # without the re-join a cut keeps the original text up to the last kept token
    assert truncate_answer("one two\nthree four five", 3, 4, False) == ("one two\nthree", 5, True)
    # LongBench-Write and WritingBench show the answer as written, however long
    (task,) = wb.judge_tasks(
        _wb_item(), long_answer, judge_settings("wb", BenchmarkConfig(kind="writingbench"), JudgeConfig())
    )
    assert long_answer in task.messages[1]["content"]


# --- preview ---------------------------------------------------------------------------------------


def test_preview_gives_exactly_what_the_judge_is_sent(tmp_path):
    cfg = EvalConfig(
        benchmarks={
            "lb": BenchmarkConfig(kind="longbench_write", path=str(FIX / "longbench_write.jsonl"), limit=1),
            "hb": BenchmarkConfig(kind="hellobench", path=str(FIX / "hellobench"), judge=BenchmarkJudgeConfig(seed=11)),
            "wb": BenchmarkConfig(kind="writingbench", path=str(FIX / "writingbench.jsonl")),
        },
        judge=JudgeConfig(seed=4),
    )
    long_answer = " ".join(["word"] * 16500)
    ((key, messages, sampling),) = judge_prompts(cfg, tmp_path, "hb", long_answer, item_index=2)
    items = hb.load("hb", str(FIX / "hellobench"), tmp_path, [])
    settings = judge_settings("hb", cfg.benchmarks["hb"], cfg.judge)
    assert key == "checklist" and messages == hb.judge_tasks(items[2], long_answer, settings)[0].messages
    assert messages[0]["role"] == "system" and "Write a story about a cat who learns to sail." in messages[1]["content"]
    assert messages[1]["content"].count("word") == 16000  # cut as the judge would see it
    assert sampling == Sampling(temperature=0.8, top_p=1.0, max_new_tokens=4096, seed=11)

    wb_prev = judge_prompts(cfg, tmp_path, "wb", "An outline.", item_index=0)
    assert [k for k, _, _ in wb_prev] == [f"criterion-{i}" for i in range(5)]
    assert all(s == Sampling(temperature=1.0, top_p=0.95, max_new_tokens=2048, seed=4) for _, _, s in wb_prev)
    ((_, lb_messages, lb_sampling),) = judge_prompts(cfg, tmp_path, "lb", "Short.", item_index=2)  # limit not applied
    assert "<Response>\n\nShort.\n\n</Response>" in lb_messages[0]["content"] and lb_sampling.temperature == 0.5
    with pytest.raises(ConfigError, match="item index 3: lb has 3 items"):
        judge_prompts(cfg, tmp_path, "lb", "x", item_index=3)
    with pytest.raises(ConfigError, match="eval.benchmarks.zz: no such benchmark"):
        judge_prompts(cfg, tmp_path, "zz", "x")


# --- HB-A / HB-B definitions beside the tables ---------------------------------------------------


def test_group_definitions_are_printed_beside_every_table_that_shows_them(tmp_path):
    recs = [
        {"subset": "chat", "score": 80.0},
        {"subset": "summarization", "score": 60.0},
        {"subset": "open_ended_qa", "score": 60.0},
        {"subset": "open_ended_qa", "score": 70.0},
        {"subset": "heuristic_text_generation", "score": 90.0},
        {"subset": "text_completion", "score": 90.0},
    ]
    agg = hb.aggregate(recs, None)  # no groups configured: the default HB-A / HB-B
    summary = {
        "label": "r",
        "headline": {"LB": 50.0, **hb.headline("hellobench", agg)},
        "benchmarks": {
            "hellobench": {"kind": "hellobench", "summary": agg, "headline": hb.headline("hellobench", agg)}
        },
    }
    tables.write_run_tables(summary, tmp_path)
    paper = (tmp_path / "paper.md").read_text()
    assert paper.splitlines()[0] == "| run | LB | HB-A | HB-B |"
    assert (
        "HB-A = mean of the HelloBench subset means of summarization, chat (HelloBench defines no groups of "
        "subsets; the default is the grouping that best reproduces the paper's" in paper
    )
    assert "HB-B = mean of the HelloBench subset means of open_ended_qa, heuristic_text_generation" in paper
    details = (tmp_path / "details.md").read_text()
    assert "| HB-A (group) |  |  | 70.00 | -20.00 |" in details
    assert "| HB-B (group) |  |  | 77.50 | 10.00 |" in details  # (65 + 90) / 2: subset means, not samples
    assert "| overall: mean of subset means |  |  | 77.00 | 8.00 |" in details
    assert "| pooled over samples | 6 | 6 | 75.00 | 0.00 |" in details
    assert "HB-A = mean of the subset means of summarization, chat (HelloBench defines no groups" in details
    # runs compared side by side: each definition once, a differing one listed too
    other = json.loads(json.dumps(summary))
    other["benchmarks"]["hellobench"]["summary"]["group_definitions"]["HB-A"] = ["chat"]
    note = tables.definitions_note([summary, summary, other])
    assert note.count("HB-B =") == 1 and note.count("HB-A =") == 2 and "subset means of chat (HelloBench" in note


def test_the_full_recipes_judge_has_a_price():
    # the cost column looks the price up by the id the judge is called with: a missing entry would
    # report a real GPT-4o eval as costing $0
    from deepwriter.config.compose import compose
    from deepwriter.config.root import to_typed

    cfg = to_typed(compose(["+recipe=full"]))
    judge_id = cfg.models.judge.endpoint.model or cfg.models.judge.path
    price = cfg.eval.judge.prices[judge_id]
    assert (price.input_per_mtok, price.output_per_mtok) == (2.5, 10.0)

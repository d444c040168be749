"""A scripted LLM judge for the eval tests and benches."""

from __future__ import annotations

import json
import re
import threading

from deepwriter.eval.benchmarks import longbench_write as lb
from deepwriter.llm.base import Generation


class ScriptedJudge:
    """A Generator that answers judge prompts the way a good judge would, except where told to
    misbehave first: `bad_first[substring]` is a list of replies given, in order, to the first asks
    of a prompt containing the substring (a re-ask is recognised by its "could not be used").
    Replies have each benchmark's reference shape: LongBench-Write an analysis then the JSON with
    its dimension names, HelloBench a Python list, WritingBench {"score", "reason"}."""

    model_id = "scripted-judge"

    def __init__(self, bad_first=None, score=4):
        self.bad_first = {k: list(v) for k, v in (bad_first or {}).items()}
        self.score = score
        self.calls = 0
        self.seen = []  # every prompt (the first user message) the judge was shown
        self.samplings = []  # (prompt, Sampling) of every call
        self.lock = threading.Lock()

    def reply(self, messages, sampling=None) -> str:
        first = next(m["content"] for m in messages if m["role"] == "user")
        with self.lock:
            self.calls += 1
            self.seen.append(first)
            self.samplings.append((first, sampling))
            for needle, queue in self.bad_first.items():
                if needle in first and queue:
                    return queue.pop(0)
        if "six dimensions" in first:
            verdict = {"Analysis": "fine", **{k: self.score for k in lb.REPLY_KEYS}}
            return "The reply is adequate [see below].\n```json\n" + json.dumps(verdict) + "\n```"
        m = re.search(r"You have (\d+) checklist items", first)
        if m:
            return str(
                [
                    {"checklist_id": str(i), "reason": f"item {i}", "evaluation_score": "0.75"}
                    for i in range(int(m.group(1)))
                ]
            )
        if "** Criteria **" in first:
            return 'Here you go: {"score": 7, "reason": "solid",}'  # trailing comma: repaired
        return "I cannot judge this."

    def generate(self, prompts, sampling, n=1, prefill=None, seeds=None):
        return [
            [Generation(text=self.reply(m, sampling), prompt_tokens=100, completion_tokens=20) for _ in range(n)]
            for m in prompts
        ]

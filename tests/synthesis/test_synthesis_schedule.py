"""The synthesis schedules (deepwriter/synthesis/schedule.py) over small fake backends: records that do
not depend on completion order or schedule, a pool that refills, dynamic in-process batches on one
device lane, HTTP calls bounded by the endpoint's concurrency, the fleet figures, lazy admission."""

from __future__ import annotations

import random
import re
import threading
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest

from deepwriter.config.synthesis import SynthesisConfig
from deepwriter.llm.base import Generation, TokenLogprobs
from deepwriter.synthesis.schedule import EndpointUsage, run_pairs

PARA = "Here I plan part {k} of story {i}: the harbour, the light, the waiting, and what the reader should feel."
Y = "The Title\n\nThe light began answering on a Tuesday. Mara climbed the steps.\n\nShe waited."
SAME = ("z0", "z_final", "scores", "steps", "accepted_edits", "verdict", "seed", "tokens", "num_segments")


def story(messages) -> int:
    return int(re.search(r"story (\d+)", messages[-1]["content"]).group(1))


class Recorder:
    """Shared call log of a fake fleet: intervals, batch sizes, the peak of calls in flight."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events = []  # (t0, t1, role, [story ids])
        self.in_flight = 0
        self.peak = 0

    def enter(self):
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        return time.perf_counter()

    def leave(self, t0, role, ids):
        with self.lock:
            self.in_flight -= 1
            self.events.append((t0, time.perf_counter(), role, ids))


class SeededGenerator:
    """z0 of story i has 2 + i % 4 segments; a rewrite says BETTER or SAME by its seed alone, so a
    pair's search is a function of its own seeds. `delay(story, call)` spends time to reorder completions."""

    model_id = "seeded-gen"

    def __init__(self, rec: Recorder, delay=lambda i, n: 0.0, concurrent=False, max_concurrency=8):
        self.rec, self.delay, self.calls = rec, delay, {}
        self.concurrent_calls = concurrent
        self.endpoint = SimpleNamespace(max_concurrency=max_concurrency)

    def generate(self, prompts_, sampling, n=1, prefill=None, seeds=None):
        t0 = self.rec.enter()
        ids = [story(m) for m in prompts_]
        out = []
        for _m, pre, seed, i in zip(prompts_, prefill or [""] * len(prompts_), seeds, ids):
            self.calls[i] = self.calls.get(i, 0) + 1
            time.sleep(self.delay(i, self.calls[i]))
            if pre.startswith("<think>"):
                body = " " + "\n\n".join(PARA.format(k=k, i=i) for k in range(2 + i % 4))
                out.append([Generation(body + "\n</think>", 50, 40)])
                continue
            rng = [random.Random(seed * 31 + j) for j in range(n)]
            words = ["BETTER" if r.random() < 0.5 else "SAME" for r in rng]
            out.append(
                [Generation(f"<refine>{w} rewrite of part of story {i}, long enough.</refine>", 50, 12) for w in words]
            )
        self.rec.leave(t0, "generator", ids)
        return out


class MarkerScorer:
    """Score = 1 - 0.1 per BETTER in the trajectory."""

    model_id = "marker-scorer"

    def __init__(self, rec: Recorder, delay=0.0, concurrent=False, max_concurrency=8):
        self.rec, self.delay = rec, delay
        self.concurrent_calls = concurrent
        self.endpoint = SimpleNamespace(max_concurrency=max_concurrency)

    def score(self, requests):
        t0 = self.rec.enter()
        time.sleep(self.delay)
        out = [
            TokenLogprobs(tokens=["t"] * 4, logprobs=[-(1.0 - 0.1 * r.assistant_prefix.count("BETTER"))] * 4)
            for r in requests
        ]
        self.rec.leave(t0, "scorer", [story(r.messages) for r in requests])
        return out


def cfg(**kw) -> SynthesisConfig:
    base = SynthesisConfig(min_segment_chars=60, num_candidates=2, max_steps=10, stop_threshold=0.25)
    base.filters.min_think_tokens = 10
    return replace(base, **kw)


def pairs(n):
    return [(f"p{i}", f"Write story {i}.", Y, None) for i in range(n)]


def finished(outcomes):
    return [o["id"] for o in outcomes]


def test_records_do_not_depend_on_completion_order_nor_on_the_schedule():
    """Over HTTP-like backends, two delay patterns make pairs finish in opposite orders; the records
    are the same, and the same as an in-process lockstep run with other batches."""
    runs = {}
    for name, delay in (("early-first", lambda i, n: 0.004 * i), ("late-first", lambda i, n: 0.004 * (7 - i))):
        rec = Recorder()
        gen = SeededGenerator(rec, delay, concurrent=True)
        out = list(run_pairs(pairs(8), gen, MarkerScorer(rec, concurrent=True), cfg(max_in_flight=8)))
        runs[name] = out
    rec = Recorder()
    runs["lockstep"] = list(
        run_pairs(pairs(8), SeededGenerator(rec), MarkerScorer(rec), cfg(schedule="lockstep", batch_size=3))
    )
    assert finished(runs["early-first"]) != finished(runs["late-first"])  # the orders really differ
    by = {name: {o["id"]: {k: o[k] for k in SAME} for o in out} for name, out in runs.items()}
    assert len(by["lockstep"]) == 8
    assert by["early-first"] == by["late-first"] == by["lockstep"]
    steps = [len(o["steps"]) for o in runs["lockstep"]]
    assert len(set(steps)) > 1  # pairs of varied lengths, so the pool's refill matters


def test_continuous_refills_the_pool_while_lockstep_waits_for_the_whole_batch():
    def slow_story_0(i, n):
        return 0.03 if i == 0 else 0.0

    order = {}
    for schedule in ("continuous", "lockstep"):
        rec = Recorder()
        gen = SeededGenerator(rec, slow_story_0, concurrent=True)
        c = cfg(schedule=schedule, max_in_flight=2, batch_size=2)
        out = list(run_pairs(pairs(4), gen, MarkerScorer(rec, concurrent=True), c))
        first_call = {}
        for t0, _t1, _role, ids in sorted(rec.events):
            for i in ids:
                first_call.setdefault(i, t0)
        done_0 = max(t1 for _t0, t1, _role, ids in rec.events if 0 in ids)
        order[schedule] = (finished(out), first_call, done_0)
    ids, first_call, done_0 = order["continuous"]
    assert ids[-1] == "p0"  # the slow pair finishes last; the others flowed through its free slot
    assert first_call[2] < done_0 and first_call[3] < done_0
    ids, first_call, done_0 = order["lockstep"]
    assert first_call[2] >= done_0 and first_call[3] >= done_0  # batch two waits for batch one


def test_in_process_backends_get_dynamic_batches_on_one_device_lane():
    rec = Recorder()
    out = list(run_pairs(pairs(6), SeededGenerator(rec), MarkerScorer(rec, delay=0.002), cfg(max_in_flight=6)))
    assert len(out) == 6
    sizes = [len(ids) for _t0, _t1, _role, ids in sorted(rec.events)]
    assert sizes[0] == 6  # every pair's first call went out as one batch
    assert max(sizes[1:]) > 1  # later batches still merge the calls that were pending together
    assert rec.peak == 1  # the generator and the scorer never ran at the same time
    spans = sorted((t0, t1) for t0, t1, _role, _ids in rec.events)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def test_http_calls_go_out_one_per_pair_bounded_by_the_endpoints_concurrency():
    rec = Recorder()
    gen = SeededGenerator(rec, lambda i, n: 0.01, concurrent=True, max_concurrency=3)
    scorer = MarkerScorer(rec, delay=0.01, concurrent=True, max_concurrency=2)
    usage = EndpointUsage()
    out = list(run_pairs(pairs(8), gen, scorer, cfg(max_in_flight=8), usage))
    assert len(out) == 8
    assert all(len(set(ids)) == 1 for _t0, _t1, _role, ids in rec.events)  # one pair per call over HTTP
    assert 3 <= rec.peak <= 5  # both fleets at once: at most 3 generator + 2 scorer calls
    per_role = {r: [e for e in rec.events if e[2] == r] for r in ("generator", "scorer")}
    for role, width in (("generator", 3), ("scorer", 2)):
        edges = sorted(
            [(t0, 1) for t0, _t1, _r, _i in per_role[role]] + [(t1, -1) for _t0, t1, _r, _i in per_role[role]]
        )
        level = peak = 0
        for _t, step in edges:
            level += step
            peak = max(peak, level)
        assert peak <= width, role
    # the fleet figures count what the backends saw
    assert usage.generator.calls == len(per_role["generator"]) and usage.scorer.calls == len(per_role["scorer"])
    assert usage.pairs == 8
    figures = usage.as_dict()
    assert 0 < figures["generator_busy_share"] <= 1 and 0 < figures["scorer_busy_share"] <= 1
    assert figures["pairs_per_min"] == pytest.approx(60 * 8 / usage.wall_s)
    assert figures["generator_mean_in_flight"] == pytest.approx(usage.generator.call_s / usage.wall_s)
    assert usage.generator.completion_tokens == sum(o["tokens"]["completion"] for o in out)


def test_a_caller_that_stops_yielding_pairs_stops_new_work_and_keeps_what_is_in_flight():
    rec = Recorder()
    started = []

    def admitted():
        for p in pairs(10):
            if len(started) == 3:
                return
            started.append(p[0])
            yield p

    out = list(run_pairs(admitted(), SeededGenerator(rec), MarkerScorer(rec), cfg(max_in_flight=2)))
    assert sorted(finished(out)) == ["p0", "p1", "p2"]
    assert {i for _t0, _t1, _r, ids in rec.events for i in ids} == {0, 1, 2}


def test_a_pairs_seconds_are_its_share_of_the_calls_and_its_wall_time_in_flight():
    """What the record's timings are (and the report shows): generate_s + score_s is the pair's share of
    the batched calls it took part in, and those shares add up to the device's busy time; total_s is
    its wall time in flight, from admission to record: at least the span of its own calls, at most the
    run, and for a pair admitted late (2 in flight, 6 pairs) well short of the run."""
    rec = Recorder()
    usage = EndpointUsage()
    gen, scorer = SeededGenerator(rec, lambda i, n: 0.002), MarkerScorer(rec, delay=0.003)
    out = {o["id"]: o for o in run_pairs(pairs(6), gen, scorer, cfg(max_in_flight=2), usage)}
    share = {pid: 0.0 for pid in out}
    span = {}
    for t0, t1, _role, ids in rec.events:
        for i in ids:
            share[f"p{i}"] += (t1 - t0) / len(ids)
            first, last = span.get(f"p{i}", (t0, t1))
            span[f"p{i}"] = (min(first, t0), max(last, t1))
    for pid, o in out.items():
        t = o["timings"]
        assert t["generate_s"] + t["score_s"] == pytest.approx(share[pid], rel=0.1, abs=0.005), pid
        assert span[pid][1] - span[pid][0] <= t["total_s"] <= usage.wall_s, pid
    busy = sum(t1 - t0 for t0, t1, _r, _i in rec.events)
    assert sum(o["timings"]["generate_s"] + o["timings"]["score_s"] for o in out.values()) == pytest.approx(
        busy, rel=0.1
    )
    assert out["p5"]["timings"]["total_s"] < 0.8 * usage.wall_s  # admitted once earlier pairs were done

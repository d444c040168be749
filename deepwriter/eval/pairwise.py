"""Runs judged head to head: the judge reads two runs' answers to the same prompt and picks one.

    python -m deepwriter.eval.pairwise RUN_DIR RUN_DIR [RUN_DIR ...] [--out DIR] [-- HYDRA_OVERRIDES ...]

Each pair of runs is compared on the items of each benchmark both answered. Every comparison is
asked in both orders (the first run's answer shown first, then second); a verdict that changes with
the order is a flip and counts as a tie, and the flip rate is reported: the judge's position bias, in
plain sight. From the verdicts, per pair: the win rate of the first run (ties half), a
length-controlled win rate (a logistic model of the verdict with the answers' length difference as a
covariate, read at equal length), each with its 95% bootstrap interval over items; over all runs,
Bradley–Terry ratings with intervals. The prompts are this project's own, in English, or in Chinese
for a Chinese prompt, and name the benchmark's rubric (its dimensions or criteria) as what to weigh.

The judge is models.judge of the composed config (HYDRA_OVERRIDES, e.g. `+recipe=demo` for the
embedded model), asked through deepwriter.eval.judge: every reply is cached under --out, so a re-run
makes no calls. The judges of eval.panel (deepwriter.eval.panel) are asked the same comparisons: each
one's flip rate and its Cohen's κ with models.judge on the outcomes are reported beside.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from deepwriter.config.compose import compose
from deepwriter.config.root import ConfigError, split_overrides, to_typed
from deepwriter.eval import logged, panel
from deepwriter.eval.agreement import cohen_kappa
from deepwriter.eval.benchmarks.base import JudgeTask, Slot, markdown_table
from deepwriter.eval.judge import make_judge
from deepwriter.tracking.runs import stage_tracker

FIRST, SECOND, TIE = 1.0, 2.0, 0.0
VERDICT = Slot("winner", (FIRST, SECOND, TIE))
_CJK = re.compile(r"[\u4e00-\u9fff]")

# what each benchmark asks a judge to weigh (its own rubric's names)
RUBRICS = {
    "longbench_write": "relevance, accuracy, coherence, clarity, breadth and depth, reading experience",
    "hellobench": "how fully the response meets every requirement of the instruction (HelloBench's checklist)",
    "writingbench": "the instruction's own criteria: style, format, length and the content it asks for",
}

PROMPT_EN = (
    "You compare two responses to the same writing instruction and decide which one is better.\n"
    "Weigh: {rubric}. Do not let the order of the responses or their length alone decide.\n\n"
    "Instruction:\n{prompt}\n\n[Response 1]\n{first}\n[End of response 1]\n\n"
    "[Response 2]\n{second}\n[End of response 2]\n\n"
    'Reply with JSON only: {{"winner": 1}} if response 1 is better, {{"winner": 2}} if response 2 is '
    'better, {{"winner": 0}} if they are equally good.'
)
PROMPT_ZH = (
    "你将比较同一写作指令的两个回答，判断哪一个更好。\n"
    "评判依据：{rubric}。不要因为回答的先后顺序或仅因篇幅长短而作出判断。\n\n"
    "指令：\n{prompt}\n\n[回答 1]\n{first}\n[回答 1 结束]\n\n"
    "[回答 2]\n{second}\n[回答 2 结束]\n\n"
    '只输出 JSON：回答 1 更好输出 {{"winner": 1}}，回答 2 更好输出 {{"winner": 2}}，两者同样好输出 {{"winner": 0}}。'
)


def prompt_for(kind: str, prompt: str, first: str, second: str) -> str:
    template = PROMPT_ZH if _CJK.search(prompt) else PROMPT_EN
    return template.format(
        rubric=RUBRICS.get(kind, RUBRICS["longbench_write"]), prompt=prompt, first=first, second=second
    )


def tasks_for(kind: str, item_id: str, prompt: str, answer_x: str, answer_y: str) -> List[JudgeTask]:
    """The two orders of one comparison: `xy` shows run X's answer first, `yx` run Y's."""
    return [
        JudgeTask(item_id, key, [{"role": "user", "content": prompt_for(kind, prompt, a, b)}], [VERDICT])
        for key, a, b in (("xy", answer_x, answer_y), ("yx", answer_y, answer_x))
    ]


@dataclass
class Outcome:
    """One item's comparison of X with Y: 1 X better, 0 Y better, 0.5 a tie (or a flip)."""

    item_id: str
    x_score: float
    flipped: bool
    length_diff: float  # X's answer length − Y's, in words


def combine(item_id: str, xy: float, yx: float, length_diff: float) -> Outcome:
    """The verdicts of both orders as one outcome: X wins when it is preferred in both orders, or in
    one with a tie in the other; verdicts that follow the position (response 1 both times, or 2 both
    times) are a flip, and a tie."""
    x_first = {FIRST: 1.0, SECOND: 0.0, TIE: 0.5}[xy]  # X shown first
    x_second = {FIRST: 0.0, SECOND: 1.0, TIE: 0.5}[yx]  # X shown second
    seen = {x_first, x_second}
    flipped = seen == {0.0, 1.0}
    score = 0.5 if flipped or seen == {0.5} else 1.0 if 1.0 in seen else 0.0
    return Outcome(item_id, score, flipped, length_diff)


def _lc_win_rate(scores: np.ndarray, diffs: np.ndarray) -> Optional[float]:
    """P(X wins) at equal length from a logistic fit of the outcome on the scaled length difference
    (ties as half a win; fractional outcomes are a valid binomial likelihood)."""
    from scipy.optimize import minimize

    scale = np.std(diffs) or 1.0
    z = diffs / scale

    design = np.stack([np.ones_like(z), z], axis=1)

    def loss(beta):  # the negative log-likelihood with a light ridge, and its gradient
        eta = design @ beta
        value = float(np.sum(np.logaddexp(0, eta) - scores * eta)) + 1e-3 * float(beta @ beta)
        return value, design.T @ (1 / (1 + np.exp(-eta)) - scores) + 2e-3 * beta

    fit = minimize(loss, np.zeros(2), jac=True, method="BFGS")
    return float(1 / (1 + math.exp(-fit.x[0]))) if fit.success or fit.fun < 1e9 else None


def summarize_pair(outcomes: List[Outcome], resamples: int = 1000, seed: int = 0) -> Dict[str, Any]:
    """Win rate, length-controlled win rate (each with its 95% bootstrap interval over items), flip rate."""
    n = len(outcomes)
    if not n:
        return {"n": 0}
    scores = np.array([o.x_score for o in outcomes])
    diffs = np.array([o.length_diff for o in outcomes], dtype=float)
    rng = np.random.default_rng(seed)
    wins, lcs = [], []
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        wins.append(float(scores[idx].mean()))
        lc = _lc_win_rate(scores[idx], diffs[idx])
        if lc is not None:
            lcs.append(lc)

    def ci(vals):
        return [float(v) for v in np.percentile(vals, [2.5, 97.5])] if len(vals) >= 10 else [None, None]

    flips = sum(o.flipped for o in outcomes)
    return {
        "n": n,
        "win_rate": float(scores.mean()),
        "win_rate_ci": ci(wins),
        "lc_win_rate": _lc_win_rate(scores, diffs),
        "lc_win_rate_ci": ci(lcs),
        "flips": flips,
        "flip_rate": flips / n,
        "x_wins": int(sum(s == 1.0 for s in scores)),
        "y_wins": int(sum(s == 0.0 for s in scores)),
        "ties": int(sum(s == 0.5 for s in scores)),
    }


def bradley_terry(runs: Sequence[str], games: List[Tuple[str, str, float]]) -> Dict[str, float]:
    """Ratings (log-strengths, centred at 0; a difference d is P(win) = 1/(1+e^−d)) that best explain
    `games` (x, y, x's score 1 / 0.5 / 0), by maximum likelihood with a light ridge."""
    from scipy.optimize import minimize

    index = {r: i for i, r in enumerate(runs)}
    xs = np.array([index[g[0]] for g in games])
    ys = np.array([index[g[1]] for g in games])
    s = np.array([g[2] for g in games])

    def loss(theta):  # the negative log-likelihood with a light ridge, and its gradient
        d = theta[xs] - theta[ys]
        r = 1 / (1 + np.exp(-d)) - s
        grad = np.bincount(xs, r, len(runs)) - np.bincount(ys, r, len(runs)) + 2e-3 * theta
        return float(np.sum(np.logaddexp(0, d) - s * d)) + 1e-3 * float(theta @ theta), grad

    theta = minimize(loss, np.zeros(len(runs)), jac=True, method="BFGS").x
    theta -= theta.mean()
    return {r: float(theta[i]) for r, i in index.items()}


def bradley_terry_intervals(
    runs: Sequence[str], outcomes: Dict[Tuple[str, str], List[Outcome]], resamples: int = 500, seed: int = 0
) -> Dict[str, Dict[str, Optional[float]]]:
    """Each run's rating with a 95% interval from resampling each pair's items."""
    games = [(x, y, o.x_score) for (x, y), outs in outcomes.items() for o in outs]
    point = bradley_terry(runs, games)
    rng = np.random.default_rng(seed)
    draws: Dict[str, List[float]] = {r: [] for r in runs}
    for _ in range(resamples):
        sample = []
        for (x, y), outs in outcomes.items():
            for i in rng.integers(0, len(outs), len(outs)):
                sample.append((x, y, outs[i].x_score))
        for r, v in bradley_terry(runs, sample).items():
            draws[r].append(v)
    return {
        r: {
            "rating": point[r],
            "low": float(np.percentile(draws[r], 2.5)),
            "high": float(np.percentile(draws[r], 97.5)),
        }
        for r in runs
    }


# --- runs -----------------------------------------------------------------------------------------------


def _words(text: str) -> int:
    return len(_CJK.findall(text)) + len(re.findall(r"[A-Za-z0-9]+", text))


def _items(eval_dir: Path) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """{benchmark: {item id: record}} of a run's eval folder."""
    out = {}
    for f in sorted((eval_dir / "items").glob("*.jsonl")):
        if f.name.endswith(".generations.jsonl"):
            continue
        with open(f, encoding="utf-8") as fh:
            out[f.stem] = {r["id"]: r for r in (json.loads(line) for line in fh if line.strip())}
    return out


def eval_folder(run_dir: Path) -> Path:
    """A run folder's eval/ (or the eval folder itself): where summary.json and items/ are."""
    for folder in (Path(run_dir) / "eval", Path(run_dir)):
        if (folder / "summary.json").is_file():
            return folder
    raise FileNotFoundError(f"{run_dir}: no summary.json here or in eval/ (has the eval stage finished?)")


def _outcomes(judge, tasks: List[JudgeTask], owners: list) -> Tuple[Dict[tuple, Outcome], int]:
    """The judge's verdicts on `tasks`, both orders of each comparison combined: {(x, y, bench, item id):
    Outcome}, and how many comparisons got no usable verdict in one order or both."""
    results = judge.run(tasks)
    verdicts: Dict[Tuple[str, str, str, str], Dict[str, Any]] = {}
    for (x, y, bench, diff), task, res in zip(owners, tasks, results):
        v = verdicts.setdefault((x, y, bench, task.item_id), {"diff": diff})
        v[task.key] = res.values.get("winner") if res.ok else None
    outcomes, unjudged = {}, 0
    for (x, y, bench, item_id), v in verdicts.items():
        if v.get("xy") is None or v.get("yx") is None:
            unjudged += 1  # a failed or unusable judgment: no outcome, counted
            continue
        outcomes[(x, y, bench, item_id)] = combine(f"{bench}/{item_id}", v["xy"], v["yx"], v["diff"])
    return outcomes, unjudged


def panel_agreement(first: Dict[tuple, Outcome], other: Dict[tuple, Outcome]) -> Dict[str, Any]:
    """Cohen's κ of two judges' outcomes (X better / tie or flip / Y better) on the comparisons both
    judged, and how often they gave the same one."""

    both = sorted(set(first) & set(other))
    a, b = [first[k].x_score for k in both], [other[k].x_score for k in both]
    return {
        "n": len(both),
        "kappa": cohen_kappa(a, b),
        "same_outcome": sum(x == y for x, y in zip(a, b)) / len(both) if both else None,
    }


def compare_runs(
    judge, runs: Dict[str, Path], resamples: int = 1000, limit: Optional[int] = None, panel: Sequence = ()
) -> Dict[str, Any]:
    """Every pair of runs head to head on the items both answered (judge: a deepwriter.eval.judge.Judge;
    runs: label -> eval folder; limit: the first N common items of each benchmark). `panel`: more
    judges, (label, Judge, a task's restatement for that judge) each, asked the same comparisons; their
    flip rates and Cohen's κ with `judge` are reported, the figures above are `judge`'s."""
    items = {label: _items(d) for label, d in runs.items()}
    kinds = {}
    for d in runs.values():
        for name, entry in (json.loads((d / "summary.json").read_text()).get("benchmarks") or {}).items():
            kinds.setdefault(name, entry.get("kind", name))
    tasks, owners = [], []
    for x, y in itertools.combinations(runs, 2):
        for bench in sorted(set(items[x]) & set(items[y])):
            for item_id in sorted(set(items[x][bench]) & set(items[y][bench]))[:limit]:
                rx, ry = items[x][bench][item_id], items[y][bench][item_id]
                for t in tasks_for(kinds.get(bench, bench), item_id, rx["prompt"], rx["answer"], ry["answer"]):
                    tasks.append(t)
                    owners.append((x, y, bench, _words(rx["answer"]) - _words(ry["answer"])))
    found, unjudged = _outcomes(judge, tasks, owners)
    outcomes: Dict[Tuple[str, str], List[Outcome]] = {}
    for (x, y, _, _), o in found.items():
        outcomes.setdefault((x, y), []).append(o)
    pairs = {f"{x} vs {y}": summarize_pair(outs, resamples) for (x, y), outs in outcomes.items()}
    all_flips = sum(p["flips"] for p in pairs.values())
    all_n = sum(p["n"] for p in pairs.values())
    labels = list(runs)
    judges = {}
    for label, other, restate in panel:
        theirs, missing = _outcomes(other, [restate(t) for t in tasks], owners)
        flips = sum(o.flipped for o in theirs.values())
        judges[label] = {
            "judge": other.model_id,
            "comparisons": len(theirs),
            "unjudged": missing,
            "flip_rate": flips / len(theirs) if theirs else None,
            "vs_judge": panel_agreement(found, theirs),
            "judge_stats": other.stats.as_dict(),
        }
    return {
        "pairs": pairs,
        "flip_rate": all_flips / all_n if all_n else None,
        "comparisons": all_n,
        "unjudged": unjudged,
        "bradley_terry": bradley_terry_intervals(labels, outcomes, max(100, resamples // 2)) if outcomes else {},
        "judge": judge.model_id,
        "judge_stats": judge.stats.as_dict(),
        "panel": judges,
    }


def markdown(res: Dict[str, Any]) -> str:
    def ci(v, lo_hi):
        return "–" if v is None else f"{v:.3f} [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]" if lo_hi[0] is not None else f"{v:.3f}"

    rows = [
        [pair, p["n"], ci(p["win_rate"], p["win_rate_ci"]), ci(p["lc_win_rate"], p["lc_win_rate_ci"]),
         f"{p['x_wins']} / {p['ties']} / {p['y_wins']}", f"{p['flip_rate']:.3f}"]
        for pair, p in res["pairs"].items()
        if p.get("n")
    ]  # fmt: skip
    text = markdown_table(
        ["X vs Y", "items", "X win rate", "length-controlled", "X wins / ties / Y wins", "flip rate"], rows
    )
    bt = [[r, ci(v["rating"], (v["low"], v["high"]))] for r, v in res["bradley_terry"].items()]
    text += "\n" + markdown_table(["run", "Bradley–Terry rating [95%]"], bt)
    fr = res["flip_rate"]
    text += (
        f"\nJudge {res['judge']}: {res['comparisons']} comparisons, each asked in both orders; flip rate "
        f"{'–' if fr is None else f'{fr:.3f}'} (a verdict that followed the position, counted as a tie); "
        f"{res['unjudged']} without a usable verdict.\n"
    )
    if res.get("panel"):

        def num(v):
            return "–" if v is None else f"{v:.3f}"

        rows = [
            [label, p["judge"], p["comparisons"], num(p["flip_rate"]), num(p["vs_judge"]["kappa"]),
             num(p["vs_judge"]["same_outcome"]), p["vs_judge"]["n"]]
            for label, p in res["panel"].items()
        ]  # fmt: skip
        text += "\n" + markdown_table(
            ["panel judge", "model", "comparisons", "flip rate", "κ with the judge", "same outcome", "both judged"],
            rows,
        )
    return text


def log_to_wandb(cfg, out: Path, res: Dict[str, Any]) -> None:
    """The comparison as a W&B run of its own (job type `pairwise`; offline unless logged in, as the
    stages' runs are): every figure with its interval (deepwriter.eval.logged), and the pairs' table."""

    with stage_tracker(cfg, "pairwise", out) as tracker:
        tracker.summary(logged.pairwise_summary(res))
        tracker.table("pairwise/pairs", *logged.pairwise_table(res))


def main(argv: Optional[List[str]] = None) -> int:
    argv, overrides = split_overrides(list(sys.argv[1:] if argv is None else argv))
    ap = argparse.ArgumentParser(prog="python -m deepwriter.eval.pairwise", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (or eval stage folders), two or more")
    ap.add_argument("--out", type=Path, default=Path("pairwise"), help="results and the judge's reply cache")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--limit", type=int, default=None, help="compare only the first N common items of each benchmark")
    args = ap.parse_args(argv)
    if len(args.runs) < 2:
        print("pairwise: give two runs or more", file=sys.stderr)
        return 2

    try:
        cfg = to_typed(compose(overrides))
        folders = [eval_folder(d) for d in args.runs]
    except (ConfigError, FileNotFoundError) as exc:
        print(f"pairwise: {exc}", file=sys.stderr)
        return 2
    runs = {}
    for folder in folders:  # labels as the runs name themselves, kept apart when two share one
        label = json.loads((folder / "summary.json").read_text()).get("label") or folder.parent.name
        runs[label if label not in runs else f"{label} ({len(runs) + 1})"] = folder
    args.out.mkdir(parents=True, exist_ok=True)
    judge = make_judge(cfg, args.out / "judge_cache")

    try:
        panel.check(cfg)
    except ConfigError as exc:
        print(f"pairwise: {exc}", file=sys.stderr)
        return 2
    members = [
        (m.label, j, lambda t, m=m, j=j: panel.as_asked_by(m, j, t))
        for m, j in panel.judges(cfg, args.out / "judge_cache")
    ]
    res = compare_runs(judge, runs, args.resamples, args.limit, panel=members)
    (args.out / "pairwise.json").write_text(json.dumps(res, indent=2))
    log_to_wandb(cfg, args.out, res)
    text = markdown(res)
    (args.out / "pairwise.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The synthesize stage: run the REER search over this worker's shards of the pairs (all of them, or one:
an array task's, synthesis.store) and append one record per pair to its shard's `shards/shard-i-of-n.jsonl`.
A killed run resumes after its last whole record. The stage's result (counts, plots) is written by the
worker that finishes its shard last, over every shard; the others' runs end with their part done."""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from deepwriter.config.data import SourceConfig
from deepwriter.config.root import ConfigError, RootConfig, source_files
from deepwriter.config.synthesis import shard_split
from deepwriter.core.contract import StageContext, StageResult, StageSpec
from deepwriter.core.files import write_json_atomic
from deepwriter.core.records import RecordLog, read_records
from deepwriter.core.unfinished import Unfinished
from deepwriter.llm import make_generator, make_scorer, models
from deepwriter.pairs.prepare import prepare_pairs
from deepwriter.pairs.read import DataError, Pair, Skipped, load_pairs, reject
from deepwriter.pairs.released import RELEASED_THINKING
from deepwriter.pairs.sources import read_ready_pairs, source_of
from deepwriter.synthesis import filters, store
from deepwriter.synthesis.schedule import EndpointUsage, run_pairs
from deepwriter.synthesis.search import UnfinishedPair

log = logging.getLogger("deepwriter.synthesis")


def build_backends(cfg: RootConfig) -> Tuple[Any, Any]:
    """Generator and scorer; a transformers scorer becomes the prefix-caching one, and a scorer with
    the same config as the generator shares its weights instead of loading them twice."""
    # torch, transformers: loaded only when the run builds its models (an HTTP-only search needs neither)
    from deepwriter.llm.hf import TransformersGenerator, TransformersScorer
    from deepwriter.llm.hf_prefix import PrefixCachingScorer

    gcfg, scfg = cfg.models.generator, cfg.models.scorer
    generator = make_generator(gcfg, cfg.paths.cache_dir, measure_prompts=True)
    if gcfg == scfg and isinstance(generator, TransformersGenerator):
        scorer = PrefixCachingScorer(
            generator.model, generator.tokenizer, scfg.name, cfg.synthesis.prefix_cache_entries
        )
    else:
        scorer = make_scorer(scfg, cfg.paths.cache_dir)
        if isinstance(scorer, TransformersScorer):
            scorer = PrefixCachingScorer(
                scorer.model, scorer.tokenizer, scorer.model_id, cfg.synthesis.prefix_cache_entries
            )
    return generator, scorer


def _where(pair: Pair) -> str:
    return str(pair.meta.get("where", f"pair {pair.id}"))


def select_pairs(cfg: RootConfig, pairs: List[Pair], skipped: List[Skipped]) -> List[Pair]:
    """Drop repeated ids (the shard is keyed by id), apply the limit, keep this worker's share."""
    strict = cfg.data.strict
    seen: Dict[str, str] = {}
    unique = []
    for p in pairs:
        if p.id in seen:
            reject(_where(p), "id", f"duplicate id {p.id!r} (first at {seen[p.id]})", strict, skipped)
            continue
        seen[p.id] = _where(p)
        unique.append(p)
    if cfg.synthesis.limit is not None:
        unique = unique[: cfg.synthesis.limit]
    n, shards = shard_split(cfg.synthesis)
    return [p for p in unique if store.shard_of(p.id, n) in shards]


def check_lengths(cfg: RootConfig, pairs: List[Pair], skipped: List[Skipped], tokenizer: Any = None) -> List[Pair]:
    """Reject answers the scorer cannot see whole: a truncated y would be scored on a fragment.
    Checked on every pair of the shard (done or not), so a resumed run counts the same skips."""
    if not pairs:
        return pairs
    if tokenizer is None:
        tokenizer = models.load_tokenizer(cfg.models.scorer, cfg.paths.cache_dir)
    limit = cfg.models.scorer.max_context
    ok = []
    for p in pairs:
        n = len(tokenizer(p.y, add_special_tokens=False)["input_ids"])
        if n > limit:
            reject(
                _where(p),
                "y",
                f"{n} tokens, longer than the scorer's max_context ({limit}, models.scorer.max_context)",
                cfg.data.strict,
                skipped,
            )
            continue
        ok.append(p)
    return ok


class _Running:
    """Running figures for the progress bar and the result."""

    def __init__(self) -> None:
        self.first: List[float] = []
        self.last: List[float] = []
        self.steps = 0
        self.accepted = 0

    def add(self, rec: Dict[str, Any]) -> None:
        if rec["scores"]:
            self.first.append(rec["scores"][0])
            self.last.append(rec["scores"][-1])
        self.steps += len(rec.get("steps", []))
        self.accepted += len(rec.get("accepted_edits", []))

    def postfix(self) -> Dict[str, str]:
        """Mean scores before and after the search, over the pairs scored so far (none yet: no means, not
        "nan"; the first pairs to finish are often the ones discarded before scoring)."""
        scored = {"scored": str(len(self.first))}
        if not self.first:
            return scored
        return {
            **scored,
            "before": f"{_mean(self.first):.3f}",
            "after": f"{_mean(self.last):.3f}",
            "accept": f"{self.accepted / max(1, self.steps):.0%}",
        }


def _mean(xs: List[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def needs_prepare(cfg: RootConfig) -> bool:
    """Pairs need a preparation step when the source is not (request, answer) pairs yet, or when
    categories are to be labelled or quotas applied."""
    q = cfg.data.quotas
    return (
        not source_of(cfg.data.pairs).ready
        or cfg.data.label_categories
        or bool(q.max_per_category or q.shares)
        or cfg.data.queries.paired_extra > 0
    )


def load_stage_pairs(cfg: RootConfig, ctx: StageContext, backends: Dict[str, Any]) -> Tuple[List[Pair], List[Skipped]]:
    """The pairs to search: straight from the source, or through deepwriter.pairs.prepare (reverse
    queries, labels, quotas) into `prepared/` of this stage folder, which a resumed run reuses."""
    if not needs_prepare(cfg):
        return read_ready_pairs(cfg.data.pairs, cfg.data.strict, key="data.pairs")

    backends.update(zip(("generator", "scorer"), build_backends(cfg)))
    prepared = prepare_pairs(cfg, ctx.out_dir / "prepared", backends["generator"], backends["scorer"])
    fields = {"id": "id", "x": "request", "y": "answer", "category": "category", "answer_id": "answer_id"}
    if source_of(cfg.data.pairs).thinking:  # the authors' thinking of each pair, to compare ours with
        fields[RELEASED_THINKING] = RELEASED_THINKING
    src = SourceConfig(name=cfg.data.pairs.name, path=str(prepared.path), fields=fields)
    pairs, skipped = load_pairs(src, cfg.data.strict)
    return pairs, prepared.skipped + skipped


def preflight(cfg: RootConfig) -> None:
    """Before any stage runs: a local pairs file with no usable pair is an error, not a finished
    stage with nothing in it. (Sources that need preparation or come from a hub are checked when the
    stage loads them.)"""
    src = cfg.data.pairs
    if not src.path or needs_prepare(cfg):  # a source that is not pairs as it stands needs preparing
        return
    pairs, skipped = read_ready_pairs(src, cfg.data.strict, key="data.pairs")
    if not pairs:
        raise DataError(
            str(src.path),
            "<file>",
            f"data.pairs: no usable pair ({len(skipped)} records skipped); "
            "synthesis needs at least one (request, answer) pair",
        )


def run(cfg: RootConfig, ctx: StageContext) -> StageResult:
    scfg = cfg.synthesis
    n, shards = shard_split(scfg)
    other = store.split_in_folder(ctx.out_dir, n)
    if other is not None:
        raise ConfigError(
            f"synthesis.shards: {ctx.out_dir / 'shards'} holds records split {other} ways, and a stage folder keeps "
            f"the split it began with: synthesis.shards={other} (or synthesis.shard=i/{other})"
        )
    backends: Dict[str, Any] = {}
    pairs, skipped = load_stage_pairs(cfg, ctx, backends)
    selected = select_pairs(cfg, pairs, skipped)
    too_long: List[Skipped] = []
    mine = check_lengths(cfg, selected, too_long)
    kept_ids = {p.id for p in mine}
    too_long_of = zip([p for p in selected if p.id not in kept_ids], too_long)  # in the same order
    unfinished = Unfinished("synthesize", "pairs", total=len(mine), max_share=scfg.max_unfinished_share)
    not_started = 0
    fleet: Optional[Dict[str, float]] = None  # this run's throughput and utilisation (nothing to do: none)
    with contextlib.ExitStack() as opened:
        writers = {i: opened.enter_context(RecordLog(store.shard_path(ctx.out_dir, i, n))) for i in shards}
        for w in writers.values():
            if w.truncated_bytes:
                log.warning(
                    "%s: cut a torn last record (%d bytes) left by an interrupted run", w.path, w.truncated_bytes
                )
        todo = [p for p in mine if p.id not in writers[store.shard_of(p.id, n)].done]
        log.info(
            "synthesize: %d pairs in %s, %d already done, %d to go",
            len(mine),
            f"shard {shards[0]}/{n}" if len(shards) == 1 else f"{n} shard(s)",
            len(mine) - len(todo),
            len(todo),
        )
        if todo:
            for i in shards:  # not done until this run gets to its end
                store.done_path(ctx.out_dir, i, n).unlink(missing_ok=True)
            not_started, fleet = _search_pairs(cfg, ctx, todo, backends, _ShardWriters(writers, n), unfinished)
    unfinished.check(not_started=not_started)
    for i in shards:
        of_i = [p for p in mine if store.shard_of(p.id, n) == i]
        write_json_atomic(
            store.done_path(ctx.out_dir, i, n),
            {
                "pairs": len(of_i),
                "too_long": [str(sk) for p, sk in too_long_of if store.shard_of(p.id, n) == i],
                "answers_cut_at_think": sum(1 for p in of_i if p.meta.get("answer_after_think")),
                "unfinished": [x for x in unfinished.ids if store.shard_of(x, n) == i],
                "last_error": unfinished.last_error,
            },
        )
    done = [store.done_path(ctx.out_dir, i, n) for i in range(n)]
    if not all(d.is_file() for d in done):  # another worker's shard is still to come
        waiting = sum(1 for d in done if not d.is_file())
        return StageResult(
            counts={"pairs": len(mine) - len(unfinished.ids)}, part=f"shard {shards[0]}/{n}; {waiting} to come"
        )
    return _whole(cfg, ctx, n, skipped, fleet, unfinished.max_share)


class _ShardWriters:
    """Appends each record to the log of its pair's shard."""

    def __init__(self, writers: Dict[int, RecordLog], n: int):
        self.writers, self.n = writers, n

    def append(self, rec: Dict[str, Any]) -> None:
        self.writers[store.shard_of(rec["id"], self.n)].append(rec)


def _whole(
    cfg: RootConfig,
    ctx: StageContext,
    n: int,
    skipped: List[Skipped],
    fleet: Optional[Dict[str, float]],
    max_share: float,
) -> StageResult:
    """The stage's result over every shard, once each has its worker's end written."""
    ends = [json.loads(store.done_path(ctx.out_dir, i, n).read_text()) for i in range(n)]
    records = [r for i in range(n) for r in read_records(store.shard_path(ctx.out_dir, i, n))]
    shown = store.shard_path(ctx.out_dir, 0, n) if n == 1 else ctx.out_dir / "shards"
    result = _summarise(cfg, ctx, records, [*skipped, *(s for e in ends for s in e["too_long"])], shown)
    # answers given with their thinking, cut after the last </think> as the reference does
    result.counts["answers_cut_at_think"] = sum(e["answers_cut_at_think"] for e in ends)
    if fleet is not None:
        result.metrics["fleet"] = fleet
        ctx.tracker.summary({f"synthesize/fleet/{k}": v for k, v in fleet.items()})
    ids = [x for e in ends for x in e["unfinished"]]
    if ids:  # within max_unfinished_share: finished, with the pairs listed
        unfinished = Unfinished("synthesize", "pairs", sum(e["pairs"] for e in ends), max_share, ids)
        unfinished.last_error = next((e["last_error"] for e in ends if e["last_error"]), "")
        result.counts["unfinished"] = len(ids)
        result.unfinished = unfinished.as_dict()
    return result


def _search_pairs(cfg: RootConfig, ctx: StageContext, todo, backends: Dict[str, Any], writer, unfinished):
    """Search the pairs not done yet, appending each record as its search ends; a pair a failed call
    stopped is unfinished. Returns (pairs never started, the fleet's throughput figures)."""
    from tqdm.auto import tqdm

    scfg = cfg.synthesis
    if not backends:
        backends.update(zip(("generator", "scorer"), build_backends(cfg)))
    generator, scorer = backends["generator"], backends["scorer"]
    running = _Running()
    bar = tqdm(total=len(todo), desc="synthesize", unit="sample", dynamic_ncols=True)
    by_id = {p.id: p for p in todo}
    started = 0

    def admitted():
        """The pairs to start, until more are unfinished than the budget allows (the
        servers are failing): then no new pair starts and a re-run does the rest."""
        nonlocal started
        for p in todo:
            if unfinished.over_budget():
                return
            started += 1
            yield (p.id, p.x, p.y, p.meta.get("category"), p.meta.get(RELEASED_THINKING))

    usage = EndpointUsage()
    for rec in run_pairs(admitted(), generator, scorer, scfg, usage):
        if isinstance(rec, UnfinishedPair):  # no record: a failed call is not a verdict
            unfinished.add(rec.id, rec.error)
            log.warning("synthesize: pair %s unfinished: %s", rec.id, rec.error)
            bar.update(1)
            continue
        pair = by_id[rec["id"]]
        rec["source"] = pair.meta.get("source")
        # Records of one answer under several requests share its id (the mix keeps them all).
        rec["answer_id"] = pair.meta.get("answer_id") or pair.id
        writer.append(rec)
        bar.update(1)
        running.add(rec)
        bar.set_postfix(running.postfix(), refresh=False)
        point = {"synthesize/steps": len(rec["steps"]), "synthesize/kept": int(rec["verdict"]["kept"])}
        if rec["scores"]:
            point.update({"synthesize/score_z0": rec["scores"][0], "synthesize/score_final": rec["scores"][-1]})
        point.update({f"synthesize/fleet/{k}": v for k, v in usage.as_dict().items()})
        ctx.tracker.log(point)
    not_started = len(todo) - started
    if not_started:
        log.warning(
            "synthesize: %d pairs unfinished, more than max_unfinished_share allows; not starting the other %d",
            len(unfinished.ids),
            not_started,
        )
    fleet = usage.as_dict()
    log.info(
        "synthesize: %.1f pairs/min; generator busy %.0f%% (%.1f calls in flight on average), "
        "scorer busy %.0f%% (%.1f in flight)",
        fleet["pairs_per_min"],
        100 * fleet["generator_busy_share"],
        fleet["generator_mean_in_flight"],
        100 * fleet["scorer_busy_share"],
        fleet["scorer_mean_in_flight"],
    )
    bar.close()
    stats = getattr(scorer, "stats", None)
    if stats and stats.get("tokens_total"):
        log.info(
            "prefix scorer: ran %.0f%% of the scored tokens through the model (%d cache hits)",
            100 * stats["tokens_computed"] / stats["tokens_total"],
            stats["cache_hits"],
        )
    return not_started, fleet


def _summarise(
    cfg: RootConfig, ctx: StageContext, records: List[Dict[str, Any]], skipped: List[Skipped], path: Path
) -> StageResult:
    reasons = Counter(r["verdict"]["reason"] for r in records if not r["verdict"]["kept"])
    scored = [r for r in records if r["scores"]]
    first = [r["scores"][0] for r in scored]
    last = [r["scores"][-1] for r in scored]
    steps = sum(len(r["steps"]) for r in records)
    accepted = sum(len(r["accepted_edits"]) for r in records)
    counts: Dict[str, Any] = {
        "pairs": len(records),
        "kept": sum(1 for r in records if r["verdict"]["kept"]),
        "discarded": sum(reasons.values()),
        # counted apart: the reference's discards of z0 (before scoring), the paper's quality filters
        "discarded_before_search": sum(v for k, v in reasons.items() if k in filters.BEFORE_SEARCH),
        "discarded_by_quality_filters": sum(v for k, v in reasons.items() if k in filters.QUALITY),
        # prompts that cannot fit a model's context: verdicts, never outages (filters.OVER_CONTEXT)
        "discarded_over_context": sum(v for k, v in reasons.items() if k in filters.OVER_CONTEXT),
        "refine_steps_over_context": sum(1 for r in records for s in r["steps"] if s.get("rejected")),
        "candidates_over_context": sum(
            1 for r in records for s in r["steps"] for c in s["candidates"] if c.get("rejected")
        ),
        **{f"discarded_{k}": v for k, v in sorted(reasons.items())},
        "skipped_input": len(skipped),
        # pairs without a category (their source has none, and data.label_categories is off or failed)
        "uncategorised": sum(1 for r in records if not r.get("category")),
        "steps": steps,
        "accepted_edits": accepted,
    }
    if counts["uncategorised"]:
        log.info(
            "synthesize: %d of %d pairs have no category%s; they stay uncategorised",
            counts["uncategorised"],
            len(records),
            "" if cfg.data.label_categories else " (data.label_categories=true labels them)",
        )
    compared = [r for r in records if (r.get("released") or {}).get("score") is not None]
    counts["released_compared"] = len(compared)
    counts["released_not_compared"] = sum(1 for r in records if r.get("released") is None) if compared else 0
    metrics = {
        "released_comparison": released_comparison(compared) if compared else None,
        "mean_score_z0": _mean(first),
        "mean_score_final": _mean(last),
        "mean_perplexity_z0": _mean([math.exp(s) for s in first]),
        "mean_perplexity_final": _mean([math.exp(s) for s in last]),
        "acceptance_rate": accepted / steps if steps else 0.0,
        "skipped_reasons": [str(s) for s in skipped[:50]],
    }
    artifacts = {"shard": str(path.relative_to(ctx.out_dir))}  # a file, or the shards' folder
    plot = _plot_scores(scored, ctx.out_dir / "plots" / "score_vs_step.png")
    if plot is not None:
        artifacts["score_plot"] = str(plot.relative_to(ctx.out_dir))
        ctx.tracker.image("synthesize/score_vs_step", plot)
    _log_tables(ctx, records, first, last)
    ctx.tracker.summary({f"synthesize/{k}": v for k, v in metrics.items() if isinstance(v, float)})
    return StageResult(counts=counts, metrics=metrics, artifacts=artifacts)


def _mean_se(xs: List[float]) -> Tuple[float, float]:
    """The mean and its standard error (0 for one value)."""
    m = _mean(xs)
    if len(xs) < 2:
        return m, 0.0
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


def released_comparison(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Our final trajectories against the authors' released ones, pair for pair, under the same
    scorer (clipped mean NLL of y: lower is better), by length (words) and by our accepted edits;
    each mean with its standard error (paired differences: ours minus theirs)."""
    ours = [r["scores"][-1] for r in records]
    theirs = [r["released"]["score"] for r in records]
    words_ours = [len((r.get("z_final") or r.get("z0") or "").split()) for r in records]
    words_theirs = [r["released"]["words"] for r in records]
    out: Dict[str, Any] = {"pairs": len(records)}
    for name, xs in (
        ("score_ours", ours),
        ("score_released", theirs),
        ("score_difference", [a - b for a, b in zip(ours, theirs)]),
        ("words_ours", words_ours),
        ("words_released", words_theirs),
        ("accepted_edits_ours", [len(r.get("accepted_edits") or []) for r in records]),
    ):
        out[name], out[f"{name}_se"] = _mean_se([float(x) for x in xs])
    lower = sum(1 for a, b in zip(ours, theirs) if a < b)
    share = lower / len(records)
    out["ours_lower_share"] = share
    out["ours_lower_share_se"] = math.sqrt(share * (1 - share) / len(records))
    return out


def _plot_scores(records: List[Dict[str, Any]], out: Path) -> Optional[Path]:
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    longest = max(len(r["scores"]) for r in records)
    for r in records:
        ax.plot(range(len(r["scores"])), r["scores"], color="tab:blue", alpha=0.25, linewidth=1)
    # Mean over the samples still at each step (a finished search keeps its last score).
    mean = [_mean([r["scores"][min(s, len(r["scores"]) - 1)] for r in records]) for s in range(longest)]
    ax.plot(range(longest), mean, color="black", linewidth=2.5, label=f"mean of {len(records)} samples")
    ax.set_xlabel("search step (0 = initial trajectory z0)")
    ax.set_ylabel("clipped mean NLL of y (lower is better)")
    ax.set_title("REER search: score after each step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _log_tables(ctx: StageContext, records: List[Dict[str, Any]], first: List[float], last: List[float]) -> None:
    tracker = ctx.tracker
    if not getattr(tracker, "active", False):
        return
    import wandb

    rows = [
        [
            r["id"],
            r.get("category"),
            r["scores"][0] if r["scores"] else None,
            r["scores"][-1] if r["scores"] else None,
            len(r["steps"]),
            len(r["accepted_edits"]),
            r["verdict"]["kept"],
            r["verdict"]["reason"],
            (r["z_final"] or "")[:4000],
        ]
        for r in records
    ]
    tracker.table(
        "synthesize/trajectories",
        ["id", "category", "score_z0", "score_final", "steps", "accepted", "kept", "reason", "z_final"],
        rows,
    )
    if first:
        tracker.log(
            {
                "synthesize/hist_score_z0": wandb.Histogram(first),
                "synthesize/hist_score_final": wandb.Histogram(last),
                "synthesize/hist_improvement": wandb.Histogram([a - b for a, b in zip(first, last)]),
            }
        )
    curves = [r["scores"] for r in records if r["scores"]][:50]
    if curves:
        longest = max(len(c) for c in curves)
        tracker.log(
            {
                "synthesize/score_curves": wandb.plot.line_series(
                    xs=list(range(longest)),
                    ys=[c + [c[-1]] * (longest - len(c)) for c in curves],
                    keys=[r["id"] for r in records if r["scores"]][:50],
                    title="score vs step",
                    xname="step",
                )
            }
        )


STAGE = StageSpec(
    "synthesize",
    run,
    # the pairs and how they are prepared, the models, the search (its operational fields, such as the
    # schedule and pool sizes, are left out of the key)
    (
        "models.generator",
        "models.scorer",
        "synthesis",
        "data.pairs",
        "data.strict",
        "data.label_categories",
        "data.labels",
        "data.queries",
        "data.quotas",
        "data.taxonomy",
    ),
    needs=lambda cfg: [],
    input_files=source_files("data.pairs"),
    max_unfinished_share=lambda cfg: cfg.synthesis.max_unfinished_share,
    preflight=preflight,
    roles=lambda cfg: ["generator", "scorer"],
    array=lambda cfg: (
        [f"synthesis.shard={i}/{cfg.synthesis.shards}" for i in range(cfg.synthesis.shards)]
        if cfg.synthesis.shards > 1
        else []
    ),
)

"""The eval stage: the model under test answers every benchmark prompt, the judge scores the answers,
each benchmark's own formulas turn judgments into scores.

Output (in the stage folder):
  items/<bench>.generations.jsonl  answers as generated (resumable)
  items/<bench>.jsonl              per item: answer, scores, the judge's values and reasons, failures
                                   (with eval.judge_samples > 1: the mean, each judgment's scores in
                                   `judge_samples`)
  judge_cache/calls.jsonl          every judge reply (a re-run makes no judge calls)
  summary.json                     per-benchmark summaries and judge settings, the paper-layout headline
                                   with each figure's 95% interval, judge agreement, judge stats
  tables/paper.{md,csv}, tables/details.md, plots/*.png
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from deepwriter.config.eval import BenchmarkConfig
from deepwriter.config.llm import Backend, ModelConfig, ModelSource
from deepwriter.config.root import ConfigError, RootConfig, benchmark_files, expand
from deepwriter.core.badinput import Skipped
from deepwriter.core.contract import StageContext, StageResult, StageSpec
from deepwriter.core.unfinished import Unfinished
from deepwriter.eval import agreement, panel, stats, tables
from deepwriter.eval.benchmarks import judge_settings, load_items, module_for
from deepwriter.eval.benchmarks.base import Item, JudgeOutcome, JudgeTask
from deepwriter.eval.generate import generate_answers
from deepwriter.eval.judge import make_judge
from deepwriter.llm import make_generator

log = logging.getLogger("deepwriter.eval")


def judged_answer(mod, rec: Dict[str, Any]) -> str:
    """The part of a generation a benchmark judges: where its own code cuts the raw output
    (WritingBench: after the first "</think>\\n\\n"), that cut; otherwise the answer after the thinking."""
    cut = getattr(mod, "answer_from_output", None)
    return cut(rec["output"]) if cut is not None and "output" in rec else rec["answer"]


def _served(cfg: RootConfig) -> bool:
    s = cfg.models.student
    return s.backend == Backend.openai and s.serving.managed and cfg.serving.managed


def model_under_test(cfg: RootConfig, ctx: StageContext) -> ModelConfig:
    which = cfg.eval.model_under_test
    if which == "student":
        return cfg.models.student
    if which == "sft":
        if "sft" not in ctx.inputs:
            raise ConfigError("eval.model_under_test: 'sft' needs the sft stage's output, which this run does not have")
        folder = ctx.inputs["sft"] / "model"
        return dataclasses.replace(
            cfg.models.student,
            name=f"sft-{ctx.inputs['sft'].name[:8]}",
            source=ModelSource.local,
            path=str(folder),
            gguf_file=None,
            # in-process, unless the run serves the sft output itself (a managed replica: models.student.serving)
            backend=Backend.openai if _served(cfg) else Backend.transformers,
            tiny_config={},
        )
    raise ConfigError(f"eval.model_under_test: got {which!r}; expected 'sft' or 'student'")


def _write_jsonl_atomic(path: Path, records: List[Dict[str, Any]]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)


def _judge_view(o: JudgeOutcome) -> Dict[str, Any]:
    return {
        "ok": o.ok,
        "values": o.values,
        "reasons": o.reasons,
        "error": o.error,
        "calls": o.calls,
        "cached": o.cached,
        "reasks": o.reasks,
        "prompt_tokens": o.prompt_tokens,
        "completion_tokens": o.completion_tokens,
        "latency_s": round(o.latency_s, 4),
        "cost_usd": o.cost_usd,
    }


def preflight(cfg: RootConfig) -> None:
    """Before any stage runs: every enabled benchmark's kind and judge settings resolve (a judge
    style its benchmark does not have stops the run naming the key)."""
    for name, b in cfg.eval.benchmarks.items():
        if b.enabled:
            judge_settings(name, b, cfg.eval.judge)
    panel.check(cfg)


@dataclass
class _Bench:
    """One enabled benchmark entry of this run: its module, settings, items and what became of them."""

    module: Any
    cfg: BenchmarkConfig
    settings: Any
    items: List[Item]
    skipped: List[Skipped]
    answers: List[Optional[Dict[str, Any]]] = field(default_factory=list)


def run(cfg: RootConfig, ctx: StageContext) -> StageResult:
    """Answers by the model under test, judgments, then each benchmark's own scores and tables."""
    benches = _load(cfg)
    unfinished = Unfinished(
        "eval", "items", total=sum(len(b.items) for b in benches.values()), max_share=cfg.eval.max_unfinished_share
    )
    mut = model_under_test(cfg, ctx)
    generated = _answer(cfg, ctx, mut, benches, unfinished)
    judge, by_item, by_panel, panel_judges = _judge(cfg, ctx, benches, unfinished)
    unfinished.check()  # raises unless within max_unfinished_share; answers and replies are kept
    summary = _score(cfg, ctx, mut, judge, benches, by_item, set(unfinished.ids), by_panel)
    summary["judge_stats"] = judge.stats.as_dict()
    if panel_judges:  # each panel judge's calls, cache hits and cost, by its label
        summary["panel_stats"] = {m.label: j.stats.as_dict() for m, j in zip(cfg.eval.panel, panel_judges)}
    summary["generation"] = {
        "generated_now": generated,
        "items": sum(len(b.answers) for b in benches.values()),
        "thinking_unclosed": sum(1 for b in benches.values() for r in b.answers if r and not r["think_closed"]),
    }
    summary["unfinished"] = unfinished.as_dict()
    (ctx.out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str))
    artifacts = _publish(ctx, summary, judge)
    stats = judge.stats
    log.info(
        "eval: %d items, %d generated now; judge: %d tasks, %d calls, %d cached, %d failed",
        summary["generation"]["items"],
        generated,
        stats.tasks,
        stats.calls,
        stats.cache_hits,
        stats.failed,
    )
    counts = {
        "items": summary["generation"]["items"],
        "skipped_records": sum(len(b.skipped) for b in benches.values()),
        "generated": generated,
        "judge_tasks": stats.tasks,
        "judge_calls": stats.calls,
        "judge_cache_hits": stats.cache_hits,
        "judge_failures": stats.failed,
        "panel_judge_calls": sum(j.stats.calls for j in panel_judges),
        "judge_reasks": stats.reasks,
        "judge_cost_usd": round(stats.cost_usd, 6),
        "unfinished": len(unfinished.ids),
    }
    metrics = {k: v for k, v in summary["headline"].items() if v is not None}
    return StageResult(
        counts=counts, metrics=metrics, artifacts=artifacts, unfinished=unfinished.as_dict() if unfinished.ids else None
    )


def _load(cfg: RootConfig) -> Dict[str, _Bench]:
    """Every enabled benchmark with its items (bad records skipped and logged in lenient mode)."""
    ecfg = cfg.eval
    data_dir = expand(cfg.paths.data_dir)
    enabled = {name: b for name, b in ecfg.benchmarks.items() if b.enabled}
    if not enabled:
        raise ConfigError("eval.benchmarks: no benchmark is enabled")
    benches = {}
    for name, b in enabled.items():
        skipped: List[Skipped] = []
        items = load_items(name, b, data_dir, skipped=None if ecfg.strict else skipped)
        benches[name] = _Bench(module_for(name, b), b, judge_settings(name, b, ecfg.judge), items, skipped)
        for m in skipped:
            log.warning("eval: skipped a bad record of %s: %s", name, m)
    return benches


def _answer(cfg: RootConfig, ctx: StageContext, mut: ModelConfig, benches: Dict[str, _Bench], unfinished) -> int:
    """The model under test's answers (loaded, or served, only when something is left to generate);
    returns how many were generated now."""
    holder: Dict[str, Any] = {}

    def generator():
        if "gen" not in holder:
            if ctx.serving is not None:  # a managed server of the model under test: only when needed
                ctx.serving.up("student")

            holder["gen"] = make_generator(mut, cfg.paths.cache_dir, batch_size=cfg.eval.batch_size)
        return holder["gen"]

    generated = 0
    for name, b in benches.items():
        b.answers, made = generate_answers(
            generator,
            b.items,
            b.cfg,
            ctx.out_dir / "items" / f"{name}.generations.jsonl",
            seed=cfg.eval.seed,
            batch_size=cfg.eval.batch_size,
            unfinished=unfinished,
        )
        generated += made
    holder.clear()
    gc.collect()  # the model under test leaves memory before the judge loads
    if ctx.serving is not None:  # and its server stops before the judge's starts
        ctx.serving.down("student")
    return generated


def judge_sample(judge, task: JudgeTask, k: int) -> JudgeTask:
    """The k-th of eval.judge_samples judgments of a task: sampled with seed + k (the same seed would
    give the same reply), under its own cache key. The 0-th is the task itself."""
    if k == 0:
        return task
    sampling = judge.sampling_for(task)
    return dataclasses.replace(
        task, judge_sample=k, sampling=dataclasses.replace(sampling, seed=(sampling.seed or 0) + k)
    )


def _judge(cfg: RootConfig, ctx: StageContext, benches: Dict[str, _Bench], unfinished):
    """The judgments of the answers there are, each task eval.judge_samples times, by models.judge and
    by each judge of eval.panel; a failed judge call leaves its item unfinished. Returns the judge,
    {(bench, item id): [{task key: outcome}, one per judge sample]}, the same per panel judge label,
    and the panel's judges."""
    judge = make_judge(cfg, ctx.out_dir / "judge_cache")
    samples = cfg.eval.judge_samples
    tasks, owners = [], []
    for name, b in benches.items():
        for item, rec in zip(b.items, b.answers):
            if rec is None:
                continue
            for t in b.module.judge_tasks(item, judged_answer(b.module, rec), b.settings):
                for k in range(samples):
                    tasks.append(judge_sample(judge, t, k))
                    owners.append(name)
    if ctx.serving is not None and tasks:
        ctx.serving.up("judge")
    outcomes = judge.run(tasks, stop_after=max(0, unfinished.allowed - len(unfinished.ids)))
    by_item: Dict[Tuple[str, str], List[Dict[str, JudgeOutcome]]] = {}
    for name, t, o in zip(owners, tasks, outcomes):
        by_item.setdefault((name, o.item_id), [{} for _ in range(samples)])[t.judge_sample][o.key] = o
    for (name, item_id), per_sample in by_item.items():
        failed = [o.error for outs in per_sample for o in outs.values() if o.unfinished]
        if failed:
            unfinished.add(f"{name}/{item_id}", failed[0])
    if cfg.eval.panel:
        judge.release()  # a local judge's model leaves memory before a panel judge's loads
    by_panel, panel_judges = panel.run(cfg, ctx.out_dir / "judge_cache", tasks, owners, unfinished)
    return judge, by_item, by_panel, panel_judges


def _scored(module, item: Item, answer: str, per_sample: List[Dict[str, JudgeOutcome]]) -> Dict[str, Any]:
    """An item's scores by its benchmark. Judged several times: the mean over the judgments that gave
    a score (each kept in `judge_samples`, for intervals over judge samples); a failure only when
    none did."""
    each = [module.score_item(item, answer, outs) for outs in per_sample]
    if len(each) == 1:
        return each[0]
    scored = [r for r in each if "failure" not in r]
    if not scored:
        return each[0]
    return {**stats.merge_samples(scored), "judge_samples": scored}


def _judge_views(per_sample: List[Dict[str, JudgeOutcome]]) -> Dict[str, Any]:
    """Every judgment of the item, by task key (`key@k` for the k-th judge sample, k > 0)."""
    return {(k if s == 0 else f"{k}@{s}"): _judge_view(o) for s, outs in enumerate(per_sample) for k, o in outs.items()}


def _score(cfg, ctx, mut, judge, benches: Dict[str, _Bench], by_item, left_out: set, by_panel) -> Dict[str, Any]:
    """Each benchmark's item records and its own summary and headline columns."""
    summary: Dict[str, Any] = {
        "label": f"{cfg.recipe.name}/{cfg.run_id}",
        "recipe": cfg.recipe.name,
        "model_under_test": mut.name,
        "judge": judge.model_id,
        "judge_mode": "constrained" if judge.constrained else "json-schema" if judge.json_schema else "free-json",
        "benchmarks": {},
        "headline": {},
        # each headline figure's 95% bootstrap interval (deepwriter.eval.stats), over items and judge samples
        "intervals": {},
        "judge_samples": cfg.eval.judge_samples,
        "panel": [panel.PRIMARY, *(m.label for m in cfg.eval.panel)] if cfg.eval.panel else [],
    }
    for name, b in benches.items():
        records = []
        for item, rec in zip(b.items, b.answers):
            if f"{name}/{item.id}" in left_out:  # unfinished: no score, listed in the summary
                continue
            per_sample = by_item.get((name, item.id)) or [{}]
            answer = judged_answer(b.module, rec)
            extra = {}
            if by_panel:  # each panel judge's judged score, beside models.judge's (which the headline uses)
                extra["panel"] = {
                    label: agreement.judged_score(_scored(b.module, item, answer, outs.get((name, item.id)) or [{}]))
                    for label, outs in by_panel.items()
                }
            records.append(
                {
                    "id": item.id,
                    "prompt": item.prompt,
                    "answer": answer,
                    "thinking": rec["thinking"],
                    "think_closed": rec["think_closed"],
                    "finish_reason": rec["finish_reason"],
                    **_scored(b.module, item, answer, per_sample),
                    "judge": _judge_views(per_sample),
                    **extra,
                }
            )
        _write_jsonl_atomic(ctx.out_dir / "items" / f"{name}.jsonl", records)
        agg = b.module.summarize(records, b.cfg)
        head = b.module.headline(name, agg)
        intervals = stats.bootstrap(
            records,
            stats.headline_statistic(name, b.module, b.cfg),
            stats.strata_of(b.module, records),
            resamples=cfg.eval.bootstrap_resamples,
            seed=cfg.eval.seed,
        )
        summary["intervals"].update({k: v.as_dict() for k, v in intervals.items()})
        summary["benchmarks"][name] = {
            "kind": b.module.KIND,
            "judge_settings": dataclasses.asdict(b.settings),
            "judge_samples": cfg.eval.judge_samples,
            "summary": agg,
            "headline": head,
            "intervals": {k: v.as_dict() for k, v in intervals.items()},
            # with judge samples: Krippendorff's α of the judgments and the items they disagree on most
            "judge_agreement": agreement.of_judge_samples(records),
            # with a judge panel: Krippendorff's α across its judges and the items they disagree on most
            "panel_agreement": agreement.of_panel(records),
            "skipped": [str(s) for s in b.skipped],
            "unfinished": sorted(i.split("/", 1)[1] for i in left_out if i.startswith(name + "/")),
        }
        summary["headline"].update(head)
        ctx.tracker.table(
            f"eval/{name}/items",
            ["id", "prompt", "answer", "score", "failure"],
            [
                [r["id"], r["prompt"][:500], r["answer"][:2000], r.get("score", r.get("S_q")), r.get("failure")]
                for r in records
            ],
        )
    return summary


def _publish(ctx: StageContext, summary: Dict[str, Any], judge) -> Dict[str, str]:
    """Tables, plots and the W&B summary; the paper's reported figures beside the run's own."""
    out = ctx.out_dir
    artifacts = {"summary": "summary.json", "items": "items", "judge_cache": "judge_cache/calls.jsonl"}
    artifacts.update(tables.write_run_tables(summary, out / "tables"))
    artifacts.update(tables.write_run_plots(summary, out / "plots"))
    ctx.tracker.log({f"eval/{k}": v for k, v in summary["headline"].items() if v is not None})
    ctx.tracker.summary(tables.interval_summary(summary))  # eval/<column>_ci_low, _ci_high
    ctx.tracker.summary(
        {
            f"eval/{name}/judge_alpha": e["judge_agreement"]["alpha"]
            for name, e in summary["benchmarks"].items()
            if (e.get("judge_agreement") or {}).get("alpha") is not None
        }
    )
    ctx.tracker.summary(
        {
            f"eval/{name}/panel_alpha": e["panel_agreement"]["alpha"]
            for name, e in summary["benchmarks"].items()
            if (e.get("panel_agreement") or {}).get("alpha") is not None
        }
    )
    # the paper's reported figures beside the run's own, under their own keys (paper/..., never eval/...)
    ctx.tracker.summary(tables.reported_summary(summary))
    header, rows, _ = tables.reported(summary)
    ctx.tracker.table("eval/paper_reported", header, rows)
    ctx.tracker.summary({f"eval/judge_{k}": v for k, v in judge.stats.as_dict().items() if isinstance(v, (int, float))})
    for key, rel in artifacts.items():
        if rel.endswith(".png"):
            ctx.tracker.image(f"eval/{key}", out / rel)
    return artifacts


STAGE = StageSpec(
    "eval",
    run,
    ("eval", "models.judge", "models.student"),
    needs=lambda cfg: ["sft"] if cfg.eval.model_under_test == "sft" else [],
    input_files=benchmark_files,
    max_unfinished_share=lambda cfg: cfg.eval.max_unfinished_share,
    preflight=preflight,
    # the model under test (the student's preset, with the sft output's weights) and the judge
    roles=lambda cfg: ["student", "judge"],
    model_for=lambda cfg, ctx, role: model_under_test(cfg, ctx) if role == "student" else cfg.models.judge,
    serves_itself=True,
)

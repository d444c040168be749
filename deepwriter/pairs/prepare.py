"""Preparing (request, answer) pairs from any source kind: load, label categories, apply quotas,
write requests for answers without one (and, optionally, extra requests for answers that have one),
and write `pairs.jsonl` with a category report.

Output folder (`out_dir`):
- `pairs.jsonl`: id, request, answer, category, source (+ answer_id, origin, where); readable by
  `load_pairs` with `fields: {id: id, x: request, y: answer, category: category, answer_id:
  answer_id}` (rows of one answer share its answer_id). Written last,
  under a temporary name, so it is complete or absent.
- `labels.jsonl`, `queries.jsonl`, `queries_extra.jsonl`: append-only logs of the model work (one
  line per answer). A re-run reads them and does not label or query those answers again; a torn
  last line is cut.
- `skipped.jsonl` (bad input in lenient mode), `quota_dropped.jsonl`, `categories.{md,csv}`,
  `plots/categories.png`, `prepare_counts.json`.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from deepwriter.core.errors import UnfinishedError
from deepwriter.core.records import RecordLog
from deepwriter.pairs.categories import (
    UNLABELLED,
    LabelResult,
    apply_quotas,
    flat_labels,
    label_with_generator,
    label_with_scorer,
    write_distribution,
)
from deepwriter.pairs.queries import QueryOutcome, rejection_counts, synthesize_queries
from deepwriter.pairs.read import Pair, Skipped
from deepwriter.pairs.released import RELEASED_THINKING
from deepwriter.pairs.sources import load_source

log = logging.getLogger("deepwriter.data")

PAIRS = "pairs.jsonl"
LABELS = "labels.jsonl"
QUERIES = "queries.jsonl"
EXTRA_QUERIES = "queries_extra.jsonl"
COUNTS = "prepare_counts.json"


@dataclass
class PrepareResult:
    path: Path  # out_dir / pairs.jsonl
    counts: Dict[str, Any] = field(default_factory=dict)
    skipped: List[Skipped] = field(default_factory=list)
    artifacts: Dict[str, str] = field(default_factory=dict)  # name -> path relative to out_dir


def _category(p: Pair) -> Optional[str]:
    c = p.meta.get("category")
    return c if isinstance(c, str) and c.strip() else None


def _label(
    pairs: List[Pair], cfg, out_dir: Path, generator, scorer, counts: Dict[str, Any]
) -> Dict[str, Optional[str]]:
    """id -> category for every pair: the source's own, else (when enabled) a model's."""
    from tqdm.auto import tqdm

    dcfg = cfg.data
    cats = {p.id: _category(p) for p in pairs}
    counts["labels_given"] = sum(c is not None for c in cats.values())
    if not dcfg.label_categories:
        return cats
    labels = flat_labels(dcfg.taxonomy)
    with RecordLog(out_dir / LABELS) as work:
        todo = [p for p in pairs if cats[p.id] is None and p.id not in work.done]
        counts["labels_reused"] = sum(1 for p in pairs if cats[p.id] is None and p.id in work.done)
        if todo and scorer is None and generator is None:
            raise ValueError(
                f"data.label_categories: {len(todo)} pairs have no category; prepare_pairs needs a scorer "
                "or a generator to label them (or set data.label_categories=false)"
            )
        bs = dcfg.labels.batch_size
        bar = tqdm(
            total=len(todo),
            desc=f"label categories ({'scorer' if scorer is not None else 'generator'})",
            unit="pair",
            dynamic_ncols=True,
        )
        failed: List[str] = []
        for start in range(0, len(todo), bs):
            if failed:  # a failed call after its retries: stop, keep what is labelled, a re-run goes on
                break
            batch = todo[start : start + bs]
            items = [(p.x, p.y) for p in batch]
            if scorer is not None:
                results: List[LabelResult] = label_with_scorer(items, scorer, labels, dcfg.labels)
            else:
                results = label_with_generator(items, generator, labels, dcfg.labels, seed=dcfg.queries.seed)
            work.append(
                [
                    {"id": p.id, "category": r.category, "method": r.method, **r.detail}
                    for p, r in zip(batch, results)
                    if r.error is None
                ]
            )
            failed += [r.error for r in results if r.error is not None]
            bar.update(len(batch))
        bar.close()
        missing = [p for p in todo if p.id not in work.done]
        if missing:
            raise UnfinishedError(
                "synthesize (prepare: category labels)", "answers", len(missing), len(todo), failed[-1]
            )
        failures = 0
        for p in pairs:
            if cats[p.id] is None:
                cats[p.id] = work.done[p.id]["category"]
                failures += cats[p.id] is None
    counts["labels_by_model"] = sum(1 for p in pairs if _category(p) is None) - failures
    counts["label_failures"] = failures
    return cats


def prepare_pairs(cfg, out_dir: Path, generator=None, scorer=None) -> PrepareResult:
    """Load `cfg.data.pairs` (any kind), label missing categories (`data.label_categories`; a scorer
    is preferred over a generator), apply `data.quotas`, write requests for answers without one
    (`data.queries`, needs `generator`), and write `pairs.jsonl` + the category report into out_dir.
    Resumable: labels and requests already in out_dir's logs are not made again."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dcfg = cfg.data
    labels = flat_labels(dcfg.taxonomy) if dcfg.taxonomy else []
    unknown_shares = sorted(set(dcfg.quotas.shares) - set(labels) - {UNLABELLED})
    if unknown_shares:
        raise ValueError(
            f"data.quotas.shares: {unknown_shares[0]!r} is not a category of data.taxonomy (nor {UNLABELLED!r})"
        )

    loaded = load_source(dcfg.pairs, dcfg.strict, key="data.pairs")
    pairs = loaded.pairs
    counts: Dict[str, Any] = {"kind": dcfg.pairs.kind, "loaded": len(pairs), "skipped_bad_records": len(loaded.skipped)}
    counts.update({f"source_{k}": v for k, v in loaded.counts.items()})

    cats = _label(pairs, cfg, out_dir, generator, scorer, counts)
    bucket = {pid: (c if c is not None else UNLABELLED) for pid, c in cats.items()}
    counts["outside_taxonomy"] = sum(1 for c in bucket.values() if c != UNLABELLED and labels and c not in labels)

    kept_ids, targets = apply_quotas([(p.id, bucket[p.id]) for p in pairs], dcfg.quotas)
    kept = set(kept_ids)
    counts["kept_by_quota"] = len(kept)
    counts["dropped_by_quota"] = len(pairs) - len(kept)
    with open(out_dir / "quota_dropped.jsonl", "w") as f:
        for p in pairs:
            if p.id not in kept:
                f.write(
                    json.dumps(
                        {
                            "id": p.id,
                            "category": bucket[p.id],
                            "reason": f"category quota {targets.get(bucket[p.id])} reached",
                        }
                    )
                    + "\n"
                )

    selected = [p for p in pairs if p.id in kept]
    need_query = [p for p in selected if not p.x.strip()]
    logged, asked = _logged_queries(
        out_dir / QUERIES,
        [(p.id, p.y) for p in need_query],
        generator,
        dcfg.queries,
        "reverse queries",
        f"answers of source {dcfg.pairs.name!r} have no request",
    )
    counts["queries_reused"] = len(need_query) - asked
    outcomes = [QueryOutcome(**logged[p.id]) for p in need_query]
    counts["answers_needing_query"] = len(need_query)
    counts["queries_accepted"] = sum(len(o.queries) for o in outcomes)
    counts["answers_without_query"] = sum(1 for o in outcomes if not o.queries)
    counts["queries_rejected"] = rejection_counts(outcomes)

    extra = _extra_queries(selected, dcfg, out_dir, generator, counts)
    rows = _pair_rows(selected, bucket, {o.id: o for o in outcomes}, dcfg.queries.queries_per_answer, extra)
    tmp = out_dir / (PAIRS + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, out_dir / PAIRS)
    counts["pairs"] = len(rows)

    with open(out_dir / "skipped.jsonl", "w") as f:
        for s in loaded.skipped:
            f.write(json.dumps({"where": s.where, "field": s.field, "reason": s.reason}, ensure_ascii=False) + "\n")
    stages = {
        "loaded": dict(Counter(bucket.values())),
        "after_quota": dict(Counter(bucket[p.id] for p in selected)),
        "pairs": dict(Counter(r["category"] or UNLABELLED for r in rows)),
    }
    artifacts = {
        "pairs": PAIRS,
        "labels_log": LABELS,
        "queries_log": QUERIES,
        "extra_queries_log": EXTRA_QUERIES,
        "skipped": "skipped.jsonl",
        "quota_dropped": "quota_dropped.jsonl",
        "counts": COUNTS,
    }
    artifacts.update(write_distribution(out_dir, dcfg.taxonomy, stages))
    (out_dir / COUNTS).write_text(json.dumps(counts, indent=2))
    log.info("prepare: %d pairs from %d answers (%s)", len(rows), len(selected), dcfg.pairs.name)
    return PrepareResult(out_dir / PAIRS, counts, loaded.skipped, artifacts)


def _extra_queries(
    selected: List[Pair], dcfg, out_dir: Path, generator, counts: Dict[str, Any]
) -> Dict[str, List[str]]:
    """Extra requests for a seeded share of the answers that already have one (`paired_extra`,
    `paired_extra_share`), each distinct from the answer's own request. answer id -> requests."""
    import random

    q = dcfg.queries
    if q.paired_extra < 0 or not 0.0 <= q.paired_extra_share <= 1.0:
        raise ValueError(
            f"data.queries: paired_extra must be >= 0 and paired_extra_share in [0, 1], got "
            f"{q.paired_extra} and {q.paired_extra_share}"
        )
    paired = sorted((p for p in selected if p.x.strip()), key=lambda p: p.id)
    if q.paired_extra == 0 or not paired:
        return {}
    # Chosen by a seeded shuffle of the sorted ids: the same answers on every re-run and shard.
    random.Random(q.seed).shuffle(paired)
    chosen = paired[: round(q.paired_extra_share * len(paired))]
    logged, asked = _logged_queries(
        out_dir / EXTRA_QUERIES,
        [(p.id, p.y) for p in chosen],
        generator,
        q,
        "extra requests",
        f"data.queries.paired_extra={q.paired_extra}: answers need extra requests",
        per_answer=q.paired_extra,
        known={p.id: [p.x] for p in chosen},
    )
    outcomes = [QueryOutcome(**logged[p.id]) for p in chosen]
    counts["answers_given_extra_queries"] = len(chosen)
    counts["extra_queries_reused"] = len(chosen) - asked
    counts["extra_queries_accepted"] = sum(len(o.queries) for o in outcomes)
    counts["extra_queries_rejected"] = rejection_counts(outcomes)
    return {o.id: o.queries for o in outcomes}


def _logged_queries(path: Path, answers: List[tuple], generator, qcfg, what: str, why: str, **kwargs: Any) -> tuple:
    """Requests for (id, answer) pairs through the work log at `path`: answers already logged are not
    asked again. Returns (every logged record by id, how many answers were asked now). A failed model
    call leaves answers out of the log: the stage stops with UnfinishedError and a re-run goes on."""
    with RecordLog(path) as work:
        todo = [(aid, y) for aid, y in answers if aid not in work.done]
        if todo:
            if generator is None:
                raise ValueError(f"{len(todo)} {why}; prepare_pairs needs a generator to write them (data.queries)")
            outcomes = synthesize_queries(
                todo, generator, qcfg, on_batch=lambda b: work.append([o.to_json() for o in b]), **kwargs
            )
            missing = [aid for aid, _ in todo if aid not in work.done]
            if missing:
                errors = [o.error for o in outcomes if o.error]
                raise UnfinishedError(
                    f"synthesize (prepare: {what})",
                    "answers",
                    len(missing),
                    len(todo),
                    errors[-1] if errors else "no error recorded",
                )
        return dict(work.done), len(todo)


def _pair_rows(
    selected: List[Pair],
    bucket: Dict[str, str],
    outcomes: Dict[str, QueryOutcome],
    per_answer: int,
    extra: Dict[str, List[str]],
) -> List[dict]:
    rows = []
    for p in selected:
        cat = bucket[p.id] if bucket[p.id] != UNLABELLED else None
        base = {
            "answer": p.y,
            "category": cat,
            "source": p.meta.get("source"),
            "answer_id": p.id,
            "where": p.meta.get("where"),
        }
        if p.meta.get(RELEASED_THINKING):  # the authors' thinking for this pair, compared with ours
            base[RELEASED_THINKING] = p.meta[RELEASED_THINKING]
        if p.x.strip():
            rows.append({"id": p.id, "request": p.x, **base, "origin": "source"})
            for j, q in enumerate(extra.get(p.id, ()), start=1):
                rows.append({"id": f"{p.id}-x{j}", "request": q, **base, "origin": "reverse_query_extra"})
            continue
        for j, q in enumerate(outcomes[p.id].queries):
            rid = p.id if per_answer == 1 else f"{p.id}-q{j}"
            rows.append({"id": rid, "request": q, **base, "origin": "reverse_query"})
    return rows

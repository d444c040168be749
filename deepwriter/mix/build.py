"""Building the SFT mix: synthetic trajectories + public reasoning data, cleaned and counted.

Order: the paper's quality filters on imported trajectories, category ablation, exact and near-duplicate
removal, decontamination, token-length filter, length-quantile ablation, per-source counts, total,
seeded shuffle. Every removed record is kept in
`MixResult.removed[filter]` with its reason, so that the stage can list it.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from tqdm.auto import tqdm

from deepwriter.config.data import MixConfig
from deepwriter.core import think
from deepwriter.mix.decontam import BenchmarkIndex
from deepwriter.mix.dedup import NearDuplicateIndex, exact_key
from deepwriter.pairs.read import (
    BadRecord,  # a bad record: the field and the reason
    DataError,
    Skipped,
    reject,
)

log = logging.getLogger("deepwriter.data")

SYNTHETIC = "synthetic"
PUBLIC = "public"


def assistant_content(thinking: str, y: str) -> str:
    return think.turn(thinking, y)


def to_messages(rec: Dict[str, Any]) -> List[Dict[str, str]]:
    return [
        {"role": "user", "content": rec["x"]},
        {"role": "assistant", "content": assistant_content(rec["think"], rec["y"])},
    ]


# --- synthetic trajectories --------------------------------------------------------------------


def gather(items: Iterable[Tuple[str, Any]], strict: bool) -> Tuple[List[Dict[str, Any]], List[Skipped], int]:
    """Mix records from (where, item) pairs, whatever format they were read from: an item is a record,
    None (a trajectory its search did not keep) or a BadRecord (a bad record: an error in strict mode,
    a counted skip otherwise). A repeated id is a bad record: the mix's lists name records by id.
    Also returns the count of records not kept."""
    records: List[Dict[str, Any]] = []
    skipped: List[Skipped] = []
    not_kept = 0
    seen: Dict[str, str] = {}
    for where, item in items:
        if isinstance(item, BadRecord):
            reject(where, item.field, item.reason, strict, skipped)
            continue
        if item is None:
            not_kept += 1
            continue
        if item["id"] in seen:
            reject(where, "id", f"duplicate id {item['id']!r} (first at {seen[item['id']]})", strict, skipped)
            continue
        seen[item["id"]] = where
        item["where"] = where
        records.append(item)
    return records, skipped, not_kept


def load_trajectories(
    shard_dir: Path, trajectory_field: str, strict: bool
) -> Tuple[List[Dict[str, Any]], List[Skipped], int]:
    """Kept trajectories of every `shards/*.jsonl` as mix records; also the count of records the
    search did not keep."""
    if trajectory_field not in ("z_final", "z0"):
        raise DataError(
            "data.mix.trajectory_field", "trajectory_field", f"got {trajectory_field!r}; expected z_final or z0"
        )

    def items() -> Iterator[Tuple[str, Any]]:
        for shard in sorted(shard_dir.glob("*.jsonl")):
            with open(shard, "rb") as f:
                for lineno, raw in enumerate(f, start=1):
                    if not raw.strip():
                        continue
                    try:
                        yield f"{shard}:{lineno}", _trajectory(raw, trajectory_field)
                    except BadRecord as r:
                        yield f"{shard}:{lineno}", r

    return gather(items(), strict)


def _trajectory(raw: bytes, zfield: str) -> Optional[Dict[str, Any]]:
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRecord("<line>", "not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise BadRecord("<line>", f"malformed JSON ({exc.msg}: column {exc.colno}); a truncated last line?") from None
    if not isinstance(row, dict):
        raise BadRecord("<line>", "expected a JSON object")
    verdict = row.get("verdict")
    if not isinstance(verdict, dict) or not isinstance(verdict.get("kept"), bool):
        raise BadRecord("verdict", "missing or without a boolean 'kept'")
    if not verdict["kept"]:
        return None
    out = {}
    for ours, theirs in (("id", "id"), ("x", "x"), ("y", "y"), ("think", zfield)):
        v = row.get(theirs)
        if not isinstance(v, str) or not v.strip():
            raise BadRecord(theirs, "missing, empty or not a string")
        out[ours] = v
    cat = row.get("category")
    out["category"] = cat if isinstance(cat, str) and cat else "uncategorised"
    aid = row.get("answer_id")
    out["answer_id"] = aid if isinstance(aid, str) and aid else out["id"]
    out["source"] = SYNTHETIC
    return out


# --- the mix ----------------------------------------------------------------------------------


@dataclass
class MixResult:
    rows: List[Dict[str, Any]]  # final records (id, source, category, x, think, y, kind, tokens)
    removed: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)
    counts: Dict[str, Any] = field(default_factory=dict)
    lengths: Dict[str, List[int]] = field(default_factory=dict)  # token lengths of kept records by kind
    timings: Dict[str, float] = field(default_factory=dict)
    # samples over sft.max_length, by category and by answer length (words), whether dropped or kept
    over_max_length: Dict[str, Dict[str, int]] = field(default_factory=dict)


def _drop(result: MixResult, name: str, rec: Dict[str, Any], reason: str, **detail: Any) -> None:
    result.removed.setdefault(name, []).append(
        {"id": rec["id"], "source": rec["source"], "category": rec.get("category"), "reason": reason, **detail}
    )


def token_lengths(
    recs: List[Dict[str, Any]], tokenizer, num_proc: int, with_think: bool, work_dir: Optional[Path] = None
) -> Tuple[List[int], List[int]]:
    """Tokens of each record rendered with the tokenizer's chat template (and of its thinking
    alone when `with_think`), computed with datasets.map so that `num_proc` processes share it.

    The texts go through an on-disk, memory-mapped dataset in a temporary folder (under `work_dir`
    when given): an in-memory one costs several times the text's size and is copied to every
    worker, which for a paper-sized mix means gigabytes."""
    import tempfile
    import uuid

    import datasets

    if not recs:
        return [], []

    def rows():
        for r in recs:
            yield {"x": r["x"], "think": r["think"], "y": r["y"]}

    def count(batch):
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": x}, {"role": "assistant", "content": assistant_content(t, y)}],
                tokenize=False,
            )
            for x, t, y in zip(batch["x"], batch["think"], batch["y"])
        ]
        out = {"n": [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]}
        out["n_think"] = (
            [len(ids) for ids in tokenizer(batch["think"], add_special_tokens=False)["input_ids"]]
            if with_think
            else [0] * len(texts)
        )
        return out

    features = datasets.Features({k: datasets.Value("large_string") for k in ("x", "think", "y")})
    with tempfile.TemporaryDirectory(prefix="dw-token-lengths-", dir=work_dir) as tmp:
        # Explicit fingerprints: otherwise datasets hashes the generator's closure, i.e. every text.
        tag = uuid.uuid4().hex
        ds = datasets.Dataset.from_generator(
            rows, features=features, cache_dir=tmp, writer_batch_size=256, fingerprint=tag
        )
        ds = ds.map(
            count,
            batched=True,
            batch_size=256,
            num_proc=num_proc if num_proc > 1 and len(recs) > 512 else None,
            remove_columns=["x", "think", "y"],
            writer_batch_size=256,
            new_fingerprint=tag + "-n",
            desc=f"token lengths (num_proc={num_proc})",
        )
        n, n_think = list(ds["n"]), list(ds["n_think"])
        del ds
    return n, n_think


def _take(
    pool: List[Dict[str, Any]], want: Optional[int], what: str, strict: bool, rng: random.Random, counts: Dict[str, Any]
) -> List[Dict[str, Any]]:
    if want is None:
        return pool
    if want > len(pool):
        msg = f"data.mix.{what}: {want} requested, {len(pool)} available after filtering"
        if strict:
            raise DataError("data.mix", what, msg.split(": ", 1)[1])
        log.warning("%s; taking all", msg)
        counts[f"shortfall_{what}"] = want - len(pool)
        return pool
    order = list(range(len(pool)))
    rng.shuffle(order)
    return [pool[i] for i in sorted(order[:want])]


def build_mix(
    synthetic: List[Dict[str, Any]],
    public: List[Dict[str, Any]],
    cfg: MixConfig,
    *,
    taxonomy: Dict[str, List[str]],
    benchmark_prompts: Dict[str, List[str]],
    tokenizer,
    max_length: int,
    strict: bool,
    strip_reflection: Optional[Callable[[str], str]] = None,
    work_dir: Optional[Path] = None,
    quality_filter: Optional[Callable[[Dict[str, Any]], Optional[str]]] = None,
) -> MixResult:
    """The mix: every filter in turn (the paper's quality filters on imported trajectories, taxonomy,
    ablated groups, exact and near duplicates, benchmark contamination, length, the length ablation),
    each drop recorded with its reason, then the sample. `quality_filter`: a synthetic record -> the
    quality filter it fails (late_reflection, repetition) or None; given for imported trajectories,
    which no search of ours has filtered."""
    result = MixResult(rows=[])
    for r in synthetic:
        r["kind"] = SYNTHETIC
    for r in public:
        r["kind"] = PUBLIC
    result.counts["loaded_synthetic"], result.counts["loaded_public"] = len(synthetic), len(public)
    synthetic = _quality(synthetic, quality_filter, result)
    recs = _check_taxonomy(synthetic + public, taxonomy, strict, result)
    if cfg.strip_reflection and strip_reflection is not None:
        for r in synthetic:
            r["think"] = strip_reflection(r["think"])
    recs = _drop_groups(recs, cfg.drop_groups, taxonomy, result)
    t0 = time.perf_counter()
    recs = _dedup(recs, cfg, result)
    result.timings["dedup_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    recs = _decontaminate(recs, cfg, benchmark_prompts, result)
    result.timings["decontam_s"] = time.perf_counter() - t0
    recs = _by_length(recs, cfg, tokenizer, max_length, work_dir, result)
    _choose(recs, cfg, strict, result)
    return result


def _quality(synthetic: List[Dict[str, Any]], quality_filter, result: MixResult) -> List[Dict[str, Any]]:
    """The paper's quality filters on imported thinking, every trajectory checked and counted (data
    already filtered loses nothing, and `quality_filtered` 0 says so)."""
    if quality_filter is None:
        return synthetic
    keep = []
    for r in synthetic:
        reason = quality_filter(r)
        if reason is None:
            keep.append(r)
        else:
            _drop(result, reason, r, f"fails the paper's quality filter: {reason}")
    result.counts["quality_checked"] = len(synthetic)
    result.counts["quality_filtered"] = len(synthetic) - len(keep)
    return keep


def _check_taxonomy(recs: List[Dict[str, Any]], taxonomy: Dict[str, List[str]], strict: bool, result: MixResult):
    """A trajectory labelled outside the taxonomy would silently escape the category ablations."""
    if not taxonomy:
        return recs
    known = {c for cats in taxonomy.values() for c in cats} | {"uncategorised"}
    keep = []
    for r in recs:
        if r["kind"] != SYNTHETIC or r["category"] in known:  # public data keeps its source's labels
            keep.append(r)
            continue
        reason = f"category {r['category']!r} is not in data.taxonomy"
        if strict:
            raise DataError(r.get("where", f"record {r['id']}"), "category", reason)
        _drop(result, "category_outside_taxonomy", r, reason)
    return keep


def _drop_groups(recs, drop_groups: List[str], taxonomy: Dict[str, List[str]], result: MixResult):
    """The no-literature ablation: every category of the dropped taxonomy groups goes."""
    if not drop_groups:
        return recs
    unknown = [g for g in drop_groups if g not in taxonomy]
    if unknown:
        raise DataError("data.mix", "drop_groups", f"unknown group {unknown[0]!r}; expected some of {sorted(taxonomy)}")
    dropped_cats = {c for g in drop_groups for c in taxonomy[g]}
    keep = []
    for r in recs:
        if r["category"] in dropped_cats:
            _drop(result, "category_ablation", r, f"category {r['category']!r} is in a dropped group")
        else:
            keep.append(r)
    return keep


def _dedup(recs, cfg: MixConfig, result: MixResult):
    if cfg.dedup.exact:
        seen: Dict[str, str] = {}
        keep = []
        for r in tqdm(recs, desc="exact dedup", unit="rec", mininterval=2.0, leave=False):
            k = exact_key(r["x"], r["think"], r["y"])
            if k in seen:
                _drop(result, "exact_duplicate", r, "same request, thinking and answer", duplicate_of=seen[k])
            else:
                seen[k] = r["id"]
                keep.append(r)
        recs = keep
    if cfg.dedup.near:
        index = NearDuplicateIndex(cfg.dedup, seed=cfg.seed + 1)
        keep = []
        for r in tqdm(recs, desc="near dedup", unit="rec", mininterval=2.0, leave=False):
            # One answer under several requests (data.queries.paired_extra) is meant, not a duplicate.
            hit = index.add(
                f"{r['kind']}:{r['id']}", r["x"] + "\n" + r["y"], group=f"{r['kind']}:{r.get('answer_id') or r['id']}"
            )
            if hit is not None:
                _drop(
                    result,
                    "near_duplicate",
                    r,
                    "request + answer near-duplicate",
                    duplicate_of=hit[0].split(":", 1)[1],
                    jaccard=round(hit[1], 3),
                )
            else:
                keep.append(r)
        recs = keep
    return recs


def _decontaminate(recs, cfg: MixConfig, benchmark_prompts: Dict[str, List[str]], result: MixResult):
    if not (cfg.decontam.enabled and benchmark_prompts):
        return recs
    bench = BenchmarkIndex(benchmark_prompts, cfg.decontam)
    result.counts["benchmark_prompts"] = len(bench)
    keep = []
    for r in tqdm(recs, desc="decontaminate", unit="rec", mininterval=2.0, leave=False):
        m = bench.match(r["x"])
        if m is not None:
            _drop(
                result,
                "contaminated",
                r,
                "request overlaps a benchmark prompt",
                benchmark=m.benchmark,
                prompt_index=m.prompt_index,
                score=m.score,
                shared_ngrams=m.shared,
            )
        else:
            keep.append(r)
    return keep


# LongBench-Write's required-length ranges (words), the answers its long buckets reward
ANSWER_WORD_BUCKETS = ((0, 500), (500, 2000), (2000, 4000), (4000, None))


def answer_bucket(y: str) -> str:
    """The LongBench-Write-style length range of an answer, in words ("2000-4000", "4000+")."""
    n = len(y.split())
    for lo, hi in ANSWER_WORD_BUCKETS:
        if hi is None or n < hi:
            return f"{lo}+" if hi is None else f"{lo}-{hi}"
    raise AssertionError("unreachable")


def _sample_tokens(r: Dict[str, Any], tokenizer) -> int:
    """Tokens of one record as the SFT sample is rendered (as token_lengths counts them)."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": r["x"]}, {"role": "assistant", "content": assistant_content(r["think"], r["y"])}],
        tokenize=False,
    )
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def truncate_thinking(r: Dict[str, Any], n: int, max_length: int, tokenizer) -> Optional[int]:
    """Cut r's thinking from its end until the sample fits max_length (in place); the request and the
    answer are never cut. Returns the sample's tokens, or None when no thinking is left to cut."""
    ids = tokenizer(r["think"], add_special_tokens=False)["input_ids"]
    keep = len(ids)
    while n > max_length:
        keep -= n - max_length + 1  # token boundaries move a little when the text is decoded again
        if keep <= 0:
            return None
        r["think"] = tokenizer.decode(ids[:keep]).rstrip()
        n = _sample_tokens(r, tokenizer)
    return n


def _by_length(recs, cfg: MixConfig, tokenizer, max_length: int, work_dir: Optional[Path], result: MixResult):
    """Samples over sft.max_length go, or keep a shortened thinking (mix.over_max_length), counted by
    category and answer length; then the length ablations' quantiles of the synthetic thinking."""
    t0 = time.perf_counter()
    quantiles = cfg.drop_above_quantile is not None or cfg.drop_below_quantile is not None
    lengths, think_lengths = token_lengths(recs, tokenizer, cfg.num_proc, with_think=quantiles, work_dir=work_dir)
    result.timings["tokenize_s"] = time.perf_counter() - t0
    keep = []
    over: Dict[str, Dict[str, int]] = {"by_category": {}, "by_answer_words": {}}
    result.counts["over_max_length"] = result.counts["over_max_length_kept_thinking_cut"] = 0
    for r, n, nt in zip(recs, lengths, think_lengths):
        r["tokens"], r["think_tokens"] = n, nt
        if n <= max_length:
            keep.append(r)
            continue
        result.counts["over_max_length"] += 1
        category = r.get("category") or "uncategorised"
        for key, value in (("by_category", category), ("by_answer_words", answer_bucket(r["y"]))):
            over[key][value] = over[key].get(value, 0) + 1
        fitted = truncate_thinking(r, n, max_length, tokenizer) if cfg.over_max_length == "truncate_thinking" else None
        if fitted is None:
            _drop(result, "too_long", r, f"{n} tokens > sft.max_length {max_length}", tokens=n)
            continue
        result.counts["over_max_length_kept_thinking_cut"] += 1
        r["tokens"], r["think_truncated_from"] = fitted, n
        if quantiles:
            r["think_tokens"] = len(tokenizer(r["think"], add_special_tokens=False)["input_ids"])
        keep.append(r)
    result.over_max_length = over
    recs = keep
    synth_t = [r["think_tokens"] for r in recs if r["kind"] == SYNTHETIC]
    if not quantiles or not synth_t:
        return recs
    import numpy as np

    hi = np.quantile(synth_t, cfg.drop_above_quantile) if cfg.drop_above_quantile is not None else None
    lo = np.quantile(synth_t, cfg.drop_below_quantile) if cfg.drop_below_quantile is not None else None
    keep = []
    for r in recs:
        t = r["think_tokens"]
        if r["kind"] == SYNTHETIC and hi is not None and t > hi:
            _drop(result, "length_ablation", r, f"thinking {t} tokens > quantile {cfg.drop_above_quantile} ({hi:.0f})")
        elif r["kind"] == SYNTHETIC and lo is not None and t < lo:
            _drop(result, "length_ablation", r, f"thinking {t} tokens < quantile {cfg.drop_below_quantile} ({lo:.0f})")
        else:
            keep.append(r)
    return keep


def _choose(recs, cfg: MixConfig, strict: bool, result: MixResult) -> None:
    """The sample of the kept records (mix.synthetic + mix.public, then mix.total), shuffled, and the counts."""
    counts = result.counts
    rng = random.Random(cfg.seed)
    counts["available_synthetic"] = sum(r["kind"] == SYNTHETIC for r in recs)
    counts["available_public"] = sum(r["kind"] == PUBLIC for r in recs)
    chosen = _take(
        [r for r in recs if r["kind"] == SYNTHETIC], cfg.synthetic, "synthetic", strict, rng, counts
    ) + _take([r for r in recs if r["kind"] == PUBLIC], cfg.public, "public", strict, rng, counts)
    if cfg.total is not None and cfg.total != len(chosen):
        chosen = _take(chosen, cfg.total, "total", strict, rng, counts)
    rng.shuffle(chosen)
    result.rows = chosen
    counts["synthetic"] = sum(r["kind"] == SYNTHETIC for r in chosen)
    counts["public"] = sum(r["kind"] == PUBLIC for r in chosen)
    counts["total"] = len(chosen)
    for name, items in result.removed.items():
        counts[f"removed_{name}"] = len(items)
    result.lengths = {kind: [r["tokens"] for r in chosen if r["kind"] == kind] for kind in (SYNTHETIC, PUBLIC)}

"""The mix stage: kept REER trajectories + public reasoning data -> a chat-format HF dataset.

The trajectories come from our synthesize stage, from a folder of the authors' synthesis output
files (deepwriter.mix.reference) or from a released dataset (deepwriter.mix.released), as
`data.mix.trajectories_from` says; all three go through the same filters in build_mix.

Writes into the stage folder: dataset/ (Dataset.save_to_disk; columns messages, source, category,
id), DATA_CARD.md, dropped/<filter>.jsonl (every removed record with its reason), skipped.jsonl (bad
input records in lenient mode), plots/token_lengths.png and mix_counts.json. The dataset folder is
written to a temporary name and renamed last, so a killed run leaves nothing half-written: a re-run
finds either a finished dataset (and reports it) or nothing, and builds it again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from deepwriter.config.root import RootConfig, benchmark_files, expand, source_files
from deepwriter.core.contract import StageContext, StageResult, StageSpec
from deepwriter.eval.benchmarks import benchmark_prompts
from deepwriter.llm.models import load_tokenizer
from deepwriter.mix.build import MixResult, build_mix, to_messages
from deepwriter.mix.public import load_public
from deepwriter.mix.trajectories import source_of
from deepwriter.pairs.read import Skipped
from deepwriter.synthesis import filters, prompts
from deepwriter.synthesis.prompts import strip_reflection

log = logging.getLogger("deepwriter.data")

DATASET = "dataset"
COUNTS = "mix_counts.json"


def _benchmark_prompts(cfg: RootConfig) -> Dict[str, List[str]]:
    if not cfg.data.mix.decontam.enabled:
        return {}

    return benchmark_prompts(cfg.eval, expand(cfg.paths.data_dir))


def quality_filter(cfg: RootConfig) -> Optional[Callable[[Dict[str, Any]], Optional[str]]]:
    """The paper's quality filters for imported trajectories (our search applied them to its own):
    a record -> the reason it fails, or None. None when there is nothing to check."""
    if cfg.data.mix.synthetic == 0 or not source_of(cfg).imported or not cfg.data.mix.trajectories_from.quality_filters:
        return None

    def check(rec: Dict[str, Any]) -> Optional[str]:
        lang = prompts.language(rec["x"], cfg.synthesis.language)  # the pair's language, as the search has it
        return filters.after_search(rec["think"], cfg.synthesis.filters, lang)

    return check


def _artifacts() -> Dict[str, str]:
    return {"dataset": DATASET, "data_card": "DATA_CARD.md", "dropped": "dropped", "plots": "plots", "counts": COUNTS}


def _needs(cfg: RootConfig) -> List[str]:
    needs = source_of(cfg).needs
    return [needs] if cfg.data.mix.synthetic != 0 and needs else []


def _trajectory_files(cfg: RootConfig) -> List[Path]:
    """The local input of a synthetic part read from files (a changed folder or file re-runs the
    mix). A path that is not there is left to preflight, which names the key."""
    if cfg.data.mix.synthetic == 0:
        return []
    return [p for p in source_of(cfg).files(cfg.data.mix.trajectories_from) if p.exists()]


def preflight(cfg: RootConfig) -> None:
    """A synthetic part read from files must name them; stops before any work, naming the key."""
    if cfg.data.mix.synthetic != 0:
        source_of(cfg).check(cfg.data.mix.trajectories_from)


def load_synthetic(cfg: RootConfig, ctx: StageContext) -> Tuple[List[Dict[str, Any]], List[Skipped], int]:
    """The synthetic part, from wherever data.mix.trajectories_from says: records, bad ones skipped
    (lenient mode), and the count the search did not keep."""
    if cfg.data.mix.synthetic == 0:
        return [], [], 0
    return source_of(cfg).load(cfg, ctx)


def run(cfg: RootConfig, ctx: StageContext) -> StageResult:
    out = ctx.out_dir
    done = out / COUNTS
    if (out / DATASET / "dataset_info.json").exists() and done.exists():
        log.info("mix: finished dataset found in %s; reusing it", out)
        saved = json.loads(done.read_text())
        return StageResult(counts=saved["counts"], metrics=saved["metrics"], artifacts=_artifacts())

    mcfg, strict = cfg.data.mix, cfg.data.strict
    skipped: List[Skipped] = []
    synthetic, sk, not_kept = load_synthetic(cfg, ctx)
    skipped += sk
    public: List[Dict[str, Any]] = []
    if mcfg.public != 0 and (cfg.data.public.path or cfg.data.public.hub_id):
        public, sk = load_public(cfg.data.public, strict, key="data.public")
        skipped += sk

    tokenizer = load_tokenizer(cfg.models.student, cfg.paths.cache_dir)
    result = build_mix(
        synthetic,
        public,
        mcfg,
        taxonomy=cfg.data.taxonomy,
        benchmark_prompts=_benchmark_prompts(cfg),
        tokenizer=tokenizer,
        max_length=cfg.sft.max_length,
        strict=strict,
        strip_reflection=strip_reflection,
        work_dir=out,
        quality_filter=quality_filter(cfg),
    )
    result.counts["not_kept_by_search"] = not_kept
    if "quality_checked" in result.counts:
        log.info(
            "mix: the paper's quality filters on %d imported trajectories removed %d (late reflection %d, "
            "repetition %d; data.mix.trajectories_from.quality_filters=false keeps them)",
            result.counts["quality_checked"],
            result.counts["quality_filtered"],
            result.counts.get("removed_late_reflection", 0),
            result.counts.get("removed_repetition", 0),
        )
    result.counts["skipped_bad_records"] = len(skipped)

    _write_lists(out, result, skipped)
    plots = _plot(out, result, mcfg.histogram_bins)
    _write_card(out, cfg, result, skipped)
    _save_dataset(out, result)

    metrics = {f"mean_tokens_{k}": (sum(v) / len(v) if v else 0.0) for k, v in result.lengths.items()}
    metrics.update({k: round(v, 3) for k, v in result.timings.items()})
    metrics["over_max_length"] = result.over_max_length  # by category and answer length: what a limit costs
    (out / COUNTS).write_text(json.dumps({"counts": result.counts, "metrics": metrics}, indent=2))

    tr = ctx.tracker
    tr.log({f"mix/{k}": v for k, v in result.counts.items() if isinstance(v, (int, float))})
    tr.table("mix/removed", ["filter", "count"], [[k, len(v)] for k, v in result.removed.items()])
    tr.table(
        "mix/by_category",
        ["source", "category", "count"],
        [[s, c, n] for (s, c), n in sorted(Counter((r["source"], r["category"]) for r in result.rows).items())],
    )
    for p in plots:
        tr.image(f"mix/{p.stem}", p)
    return StageResult(counts=result.counts, metrics=metrics, artifacts=_artifacts())


def _save_dataset(out: Path, result: MixResult) -> None:
    """Rows streamed into Arrow in batches: building the chat messages of a paper-sized mix all at
    once would hold a second copy of every text in memory."""
    import tempfile
    import uuid

    import datasets

    rows = result.rows

    def gen():
        for r in rows:
            yield {"messages": to_messages(r), "source": r["source"], "category": r["category"], "id": r["id"]}

    message = {"role": datasets.Value("string"), "content": datasets.Value("large_string")}
    features = datasets.Features(
        {
            "messages": datasets.List(message),
            "source": datasets.Value("string"),
            "category": datasets.Value("string"),
            "id": datasets.Value("string"),
        }
    )
    tmp = out / (DATASET + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="dw-mix-arrow-", dir=out) as cache:
        # An explicit fingerprint: otherwise datasets hashes the generator's closure, i.e. every text.
        ds = datasets.Dataset.from_generator(
            gen, features=features, cache_dir=cache, writer_batch_size=512, fingerprint=uuid.uuid4().hex
        )
        ds.save_to_disk(str(tmp))
        del ds
    shutil.rmtree(out / DATASET, ignore_errors=True)
    os.replace(tmp, out / DATASET)


def _write_lists(out: Path, result: MixResult, skipped: List[Skipped]) -> None:
    d = out / "dropped"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    for name, items in result.removed.items():
        with open(d / f"{name}.jsonl", "w") as f:
            for it in items:
                f.write(json.dumps(it, ensure_ascii=False) + "\n")
    with open(out / "skipped.jsonl", "w") as f:
        for s in skipped:
            f.write(json.dumps({"where": s.where, "field": s.field, "reason": s.reason}, ensure_ascii=False) + "\n")


def _plot(out: Path, result: MixResult, bins: int) -> List[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = out / "plots"
    d.mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    for kind, lengths in result.lengths.items():
        if lengths:
            ax.hist(lengths, bins=bins, alpha=0.6, label=f"{kind} (n={len(lengths)})")
    ax.set_xlabel("tokens per sample (student tokenizer, chat template)")
    ax.set_ylabel("samples")
    ax.set_title("Token lengths of the mix")
    ax.legend()
    fig.tight_layout()
    path = d / "token_lengths.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def _table(rows: List[List[Any]], header: List[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _quality_line(cfg: RootConfig, c: Dict[str, Any]) -> str:
    """What the paper's quality filters did to the synthetic part, for the data card."""
    if not source_of(cfg).imported:
        return "applied by the search (its discards are counted in the synthesize stage)"
    if not cfg.data.mix.trajectories_from.quality_filters:
        return "off for the imported trajectories (data.mix.trajectories_from.quality_filters=false)"
    removed = {k[len("removed_") :]: v for k, v in c.items() if k in ("removed_late_reflection", "removed_repetition")}
    return (
        f"{c.get('quality_checked', 0)} imported trajectories checked, {c.get('quality_filtered', 0)} removed "
        f"({', '.join(f'{k} {v}' for k, v in removed.items()) or 'none: the data was already filtered'})"
    )


def _origin(cfg: RootConfig) -> str:
    """Where the synthetic part came from, for the data card."""
    return source_of(cfg).origin(cfg)


def _long_samples(cfg: RootConfig, result: MixResult) -> str:
    """The card's account of the samples over sft.max_length: how many, what was done with them, and
    which categories and answer lengths (LongBench-Write's word ranges) they were."""
    c, over = result.counts, result.over_max_length
    n, cut = c.get("over_max_length", 0), c.get("over_max_length_kept_thinking_cut", 0)
    if not n:
        return "None."
    how = (
        f"{cut} kept with their thinking cut to fit, {n - cut} dropped (request and answer alone too long)"
        if cfg.data.mix.over_max_length == "truncate_thinking"
        else "all dropped (data.mix.over_max_length=truncate_thinking keeps them with a shorter thinking)"
    )
    rows = [["category", k, v] for k, v in sorted(over.get("by_category", {}).items())]
    rows += [["answer words", k, v] for k, v in sorted(over.get("by_answer_words", {}).items())]
    return f"{n} samples: {how}.\n\n" + _table(rows, ["by", "value", "samples"])


def _write_card(out: Path, cfg: RootConfig, result: MixResult, skipped: List[Skipped]) -> None:
    c = result.counts
    m = cfg.data.mix
    by_cat = Counter((r["source"], r["category"]) for r in result.rows)
    removed = [[k, len(v), v[0]["reason"] if v else ""] for k, v in result.removed.items()]
    lengths = []
    for kind, ls in result.lengths.items():
        if ls:
            s = sorted(ls)
            lengths.append([kind, len(s), s[0], s[len(s) // 2], round(sum(s) / len(s)), s[-1]])
    text = f"""# Data card: SFT mix

{c["total"]} samples: {c["synthetic"]} synthetic REER trajectories ({_origin(cfg)}) and
{c["public"]} public reasoning samples ({cfg.data.public.name or "none"}), shuffled with seed {m.seed}.
Format: one user turn (the request) and one assistant turn `<think>\\n…\\n</think>\\n\\n` + answer.

## Input
- synthetic trajectories kept by the search: {c["loaded_synthetic"]} (not kept by the search: \
{c.get("not_kept_by_search", 0)})
- quality filters (late reflection, 3-gram repetition): {_quality_line(cfg, c)}
- public samples loaded: {c["loaded_public"]}
- bad input records skipped (lenient mode): {len(skipped)} (listed in skipped.jsonl)

## Filters (each removed record is listed in dropped/<filter>.jsonl)
{_table(removed, ["filter", "removed", "example reason"]) if removed else "Nothing was removed."}

Settings: exact dedup {m.dedup.exact}; near dedup {m.dedup.near} (MinHash LSH, Jaccard >= {m.dedup.threshold},
{m.dedup.num_perm} permutations, {m.dedup.shingle_words}-word shingles); decontamination {m.decontam.enabled}
({m.decontam.ngram}-gram overlap >= {m.decontam.threshold} against {c.get("benchmark_prompts", 0)} prompts of the
enabled benchmarks); token limit sft.max_length = {cfg.sft.max_length} with the tokenizer of \
`{cfg.models.student.name}`;
ablations: drop_groups {list(m.drop_groups)}, strip_reflection {m.strip_reflection},
quantiles above {m.drop_above_quantile} / below {m.drop_below_quantile}.

## Samples over sft.max_length ({cfg.sft.max_length} tokens)
{_long_samples(cfg, result)}

## Counts by source and category
{
        _table([[s, cat, n] for (s, cat), n in sorted(by_cat.items())], ["source", "category", "samples"])
        if by_cat
        else "Empty."
    }

## Token lengths
{_table(lengths, ["source", "samples", "min", "median", "mean", "max"]) if lengths else "Empty."}

![token lengths](plots/token_lengths.png)
"""
    (out / "DATA_CARD.md").write_text(text)


STAGE = StageSpec(
    "mix",
    run,
    # the public data, the mix, the student's tokenizer and length limit, the benchmarks decontaminated against,
    # the quality filters applied to imported trajectories (and the language rule they follow)
    (
        "data.public",
        "data.mix",
        "data.taxonomy",
        "data.strict",
        "models.student",
        "sft.max_length",
        "eval.benchmarks",
        "synthesis.filters",
        "synthesis.language",
    ),
    # a synthetic part read from the authors' files or a released dataset needs no search
    needs=_needs,
    input_files=lambda cfg: source_files("data.public")(cfg) + _trajectory_files(cfg) + benchmark_files(cfg),
    preflight=preflight,
)

"""Category labels from the configured taxonomy, quotas by category, and the distribution report.

Labelling is constrained to the label set. With a Scorer, every label is scored as the continuation
of one classification prompt and the label with the highest mean token log-prob wins, so the answer
is always a valid label. With a Generator (an HTTP judge that gives no log-probs) the model names a
label and the reply is mapped onto the set: exact, then case-insensitive, then the label whose words
the reply covers best; a reply that maps to nothing, or to two labels equally, is a counted failure.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from deepwriter.config.data import LabelConfig, QuotaConfig
from deepwriter.llm.base import Generator, Sampling, Scorer, ScoreRequest
from deepwriter.pairs.text import words

UNLABELLED = "unlabelled"


def flat_labels(taxonomy: Dict[str, List[str]]) -> List[str]:
    labels = [c for cats in taxonomy.values() for c in cats]
    if not labels:
        raise ValueError("data.taxonomy: empty; labelling needs at least one category")
    dup = sorted({c for c in labels if labels.count(c) > 1})
    if dup:
        raise ValueError(f"data.taxonomy: category {dup[0]!r} appears in more than one group")
    return labels


def group_of(taxonomy: Dict[str, List[str]]) -> Dict[str, str]:
    return {c: g for g, cats in taxonomy.items() for c in cats}


def classification_messages(request: str, answer: str, labels: Sequence[str], max_words: int) -> List[Dict[str, str]]:
    ws = answer.split()
    shown = answer if len(ws) <= max_words else " ".join(ws[:max_words]) + " [...]"
    parts = [f"Request: {request.strip()}\n\n" if request.strip() else "", f"Text:\n{shown}"]
    listing = "\n".join(f"- {c}" for c in labels)
    content = (
        "Classify the piece of writing below into exactly one of these categories:\n"
        f"{listing}\n\n{''.join(parts)}\n\n"
        "Reply with the category name only, exactly as written in the list."
    )
    return [{"role": "user", "content": content}]


@dataclass
class LabelResult:
    category: Optional[str]  # None: the generator's reply mapped to no label
    method: str  # scorer | generator
    detail: Dict[str, object] = field(default_factory=dict)  # top label scores, or the raw reply
    # A failed model call (after the backend's retries): no label and no verdict; the pair stays
    # unlabelled-for-now and is labelled by a re-run.
    error: Optional[str] = None


def _mean_logprob(lp) -> float:
    if not lp.logprobs:
        return float("-inf")
    return sum(lp.logprobs) / len(lp.logprobs)


def label_with_scorer(
    items: Sequence[Tuple[str, str]], scorer: Scorer, labels: Sequence[str], cfg: LabelConfig
) -> List[LabelResult]:
    """(request, answer) -> the label whose text is the most likely continuation (mean log-prob).
    Requests of one text are sent together so that a prefix-caching scorer reuses the prompt."""
    out: List[LabelResult] = []
    for start in range(0, len(items), cfg.batch_size):
        batch = items[start : start + cfg.batch_size]
        reqs = [
            ScoreRequest(classification_messages(x, y, labels, cfg.max_text_words), "", label)
            for x, y in batch
            for label in labels
        ]
        scores = scorer.score(reqs)
        for i in range(len(batch)):
            mine = scores[i * len(labels) : (i + 1) * len(labels)]
            errors = [lp.error for lp in mine if lp.error]
            if errors:  # every label must be scored to compare them
                out.append(LabelResult(None, "scorer", error=errors[0]))
                continue
            values = [_mean_logprob(lp) for lp in mine]
            # max() keeps the first of equal scores: taxonomy order breaks ties, never chance.
            best = max(range(len(labels)), key=lambda k: values[k])
            if values[best] == float("-inf"):
                out.append(LabelResult(None, "scorer", {"error": "no label could be scored"}))
                continue
            top = sorted(range(len(labels)), key=lambda k: -values[k])[:3]
            out.append(LabelResult(labels[best], "scorer", {"top": [[labels[k], round(values[k], 4)] for k in top]}))
    return out


def map_reply(reply: str, labels: Sequence[str], min_overlap: float = 0.5) -> Optional[str]:
    """The label a free-text reply names, or None when it names none (or two equally well)."""
    text = reply.strip().strip("\"'`*.").strip()
    if text.lower().startswith("category:"):
        text = text[len("category:") :].strip().strip("\"'`*.").strip()
    if text in labels:
        return text
    lowered = {c.lower(): c for c in labels}
    if text.lower() in lowered:
        return lowered[text.lower()]
    got = set(words(text))
    if not got:
        return None
    scored = []
    for c in labels:
        lw = set(words(c))
        cover = len(got & lw) / len(lw)
        jaccard = len(got & lw) / len(got | lw)
        scored.append(((cover, jaccard), c))
    scored.sort(key=lambda t: t[0], reverse=True)
    (best, label), runner_up = scored[0], scored[1][0] if len(scored) > 1 else (0.0, 0.0)
    if best[0] < min_overlap or best == runner_up:
        return None
    return label


def label_with_generator(
    items: Sequence[Tuple[str, str]], generator: Generator, labels: Sequence[str], cfg: LabelConfig, seed: int = 0
) -> List[LabelResult]:
    out: List[LabelResult] = []
    sampling = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=cfg.max_new_tokens, seed=seed)
    for start in range(0, len(items), cfg.batch_size):
        batch = items[start : start + cfg.batch_size]
        gens = generator.generate(
            [classification_messages(x, y, labels, cfg.max_text_words) for x, y in batch], sampling, n=1
        )
        for group in gens:
            g = group[0]
            if g.error or g.finish_reason == "error":
                out.append(LabelResult(None, "generator", error=g.error or "the backend reported an error"))
                continue
            out.append(
                LabelResult(
                    map_reply(g.text or "", labels, cfg.min_overlap), "generator", {"reply": (g.text or "")[:200]}
                )
            )
    return out


# --- quotas ------------------------------------------------------------------------------------


def _share_targets(avail: Dict[str, int], weights: Dict[str, float], total: Optional[int]) -> Dict[str, int]:
    """Counts per category meeting the weights; a category short of answers takes what it has and
    its shortfall goes to the others in proportion (water-filling), largest remainders round."""
    w = {c: weights.get(c, 0.0) for c in avail}
    active = {c for c in avail if w[c] > 0 and avail[c] > 0}
    if total is None:
        # The largest total at which every weighted category can meet its share exactly.
        s = sum(w[c] for c in active)
        total = int(min((avail[c] * s / w[c] for c in active), default=0) + 1e-9)
    targets = {c: 0 for c in avail}
    remaining = min(total, sum(avail[c] for c in active))
    while active:
        s = sum(w[c] for c in active)
        full = {c for c in active if avail[c] <= remaining * w[c] / s}
        if not full:
            break
        for c in full:
            targets[c] = avail[c]
            remaining -= avail[c]
        active -= full
    if active:
        s = sum(w[c] for c in active)
        exact = {c: remaining * w[c] / s for c in active}
        for c in active:
            targets[c] = int(exact[c])
        left = remaining - sum(targets[c] for c in active)
        for c in sorted(active, key=lambda c: (-(exact[c] - int(exact[c])), c))[:left]:
            targets[c] += 1
    return targets


def apply_quotas(items: Sequence[Tuple[str, str]], cfg: QuotaConfig) -> Tuple[List[str], Dict[str, int]]:
    """(ids kept, in input order; target count per category) for (id, category) items. Which items of
    a category are kept is a seeded draw per category, independent of the other categories."""
    by_cat: Dict[str, List[str]] = {}
    for iid, cat in items:
        by_cat.setdefault(cat, []).append(iid)
    avail = {c: len(v) for c, v in by_cat.items()}
    targets = dict(avail)
    if cfg.max_per_category is not None:
        if cfg.max_per_category < 0:
            raise ValueError(f"data.quotas.max_per_category: must be >= 0, got {cfg.max_per_category}")
        targets = {c: min(n, cfg.max_per_category) for c, n in targets.items()}
    if cfg.shares:
        bad = {c: v for c, v in cfg.shares.items() if not v >= 0}
        if bad:
            raise ValueError(f"data.quotas.shares: weights must be >= 0, got {bad}")
        targets = _share_targets(targets, dict(cfg.shares), cfg.total)
    elif cfg.total is not None:
        raise ValueError("data.quotas.total: only used with shares; set shares or leave total null")
    keep = set()
    for c, ids in by_cat.items():
        order = list(ids)
        random.Random(f"{cfg.seed}:{c}").shuffle(order)
        keep.update(order[: targets[c]])
    return [iid for iid, _ in items if iid in keep], targets


# --- report ------------------------------------------------------------------------------------


def distribution_rows(taxonomy: Dict[str, List[str]], stages: Dict[str, Dict[str, int]]) -> List[List[object]]:
    """[group, category, count per stage...] for every taxonomy category (zeros included), then
    categories outside the taxonomy and unlabelled answers."""
    groups = group_of(taxonomy)
    cats = [c for cs in taxonomy.values() for c in cs]
    others = sorted({c for counts in stages.values() for c in counts} - set(cats) - {UNLABELLED})
    rows = []
    for c in cats + others + [UNLABELLED]:
        values = [counts.get(c, 0) for counts in stages.values()]
        if c in groups or any(values):
            rows.append([groups.get(c, "(outside taxonomy)" if c != UNLABELLED else "-"), c] + values)
    return rows


def write_distribution(
    out_dir: Path, taxonomy: Dict[str, List[str]], stages: Dict[str, Dict[str, int]], stem: str = "categories"
) -> Dict[str, str]:
    """Markdown and CSV tables and a bar chart of the last stage's counts; paths relative to out_dir."""
    rows = distribution_rows(taxonomy, stages)
    header = ["group", "category"] + list(stages)
    totals = ["total", ""] + [sum(r[2 + i] for r in rows) for i in range(len(stages))]
    with open(out_dir / f"{stem}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows + [totals]]
    (out_dir / f"{stem}.md").write_text("\n".join(md) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    last = list(stages)[-1] if stages else "count"
    group_names = list(dict.fromkeys(r[0] for r in rows))
    colours = {g: plt.get_cmap("tab10")(i % 10) for i, g in enumerate(group_names)}
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.28 * len(rows) + 1)))
    ax.barh(range(len(rows)), [r[-1] for r in rows], color=[colours[r[0]] for r in rows])
    ax.set_yticks(range(len(rows)), [r[1] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{last}")
    ax.set_title("Pairs by category")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[g]) for g in group_names]
    ax.legend(handles, group_names, fontsize=7, loc="lower right")
    fig.tight_layout()
    png = plots / f"{stem}.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return {"categories_md": f"{stem}.md", "categories_csv": f"{stem}.csv", "categories_plot": f"plots/{stem}.png"}

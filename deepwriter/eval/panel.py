"""A judge panel: judges beside models.judge (eval.panel), each asked every task models.judge is asked.

models.judge stays the judge of the headline; the panel's judges are kept apart, per item, so that how
far the judges agree can be measured (deepwriter.eval.agreement.of_panel: Krippendorff's α across
judges, the items they disagree on most). A panel judge is another model (`model`), or models.judge
asked another way (`temperature`, `seed_offset`): the demo's second judge is the embedded model
sampling hotter, which needs no second model file.

Each panel judge has its own reply cache, judge_cache/panel/<label>/calls.jsonl: a re-run makes no
calls. A panel judge's failed call leaves its item unfinished, like models.judge's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Tuple

from deepwriter.config.root import ConfigError
from deepwriter.eval.benchmarks.base import JudgeOutcome, JudgeTask
from deepwriter.eval.judge import make_judge

PRIMARY = "judge"  # the label of models.judge in the panel's tables


def check(cfg) -> None:
    """Every panel judge has a label of its own, and differs from models.judge."""
    seen = {PRIMARY}
    for i, member in enumerate(cfg.eval.panel):
        key = f"eval.panel[{i}]"
        if not member.label or "/" in member.label:
            raise ConfigError(f"{key}.label: got {member.label!r}; give each panel judge a name without '/'")
        if member.label in seen:
            raise ConfigError(f"{key}.label: {member.label!r} is taken (labels: {sorted(seen)}); each must be unique")
        if member.model is None and member.temperature is None and not member.seed_offset:
            raise ConfigError(
                f"{key}: models.judge asked the same way would only repeat its verdicts; "
                "set model, temperature or seed_offset"
            )
        seen.add(member.label)


def judges(cfg, cache_root: Path) -> List[Tuple[Any, Any]]:
    """(panel member config, its Judge) for each of eval.panel, each with its own reply cache."""

    return [(m, make_judge(cfg, Path(cache_root) / "panel" / m.label, model=m.model)) for m in cfg.eval.panel]


def as_asked_by(member, judge, task: JudgeTask) -> JudgeTask:
    """`task` as `member` asks it: its temperature in place of the task's, its seed offset added."""
    sampling = judge.sampling_for(task)
    return dataclasses.replace(
        task,
        sampling=dataclasses.replace(
            sampling,
            temperature=sampling.temperature if member.temperature is None else member.temperature,
            seed=(sampling.seed or 0) + member.seed_offset,
        ),
    )


PanelOutcomes = Dict[str, Dict[Tuple[str, str], List[Dict[str, JudgeOutcome]]]]


def run(cfg, cache_root: Path, tasks: List[JudgeTask], owners: List[str], unfinished) -> Tuple[PanelOutcomes, list]:
    """Every panel judge's outcomes of `tasks` (owned by the benchmarks `owners`), as
    {label: {(bench, item id): [{task key: outcome}, one per judge sample]}}; a failed call leaves
    its item unfinished. Also returns the judges (for their stats)."""
    samples = cfg.eval.judge_samples
    out: PanelOutcomes = {}
    panel = judges(cfg, cache_root)
    for member, judge in panel:
        asked = [as_asked_by(member, judge, t) for t in tasks]
        outcomes = judge.run(asked, stop_after=max(0, unfinished.allowed - len(unfinished.ids)))
        by_item = out.setdefault(member.label, {})
        failed: Dict[str, str] = {}
        for name, t, o in zip(owners, asked, outcomes):
            by_item.setdefault((name, o.item_id), [{} for _ in range(samples)])[t.judge_sample][o.key] = o
            if o.unfinished:
                failed.setdefault(f"{name}/{o.item_id}", f"panel judge {member.label}: {o.error}")
        for item, error in failed.items():
            if item not in unfinished.ids:  # once per item, whichever judges failed on it
                unfinished.add(item, error)
        judge.release()  # its model leaves memory before the next judge's loads
    return out, [j for _, j in panel]

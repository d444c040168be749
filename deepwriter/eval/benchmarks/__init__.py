"""The benchmark registry: each kind is one module with `load`, `judge_tasks`, `score_item`,
`aggregate` and `headline`, and its judge's reference settings `REFERENCE_JUDGE` and prompt `STYLES`.
A config entry names its kind (or is named after it)."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Optional

from deepwriter.config.eval import BENCHMARK_KINDS, BenchmarkConfig, EvalConfig, JudgeConfig
from deepwriter.config.root import ConfigError
from deepwriter.core.badinput import Skipped
from deepwriter.eval.benchmarks.base import (
    BenchmarkDataError,
    Item,
    JudgeOutcome,
    JudgeSettings,
    JudgeTask,
    Slot,
    skip_or_raise,
)

# The kinds are named once, in the config's choices (config.eval.BENCHMARK_KINDS); each is the module of
# this package of the same name.
KINDS: Dict[str, ModuleType] = {kind: importlib.import_module(f"{__name__}.{kind}") for kind in BENCHMARK_KINDS}
assert all(m.KIND == kind for kind, m in KINDS.items()), "a benchmark module's KIND is its module's name"

__all__ = [
    "KINDS",
    "BenchmarkDataError",
    "Item",
    "JudgeOutcome",
    "JudgeSettings",
    "JudgeTask",
    "Slot",
    "benchmark_prompts",
    "judge_settings",
    "kind_of",
    "load_items",
    "module_for",
]


def kind_of(name: str, bcfg: BenchmarkConfig) -> str:
    kind = bcfg.kind or name
    if kind not in KINDS:
        raise ConfigError(
            f"eval.benchmarks.{name}.kind: unknown benchmark kind {kind!r}; expected one of {sorted(KINDS)}"
        )
    return kind


def module_for(name: str, bcfg: BenchmarkConfig) -> ModuleType:
    return KINDS[kind_of(name, bcfg)]


def judge_settings(name: str, bcfg: BenchmarkConfig, judge: JudgeConfig) -> JudgeSettings:
    """The judge settings of one benchmark entry: each value from eval.benchmarks.<name>.judge where
    set, else the benchmark's reference value (its module's REFERENCE_JUDGE), else eval.judge's (the
    seed where the reference sends none)."""
    module = module_for(name, bcfg)
    ref: JudgeSettings = module.REFERENCE_JUDGE
    own = bcfg.judge
    style = own.style or ref.style
    if style not in module.STYLES:
        raise ConfigError(
            f"eval.benchmarks.{name}.judge.style: {style!r} is not a style of {module.KIND}; "
            f"expected one of {list(module.STYLES)}"
        )

    def pick(field: str, fallback: Any) -> Any:
        value = getattr(own, field)
        if value is not None:
            return value
        value = getattr(ref, field)
        return fallback if value is None else value

    return dataclasses.replace(
        ref,
        style=style,
        temperature=pick("temperature", judge.temperature),
        top_p=pick("top_p", judge.top_p),
        seed=pick("seed", judge.seed),
        max_new_tokens=pick("max_new_tokens", judge.max_new_tokens),
        system=pick("system", ""),
        max_answer_tokens=pick("max_answer_tokens", None) or None,  # 0: never cut
        truncate_above_tokens=pick("truncate_above_tokens", None) or None,
        rejoin_tokens=bool(pick("rejoin_tokens", False)),
    )


def load_items(
    name: str, bcfg: BenchmarkConfig, data_dir: Path, apply_limit: bool = True, skipped: Optional[List[Skipped]] = None
) -> List[Item]:
    """Every item of one benchmark entry, or `limit` of them: the first ones, per subset for
    HelloBench, and for WritingBench spread over its domains (the file is sorted by domain, so its
    first items would all be one domain). Bad records raise, or with a `skipped` list (lenient
    mode) are recorded there and left out."""
    module = module_for(name, bcfg)
    loaded = module.load(name, bcfg.path, Path(data_dir), bcfg.subsets_to_load(), skipped)
    items, seen = [], set()
    for item in loaded:  # answers and judgments are keyed by id: two items may not share one
        with skip_or_raise(skipped):
            if item.id in seen:
                raise BenchmarkDataError(f"eval.benchmarks.{name}: field 'id': duplicate id {item.id!r}")
            seen.add(item.id)
            items.append(item)
    if not apply_limit or bcfg.limit is None:
        return items
    spread = getattr(module, "LIMIT_SPREAD_OVER", None)
    if spread:
        return _round_robin(items, lambda it: it.meta.get(spread), bcfg.limit)
    kept: List[Item] = []
    per_group: Dict[str, int] = {}
    for item in items:
        group = item.meta.get("subset", "")
        if per_group.get(group, 0) < bcfg.limit:
            kept.append(item)
            per_group[group] = per_group.get(group, 0) + 1
    return kept


def _round_robin(items: List[Item], key, n: int) -> List[Item]:
    """n items taken in turns from each group (groups in order of first appearance), returned in
    file order."""
    group_order: Dict[Any, int] = {}
    taken: Dict[Any, int] = {}
    turns = []  # (turn within its group, group, position in the file)
    for i, item in enumerate(items):
        g = key(item)
        group_order.setdefault(g, len(group_order))
        turns.append((taken.get(g, 0), group_order[g], i))
        taken[g] = taken.get(g, 0) + 1
    return [items[i] for i in sorted(i for *_, i in sorted(turns)[:n])]


def benchmark_prompts(eval_cfg: EvalConfig, data_dir: Path) -> Dict[str, List[str]]:
    """Every prompt of every enabled benchmark, ignoring `limit` (the mix stage decontaminates
    training data against these)."""
    skipped: Optional[List[Skipped]] = None if eval_cfg.strict else []
    return {
        name: [item.prompt for item in load_items(name, bcfg, data_dir, apply_limit=False, skipped=skipped)]
        for name, bcfg in eval_cfg.benchmarks.items()
        if bcfg.enabled
    }

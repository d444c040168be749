"""What the judge would be sent for one benchmark item: the messages and sampling of every judge
task, built by the same code as the eval stage (judge settings resolved, the answer cut and re-joined
where the benchmark does so). No model is loaded and nothing is called."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

from deepwriter.config.eval import EvalConfig
from deepwriter.config.root import ConfigError
from deepwriter.core.badinput import Skipped
from deepwriter.eval.benchmarks import judge_settings, load_items, module_for
from deepwriter.llm.base import Sampling

Preview = Tuple[str, List[Dict[str, str]], Sampling]


def judge_prompts(
    eval_cfg: EvalConfig, data_dir: Path, bench_name: str, answer: str, item_index: int = 0
) -> List[Preview]:
    """(task key, messages, sampling) of every judge task for item `item_index` of benchmark entry
    `bench_name` (its items in file order, `limit` not applied) answered with `answer`."""
    if bench_name not in eval_cfg.benchmarks:
        raise ConfigError(
            f"eval.benchmarks.{bench_name}: no such benchmark; expected one of {sorted(eval_cfg.benchmarks)}"
        )
    bcfg = eval_cfg.benchmarks[bench_name]
    settings = judge_settings(bench_name, bcfg, eval_cfg.judge)
    skipped: Optional[List[Skipped]] = None if eval_cfg.strict else []
    items = load_items(bench_name, bcfg, Path(data_dir), apply_limit=False, skipped=skipped)
    if not 0 <= item_index < len(items):
        raise ConfigError(f"item index {item_index}: {bench_name} has {len(items)} items (0..{len(items) - 1})")
    tasks = module_for(bench_name, bcfg).judge_tasks(items[item_index], answer, settings)
    return [(t.key, t.messages, t.sampling if t.sampling is not None else settings.sampling) for t in tasks]

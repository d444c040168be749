"""Answers of the model under test, one JSONL record per item, appended as batches finish.

The file is a record log (deepwriter.core.records): a killed run resumes, ids already in it are not
generated again. The raw output is kept; the
`<think>…</think>` part is split off into `thinking` and only `answer` goes to the judge. A call that
failed after the endpoint's retries writes nothing: the item is unfinished and a re-run answers it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from deepwriter.config.eval import BenchmarkConfig
from deepwriter.core import think
from deepwriter.core.records import RecordLog
from deepwriter.core.unfinished import Unfinished
from deepwriter.eval.benchmarks.base import Item
from deepwriter.llm.base import Sampling

log = logging.getLogger("deepwriter.eval.generate")


def generate_answers(
    make_generator: Callable[[], Any],
    items: List[Item],
    bcfg: BenchmarkConfig,
    out_path: Path,
    seed: int,
    batch_size: int,
    unfinished: Unfinished,
    show_progress: bool = True,
) -> Tuple[List[Optional[Dict[str, Any]]], int]:
    """Records for `items` in order (None for an item left unfinished, which is added to
    `unfinished`), and how many were generated now. The generator is created only when something is
    left to generate; no new batch is started once `unfinished` is over its budget."""
    with RecordLog(out_path) as written:
        made = _generate_missing(make_generator, items, bcfg, written, seed, batch_size, unfinished, show_progress)
        return [written.done.get(it.id) for it in items], made


def _generate_missing(
    make_generator,
    items: List[Item],
    bcfg: BenchmarkConfig,
    written: RecordLog,
    seed: int,
    batch_size: int,
    unfinished: Unfinished,
    show_progress: bool,
) -> int:
    from tqdm.auto import tqdm

    todo = [(i, it) for i, it in enumerate(items) if it.id not in written.done]
    made = 0
    if todo:
        generator = make_generator()
        with tqdm(
            total=len(items),
            initial=len(items) - len(todo),
            desc=f"generate {items[0].bench}",
            unit="item",
            disable=not show_progress,
        ) as bar:
            for start in range(0, len(todo), max(1, batch_size)):
                chunk = todo[start : start + batch_size]
                if unfinished.over_budget():  # the server is failing: leave the rest for a re-run
                    for _, it in chunk:
                        unfinished.add(f"{it.bench}/{it.id}", "")
                    bar.update(len(chunk))
                    continue
                sampling = Sampling(
                    temperature=bcfg.temperature,
                    top_p=bcfg.top_p,
                    max_new_tokens=bcfg.max_new_tokens,
                    seed=seed + chunk[0][0],
                )
                t0 = time.monotonic()
                gens = generator.generate([[{"role": "user", "content": it.prompt}] for _, it in chunk], sampling, n=1)
                seconds = (time.monotonic() - t0) / len(chunk)
                answered = []
                for (_, it), group in zip(chunk, gens):
                    g = group[0]
                    if g.error or g.finish_reason == "error":  # not an answer: nothing is written
                        unfinished.add(
                            f"{it.bench}/{it.id}", f"model under test: {g.error or 'the backend reported an error'}"
                        )
                        log.warning("eval: %s/%s unfinished: %s", it.bench, it.id, g.error)
                        continue
                    parts = think.split(g.text)
                    rec = {
                        "id": it.id,
                        "bench": it.bench,
                        "prompt": it.prompt,
                        "output": g.text,
                        "answer": parts.answer,
                        "thinking": parts.thinking,
                        "think_closed": parts.closed,
                        "finish_reason": g.finish_reason,
                        "prompt_tokens": g.prompt_tokens,
                        "completion_tokens": g.completion_tokens,
                        "seconds": round(seconds, 3),
                        "model": getattr(generator, "model_id", ""),
                        "sampling": {
                            "temperature": sampling.temperature,
                            "top_p": sampling.top_p,
                            "max_new_tokens": sampling.max_new_tokens,
                            "seed": sampling.seed,
                        },
                    }
                    answered.append(rec)
                written.append(answered)
                made += len(answered)
                bar.update(len(chunk))
    return made

"""Answers of the model under test, one JSONL record per item, appended as batches finish.

A killed run resumes: ids already in the file are not generated again. The raw output is kept; the
`<think>…</think>` part is split off into `thinking` and only `answer` goes to the judge. A call that
failed after the endpoint's retries writes nothing: the item is unfinished and a re-run answers it.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from deepwriter.eval.benchmarks.base import Item
from deepwriter.eval.config import BenchmarkConfig
from deepwriter.llm.base import Sampling
from deepwriter.unfinished import Unfinished

log = logging.getLogger("deepwriter.eval.generate")

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def split_thinking(text: str) -> Tuple[str, str, bool]:
    """(answer, thinking, closed). An answer after the last `</think>`; a `<think>` never closed (the
    output ran out while thinking) leaves no answer."""
    if THINK_CLOSE in text:
        head, _, tail = text.rpartition(THINK_CLOSE)
        thinking = head.split(THINK_OPEN, 1)[1] if THINK_OPEN in head else head
        return tail.strip(), thinking.strip(), True
    stripped = text.lstrip()
    if stripped.startswith(THINK_OPEN):
        return "", stripped[len(THINK_OPEN):].strip(), False
    return text.strip(), "", True


def read_done(path: Path) -> Dict[str, Dict[str, Any]]:
    done: Dict[str, Dict[str, Any]] = {}
    if not path.exists():
        return done
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
                done[rec["id"]] = rec
            except (json.JSONDecodeError, KeyError, TypeError):
                log.warning("%s: skipped an unreadable line (a killed run)", path)
    return done


def _end_with_newline(path: Path) -> None:
    """A run killed mid-write leaves a torn last line; the next record must not be glued to it."""
    if path.exists() and path.stat().st_size:
        with open(path, "rb+") as f:
            f.seek(-1, 2)
            if f.read(1) != b"\n":
                f.write(b"\n")


def generate_answers(make_generator: Callable[[], Any], items: List[Item], bcfg: BenchmarkConfig, out_path: Path,
                     seed: int, batch_size: int, unfinished: Unfinished,
                     show_progress: bool = True) -> Tuple[List[Optional[Dict[str, Any]]], int]:
    """Records for `items` in order (None for an item left unfinished, which is added to
    `unfinished`), and how many were generated now. The generator is created only when something is
    left to generate; no new batch is started once `unfinished` is over its budget."""
    from tqdm.auto import tqdm

    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = read_done(out_path)
    _end_with_newline(out_path)
    todo = [(i, it) for i, it in enumerate(items) if it.id not in done]
    made = 0
    if todo:
        generator = make_generator()
        with tqdm(total=len(items), initial=len(items) - len(todo), desc=f"generate {items[0].bench}", unit="item",
                  disable=not show_progress) as bar, open(out_path, "a", encoding="utf-8") as f:
            for start in range(0, len(todo), max(1, batch_size)):
                chunk = todo[start:start + batch_size]
                if unfinished.over_budget():  # the server is failing: leave the rest for a re-run
                    for _, it in chunk:
                        unfinished.add(f"{it.bench}/{it.id}", "")
                    bar.update(len(chunk))
                    continue
                sampling = Sampling(temperature=bcfg.temperature, top_p=bcfg.top_p,
                                    max_new_tokens=bcfg.max_new_tokens, seed=seed + chunk[0][0])
                t0 = time.monotonic()
                gens = generator.generate([[{"role": "user", "content": it.prompt}] for _, it in chunk], sampling, n=1)
                seconds = (time.monotonic() - t0) / len(chunk)
                for (_, it), group in zip(chunk, gens):
                    g = group[0]
                    if g.error or g.finish_reason == "error":  # not an answer: nothing is written
                        unfinished.add(f"{it.bench}/{it.id}", f"model under test: {g.error or 'the backend reported an error'}")
                        log.warning("eval: %s/%s unfinished: %s", it.bench, it.id, g.error)
                        continue
                    answer, thinking, closed = split_thinking(g.text)
                    rec = {"id": it.id, "bench": it.bench, "prompt": it.prompt, "output": g.text, "answer": answer,
                           "thinking": thinking, "think_closed": closed, "finish_reason": g.finish_reason,
                           "prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
                           "seconds": round(seconds, 3), "model": getattr(generator, "model_id", ""),
                           "sampling": {"temperature": sampling.temperature, "top_p": sampling.top_p,
                                        "max_new_tokens": sampling.max_new_tokens, "seed": sampling.seed}}
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    done[it.id] = rec
                    made += 1
                f.flush()
                os.fsync(f.fileno())
                bar.update(len(chunk))
    return [done.get(it.id) for it in items], made

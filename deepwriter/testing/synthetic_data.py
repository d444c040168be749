"""Synthetic `messages` datasets in the mix stage's format, for tests and benchmarks: requests and
thinking+answer responses whose lengths follow a long tail (log-normal), like REER trajectories,
where most samples are short and a few are many times longer."""

from __future__ import annotations

import random
from pathlib import Path
from typing import List

WORDS = (
    "the sea is wide and the light keeps the night away from our small town while a keeper writes "
    "letters nobody answers first intent then content then structure maybe the reader wants a clear "
    "opening three ideas and a warm close"
).split()


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(max(1, n_words)))


def synthetic_rows(
    n: int, seed: int = 0, median_words: int = 60, sigma: float = 0.9, max_words: int = 2000
) -> List[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        think = min(max_words, int(rng.lognormvariate(0, sigma) * median_words))
        answer = min(max_words, int(rng.lognormvariate(0, sigma) * median_words * 0.6))
        rows.append(
            {
                "id": f"syn-{i:05d}",
                "source": "synthetic" if i % 3 else "public",
                "category": "writing",
                "messages": [
                    {"role": "user", "content": f"Write piece {i}: {_text(rng, rng.randint(4, 16))}"},
                    {"role": "assistant", "content": f"<think>\n{_text(rng, think)}\n</think>\n\n{_text(rng, answer)}"},
                ],
            }
        )
    return rows


def write_mix_dataset(stage_dir: Path, n: int, seed: int = 0, **kwargs) -> Path:
    """Save a dataset where the SFT stage expects the mix stage's output: `<stage_dir>/dataset`."""
    import datasets

    dest = Path(stage_dir) / "dataset"
    datasets.Dataset.from_list(synthetic_rows(n, seed, **kwargs)).save_to_disk(str(dest))
    return dest

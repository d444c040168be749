"""Decontamination: drop training requests that share too many word n-grams with one benchmark prompt.

n-grams found in many benchmark prompts are the benchmarks' own templates ("You should write a
detailed response to the following question..."); they are ignored, so that a new request written
from the same template but on another topic is not flagged, while a copy of a prompt (reworded at
the edges, re-cased, re-spaced) is.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from deepwriter.config.data import DecontamConfig
from deepwriter.pairs.text import WordIds, ngram_hashes, words


@dataclass
class Match:
    benchmark: str
    prompt_index: int
    score: float  # shared distinctive n-grams / distinctive n-grams of the shorter side
    shared: int


class BenchmarkIndex:
    def __init__(self, prompts: Dict[str, List[str]], cfg: DecontamConfig):
        self.cfg = cfg
        self._word_ids = WordIds()
        self._names: List[Tuple[str, int]] = []
        per_prompt: List[np.ndarray] = []
        df: Counter = Counter()
        for bench, texts in prompts.items():
            for i, text in enumerate(texts):
                grams = np.unique(self._grams(text))
                self._names.append((bench, i))
                per_prompt.append(grams)
                df.update(grams.tolist())
        self.boilerplate = {g for g, c in df.items() if c > cfg.max_prompt_df}
        self._postings: Dict[int, List[int]] = defaultdict(list)
        self._sizes: List[int] = []
        for pid, grams in enumerate(per_prompt):
            kept = [g for g in grams.tolist() if g not in self.boilerplate]
            self._sizes.append(len(kept))
            for g in kept:
                self._postings[g].append(pid)

    def _grams(self, text: str) -> np.ndarray:
        return ngram_hashes(self._word_ids(words(text)), self.cfg.ngram)

    def __len__(self) -> int:
        return len(self._names)

    def match(self, text: str) -> Optional[Match]:
        """The benchmark prompt this text overlaps most, if the overlap reaches the threshold."""
        grams = [g for g in np.unique(self._grams(text)).tolist() if g not in self.boilerplate]
        if not grams:
            return None
        hits: Counter = Counter()
        for g in grams:
            for pid in self._postings.get(g, ()):
                hits[pid] += 1
        best: Optional[Match] = None
        for pid, shared in hits.items():
            score = shared / max(1, min(len(grams), self._sizes[pid]))
            if score >= self.cfg.threshold and (best is None or score > best.score):
                bench, idx = self._names[pid]
                best = Match(bench, idx, round(score, 4), shared)
        return best

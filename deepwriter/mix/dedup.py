"""Exact and near-duplicate removal. Near duplicates: MinHash signatures of word shingles, candidate
pairs from datasketch's LSH index, the first record of a group kept."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
from datasketch import MinHash, MinHashLSH

from deepwriter.config.data import DedupConfig
from deepwriter.pairs.text import WordIds, digest, ngram_hashes, words


def _precomputed(value: int) -> int:
    # Shingles are hashed to 32-bit integers with numpy beforehand (far faster than SHA-1 per shingle).
    return value


def exact_key(*parts: str) -> str:
    """Same text up to surrounding whitespace. Case and layout variants are caught by the near-duplicate
    pass (their shingles are identical), so this pass only needs a cheap hash."""
    return digest("\x00".join(p.strip() for p in parts))


class NearDuplicateIndex:
    """Add texts one at a time; each is either new or reported as a near-duplicate of an earlier id."""

    def __init__(self, cfg: DedupConfig, seed: int = 1):
        self.cfg = cfg
        # Banding tuned for recall (missing a duplicate costs more than checking a candidate): every
        # candidate is verified against the threshold with its full signature below.
        self.lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, weights=(0.1, 0.9))
        self._seed = seed
        template = MinHash(num_perm=cfg.num_perm, seed=seed, hashfunc=_precomputed)
        # Reused by every signature: drawing the permutations anew costs more than hashing a text.
        self._perms, self._scheme = template.permutations, template.scheme
        self._word_ids = WordIds()
        self._sigs: Dict[str, MinHash] = {}
        self._groups: Dict[str, str] = {}

    def signature(self, text: str) -> MinHash:
        ids = self._word_ids(words(text, self.cfg.max_words))
        hv = ngram_hashes(ids, self.cfg.shingle_words) & np.uint64(0xFFFFFFFF)
        if len(hv) == 0:
            hv = np.zeros(1, dtype=np.uint64)
        a, b = self._perms
        # datasketch's affine permutations (h -> a*h + b mod 2^32), applied to all shingles at once;
        # the shingle hashes are well mixed already, so its extra mixing step is not needed.
        phv = hv.astype(np.uint32)[:, None] * a + b
        return MinHash(
            num_perm=self.cfg.num_perm,
            seed=self._seed,
            hashvalues=phv.min(axis=0),
            permutations=self._perms,
            scheme=self._scheme,
        )

    def add(self, key: str, text: str, group: Optional[str] = None) -> Optional[Tuple[str, float]]:
        """None if the text is new (it is indexed); else (id of the earlier text, estimated Jaccard).
        Texts of one `group` (one answer under several requests) are never duplicates of each other."""
        sig = self.signature(text)
        best = None
        for other in self.lsh.query(sig):
            if group is not None and self._groups.get(other) == group:
                continue
            j = sig.jaccard(self._sigs[other])
            if j >= self.cfg.threshold and (best is None or j > best[1]):
                best = (other, j)
        if best is not None:
            return best
        self.lsh.insert(key, sig)
        self._sigs[key] = sig
        if group is not None:
            self._groups[key] = group
        return None

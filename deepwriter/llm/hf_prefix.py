"""A transformers Scorer that shares work between requests with a common token prefix.

The K candidates of one REER step differ only from segment i of the trajectory on: the prompt and
the refined segments before it are the same. This scorer runs that shared prefix through the model
once, keeps its KV cache, and for every request runs only the remaining tokens on top of it,
cropping the cache back to the prefix afterwards (no copies). Prefix caches are kept in a small LRU
keyed by their token ids, so the next step, whose shared prefix extends this one, starts from it.
Logits are computed only at the positions that predict target tokens, and the suffix's attention
skips the (query, key) pairs the causal mask hides (`llm/attention.py`). Values match
`TransformersScorer` to float rounding (~1e-5 in fp32).

Only full-attention layers can be cropped; a model with sliding-window or recurrent layers is scored
without reuse.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple

import torch

from deepwriter.llm.attention import scoring_attention
from deepwriter.llm.base import ScoreRequest, TokenLogprobs
from deepwriter.llm.hf import encode_request


def _common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixCachingScorer:
    def __init__(self, model, tokenizer, model_id: str, max_entries: int = 4, min_prefix_tokens: int = 16):
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.max_entries = max_entries
        self.min_prefix_tokens = min_prefix_tokens  # below this a cache is not worth its memory
        self._entries: "OrderedDict[Tuple[int, ...], object]" = OrderedDict()
        self.stats = {"requests": 0, "tokens_total": 0, "tokens_computed": 0, "cache_hits": 0}
        self._croppable: Optional[bool] = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, req: ScoreRequest) -> Tuple[List[int], List[int]]:
        return encode_request(self.tokenizer, req)

    def clear(self) -> None:
        self._entries.clear()

    # --- the prefix cache ---------------------------------------------------------------------

    def _forward(self, ids: List[int], cache, logits_to_keep: int):
        from transformers import DynamicCache

        if cache is None:
            cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=torch.tensor([ids], device=self.device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=logits_to_keep,
        )
        return out.logits, cache

    def _is_croppable(self, cache) -> bool:
        if self._croppable is None:
            from transformers.cache_utils import DynamicLayer

            layers = getattr(cache, "layers", None)
            self._croppable = bool(layers) and all(type(layer) is DynamicLayer for layer in layers)
        return self._croppable

    @staticmethod
    def _crop(cache, length: int) -> None:
        extra = cache.get_seq_length() - length
        if extra > 0:
            cache.crop(-extra)  # transformers 5.x: a negative count removes that many tokens

    def _prefix_cache(self, prefix: List[int]):
        """A cache holding exactly `prefix`, built from the cached entry sharing most of it."""
        best_key, best_len = None, 0
        for key in self._entries:
            n = _common_prefix_len(key, prefix)
            if n > best_len:
                best_key, best_len = key, n
        if best_key is not None and best_len >= self.min_prefix_tokens:
            cache = self._entries.pop(best_key)  # reused in place: re-keyed below
            self._crop(cache, best_len)
            self.stats["cache_hits"] += 1
        else:
            cache, best_len = None, 0
        if best_len < len(prefix):
            _, cache = self._forward(prefix[best_len:], cache, logits_to_keep=1)
            self.stats["tokens_computed"] += len(prefix) - best_len
        if not self._is_croppable(cache):
            return None
        self._entries[tuple(prefix)] = cache
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return cache

    # --- scoring ------------------------------------------------------------------------------

    def _target_logprobs(self, logits: torch.Tensor, tgt_ids: List[int]) -> TokenLogprobs:
        logp = torch.log_softmax(logits.float(), dim=-1)
        target = torch.tensor(tgt_ids, device=logp.device)
        values = logp.gather(1, target[:, None])[:, 0]
        return TokenLogprobs(tokens=self.tokenizer.convert_ids_to_tokens(tgt_ids), logprobs=values.tolist())

    @torch.inference_mode()
    def score(self, requests: Sequence[ScoreRequest]) -> List[TokenLogprobs]:
        with scoring_attention(self.model):
            return self._score(requests)

    def _score(self, requests: Sequence[ScoreRequest]) -> List[TokenLogprobs]:
        encoded = [self.encode(r) for r in requests]
        full = [c + t for c, t in encoded]
        live = [i for i, (_, t) in enumerate(encoded) if t]
        out: List[TokenLogprobs] = [TokenLogprobs() for _ in requests]
        if not live:
            return out
        # The shared prefix must stop before the last context token of every request: that token's
        # position produces the logits of the first target token.
        shared = min(len(encoded[i][0]) - 1 for i in live)
        first = full[live[0]]
        for i in live[1:]:
            shared = min(shared, _common_prefix_len(first, full[i]))
        prefix = first[: max(0, shared)]
        worth_it = len(prefix) >= self.min_prefix_tokens and self._croppable is not False
        cache = self._prefix_cache(prefix) if worth_it else None
        base = len(prefix) if cache is not None else 0
        for i in live:
            ids, tgt = full[i], encoded[i][1]
            self.stats["requests"] += 1
            self.stats["tokens_total"] += len(ids)
            self.stats["tokens_computed"] += len(ids) - base
            logits, used = self._forward(ids[base:], cache, logits_to_keep=len(tgt) + 1)
            if cache is not None:
                self._crop(used, base)
            out[i] = self._target_logprobs(logits[0, :-1], tgt)
            out[i].context_tokens = len(encoded[i][0])
        return out

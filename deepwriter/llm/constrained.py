"""A constrained local judge: an in-process transformers model (a 135M model cannot be trusted to
write JSON) decodes `{"slot": value, ...}` with the JSON around the values forced and each value
restricted to its slot's allowed labels, so every judgment parses and is in range. A slot is any
object with `name` and `labels` (deepwriter.eval.benchmarks.base.Slot)."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from deepwriter.llm.base import Generation, Sampling
from deepwriter.llm.hf import render_prompt


class ConstrainedJudgeBackend:
    """Decodes `{"slot": value, ...}` with the JSON around the values forced and each value restricted
    to its slot's allowed labels: greedy (temperature 0) or sampled among the allowed tokens only."""

    def __init__(self, model, tokenizer, model_id: str, batch_size: int = 4):
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.batch_size = max(1, batch_size)

    def _ids(self, text: str) -> List[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def template(self, slots: Sequence[Any]) -> List[Tuple[str, Any]]:
        segments: List[Tuple[str, Any]] = []
        for i, slot in enumerate(slots):
            lead = "{" if i == 0 else " "
            segments.append(("fixed", self._ids(f'{lead}"{slot.name}": ')))
            # The separator goes into each choice so no choice is a prefix of another ("1," vs "10,").
            sep = "}" if i == len(slots) - 1 else ","
            segments.append(("choice", [self._ids(label + sep) for label in slot.labels]))
        return segments

    @staticmethod
    def allowed_next(segments: List[Tuple[str, Any]], generated: List[int], eos: int) -> List[int]:
        pos = 0
        for kind, data in segments:
            rest = generated[pos:]
            if kind == "fixed":
                if len(rest) < len(data):
                    return [data[len(rest)]]
                pos += len(data)
                continue
            matched, nxt = None, set()
            for ids in data:
                if rest[: len(ids)] == ids and len(rest) >= len(ids):
                    matched = ids
                    break
                if len(rest) < len(ids) and ids[: len(rest)] == rest:
                    nxt.add(ids[len(rest)])
            if matched is None:
                return sorted(nxt) if nxt else [eos]
            pos += len(matched)
        return [eos]

    def judge(
        self, prompts: Sequence[List[Dict[str, str]]], slot_lists: Sequence[Sequence[Any]], sampling: Sampling
    ) -> List[Generation]:
        import torch

        rng = torch.Generator().manual_seed(sampling.seed if sampling.seed is not None else 0)
        out = []
        for m, s in zip(prompts, slot_lists):
            try:
                out.append(self._one(m, s, sampling, rng))
            except Exception as exc:  # one bad task (e.g. too long for the judge) fails alone, visibly
                out.append(Generation(text="", finish_reason="error", error=f"{type(exc).__name__}: {exc}"))
        return out

    def _one(self, messages, slots: Sequence[Any], sampling: Sampling, rng) -> Generation:
        """Forced JSON text is fed in one forward pass with the token before it, so the model runs
        once per score token rather than once per output token."""
        import torch

        tok = self.tokenizer
        eos = tok.eos_token_id
        segments = self.template(slots)
        device = self.model.device
        prompt_ids = tok(render_prompt(tok, messages), add_special_tokens=False)["input_ids"]
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit and len(prompt_ids) + 64 > limit:
            raise ValueError(f"the judge prompt has {len(prompt_ids)} tokens; the judge model takes {limit}")
        generated: List[int] = []
        feed = list(prompt_ids)
        cache = None
        with torch.inference_mode():
            while True:
                allowed = self.allowed_next(segments, generated, eos)
                if len(allowed) == 1:  # forced: no need to ask the model
                    if allowed[0] == eos:
                        break
                    generated.append(allowed[0])
                    feed.append(allowed[0])
                    continue
                out = self.model(
                    input_ids=torch.tensor([feed], device=device),
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
                cache = out.past_key_values
                logits = out.logits[0, -1].float()
                choice_logits = logits[torch.tensor(allowed, device=device)]
                if sampling.temperature > 0:
                    probs = torch.softmax(choice_logits / sampling.temperature, dim=-1).cpu()
                    pick = allowed[int(torch.multinomial(probs, 1, generator=rng))]
                else:
                    pick = allowed[int(torch.argmax(choice_logits))]
                generated.append(pick)
                feed = [pick]
        return Generation(
            text=tok.decode(generated, skip_special_tokens=True),
            prompt_tokens=len(prompt_ids),
            completion_tokens=len(generated),
        )

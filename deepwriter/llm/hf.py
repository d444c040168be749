"""The transformers backend: generation and target scoring in-process, on CPU or GPU."""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from deepwriter.core import think
from deepwriter.llm.base import Generation, Message, Sampling, ScoreRequest, TokenLogprobs, encode_for_scoring

log = logging.getLogger("deepwriter.llm")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def render_prompt(tokenizer, messages: List[Message], assistant_prefix: str = "") -> str:
    """The chat-template text of `messages` with the assistant turn opened and `assistant_prefix`
    already written in it."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    # Templates of thinking models open the think block themselves; our prefixes open it, so the
    # template's is removed (as the reference's make_prompt does) rather than written twice.
    if text.rstrip().endswith(think.OPEN):
        text = text.rstrip()[: -len(think.OPEN)]
    return text + assistant_prefix


def encode_request(tokenizer, req: ScoreRequest) -> tuple:
    """(context ids, scored ids) of a score request rendered with the tokenizer's chat template: the
    whole text tokenized once, cut at the scored tokens' range (the tokens after it are dropped)."""
    context = render_prompt(tokenizer, req.messages, req.assistant_prefix)
    ids, first, last = encode_for_scoring(tokenizer, context, req.target, req.suffix)
    return ids[:first], ids[first:last]


class TransformersGenerator:
    def __init__(self, model, tokenizer, model_id: str, batch_size: int = 8):
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[List[Message]],
        sampling: Sampling,
        n: int = 1,
        prefill: Optional[Sequence[str]] = None,
        seeds: Optional[Sequence[int]] = None,
    ) -> List[List[Generation]]:
        texts = [render_prompt(self.tokenizer, m, prefill[i] if prefill else "") for i, m in enumerate(prompts)]
        if seeds is None and sampling.seed is not None:
            # one seed for the call: each prompt still gets a stream of its own (by its place)
            seeds = [_row_seed(sampling.seed, 1_000 + i) for i in range(len(texts))]
        out: List[List[Generation]] = []
        step = max(1, self.batch_size // max(1, n))
        for start in range(0, len(texts), step):
            chunk_seeds = seeds[start : start + step] if seeds is not None else None
            out.extend(self._generate_batch(texts[start : start + step], sampling, n, chunk_seeds))
        return out

    def _generate_batch(
        self, texts: List[str], sampling: Sampling, n: int, seeds: Optional[Sequence[int]]
    ) -> List[List[Generation]]:
        tok = self.tokenizer
        tok.padding_side = "left"  # generation continues at the right edge
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        do_sample = sampling.temperature > 0
        # n rows per prompt (prompt i's samples are rows i*n .. i*n+n-1). Greedy decoding gives the
        # same text n times, so it decodes once and repeats.
        rows = n if do_sample else 1
        enc = {k: v.repeat_interleave(rows, dim=0) for k, v in enc.items()}
        gen_kwargs = dict(
            max_new_tokens=sampling.max_new_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        if do_sample and seeds is not None:
            # Each row draws from its own seeded stream, so its text depends on its prompt and seed
            # only, not on which other prompts share the batch (up to float rounding of the batch).
            row_seeds = [_row_seed(seed, j) for seed in seeds for j in range(n)]
            sampler = RowSeededSampler(row_seeds, sampling.temperature, sampling.top_p)
            gen_kwargs.update(do_sample=False, logits_processor=LogitsProcessorList([sampler]))
        elif do_sample:
            gen_kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        else:
            gen_kwargs.update(do_sample=False)
        if sampling.stop:
            gen_kwargs.update(stop_strings=list(sampling.stop), tokenizer=tok)
        ids = self.model.generate(**enc, **gen_kwargs)
        if rows < n:
            ids = ids.repeat_interleave(n, dim=0)
            enc = {k: v.repeat_interleave(n, dim=0) for k, v in enc.items()}
        prompt_len = enc["input_ids"].shape[1]
        new = ids[:, prompt_len:]
        results: List[List[Generation]] = []
        for i in range(len(texts)):
            group = []
            for j in range(n):
                row = new[i * n + j]
                real = row[row != tok.pad_token_id] if tok.pad_token_id != tok.eos_token_id else row
                finished = bool((row == tok.eos_token_id).any())
                cut = row.tolist()
                if tok.eos_token_id in cut:
                    cut = cut[: cut.index(tok.eos_token_id)]
                group.append(
                    Generation(
                        text=tok.decode(cut, skip_special_tokens=True),
                        prompt_tokens=int(enc["attention_mask"][i * n + j].sum()),
                        completion_tokens=len(cut) if finished else int(real.numel()),
                        finish_reason="stop" if finished else "length",
                    )
                )
            results.append(group)
        return results


def _row_seed(seed: int, sample: int) -> int:
    """The seed of a prompt's `sample`-th row: distinct per sample, a pure function of (seed, sample)."""
    return (seed * 1_000_003 + sample) % (2**63)


class RowSeededSampler(LogitsProcessor):
    """Temperature and nucleus (top-p) sampling with one random stream per row, by the Gumbel-max
    trick: the argmax of the filtered logits plus Gumbel noise is a sample of their softmax. Decoding
    then runs greedy, and each row's choice depends only on its own logits and its own stream."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float):
        self.streams = [torch.Generator().manual_seed(s) for s in seeds]
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logits = scores.float() / self.temperature
        if self.top_p < 1.0:
            ordered, order = logits.sort(dim=-1, descending=True)
            probs = ordered.softmax(dim=-1)
            # drop a token once the more likely ones already reach top_p (the first always stays)
            outside = (probs.cumsum(dim=-1) - probs) >= self.top_p
            logits = logits.masked_fill(outside.scatter(-1, order, outside), float("-inf"))
        uniform = torch.stack([torch.rand(logits.shape[-1], generator=g) for g in self.streams])
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-12, 1 - 1e-7)))
        return logits + gumbel.to(logits.device)


class TransformersScorer:
    """Exact per-token log-probs of a target given its rendered context, one request at a time;
    only the target positions go through the LM head."""

    def __init__(self, model, tokenizer, model_id: str):
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, req: ScoreRequest) -> tuple:
        """(context ids, scored ids): the request tokenized as one text, cut where the scored tokens
        begin and end (llm.base.encode_for_scoring)."""
        return encode_request(self.tokenizer, req)

    @torch.inference_mode()
    def score(self, requests: Sequence[ScoreRequest]) -> List[TokenLogprobs]:
        out = []
        for req in requests:
            ctx_ids, tgt_ids = self.encode(req)
            if not tgt_ids:
                out.append(TokenLogprobs())
                continue
            ids = torch.tensor([ctx_ids + tgt_ids], device=self.device)
            # logits of the positions that predict the target tokens: the last len(target)+1, minus the last
            logits = self.model(input_ids=ids, logits_to_keep=len(tgt_ids) + 1, use_cache=False).logits[0, :-1]
            logp = torch.log_softmax(logits.float(), dim=-1)
            target = torch.tensor(tgt_ids, device=self.device)
            values = logp.gather(1, target[:, None])[:, 0]
            out.append(
                TokenLogprobs(
                    tokens=self.tokenizer.convert_ids_to_tokens(tgt_ids),
                    logprobs=values.tolist(),
                    context_tokens=len(ctx_ids),
                )
            )
        return out

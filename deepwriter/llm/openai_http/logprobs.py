"""Exact log-probs of a target through a server: legacy completions with echo, vLLM's
prompt_logprobs, or SGLang's /generate. The chat template is rendered here with the scorer model's own
tokenizer, and the scored tokens are picked by the one rule every backend shares."""

from __future__ import annotations

import logging
from typing import Any, Callable, List, Optional, Sequence

from deepwriter.config.llm import LOGPROBS_APIS, EndpointConfig
from deepwriter.llm.base import ScoreRequest, TokenLogprobs, encode_for_scoring, over_context, scored_token_range
from deepwriter.llm.openai_http.transport import (
    BadPayload,
    EndpointError,
    HTTPClient,
    RequestFailed,
    Transport,
    run_sync,
)

log = logging.getLogger("deepwriter.llm.http")


class OpenAIScorer(HTTPClient):
    """`Scorer` over a server's log-prob API. The chat template is rendered here with `tokenizer`
    (the scorer model's own), so the server scores the same text the transformers backend would."""

    concurrent_calls = True

    def __init__(self, endpoint: EndpointConfig, tokenizer, model_id: str, max_context: Optional[int] = None):
        if endpoint.logprobs_api not in LOGPROBS_APIS:
            raise EndpointError(f"endpoint.logprobs_api: {endpoint.logprobs_api!r} is not one of {LOGPROBS_APIS}")
        self.endpoint = endpoint
        self.max_context = max_context  # a request over it is a verdict, measured before it is sent
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.transport = Transport(endpoint)
        self._echo_max_tokens = 0  # raised to 1 when a server refuses max_tokens=0
        self._echo_text = False  # set when a server refuses token-id prompts

    def __repr__(self) -> str:
        return (
            f"OpenAIScorer(model_id={self.model_id!r}, logprobs_api={self.endpoint.logprobs_api!r}, "
            f"base_urls={self.transport.base_urls}, api_key_env={self.endpoint.api_key_env!r})"
        )

    def score(self, requests: Sequence[ScoreRequest]) -> List[TokenLogprobs]:
        return run_sync(lambda: self.ascore(requests))

    async def ascore(self, requests: Sequence[ScoreRequest]) -> List[TokenLogprobs]:
        return await self.transport.map(list(requests), self._one, "score")

    def _context(self, req: ScoreRequest) -> str:
        from deepwriter.llm.hf import render_prompt  # transformers: only for a prompt rendered here

        return render_prompt(self.tokenizer, req.messages, req.assistant_prefix)

    async def _one(self, client, sem, req: ScoreRequest) -> TokenLogprobs:
        if not req.target:
            return TokenLogprobs()
        api = self.endpoint.logprobs_api
        context = self._context(req)
        # Context, target and suffix tokenized as one text; the scored tokens are the ones the shared
        # rule picks (llm.base.scored_token_range), as for the in-process scorers.
        ids, first, last = encode_for_scoring(self.tokenizer, context, req.target, req.suffix)
        if last <= first:
            return TokenLogprobs()
        # vLLM's prompt_logprobs is sent the whole text, as the reference sends it: its CPU attention
        # splits the keys of a prompt by the prompt's length, so cutting the never-scored suffix moves
        # the scored log-probs in their last bits (up to 3e-3 on a score, docs/FIDELITY.md S19). The
        # other APIs are sent the tokens up to the last scored one. Each asks for at most one more.
        sent = len(ids) if api == "vllm_prompt_logprobs" else last
        too_long = over_context(sent, 1, self.max_context, "scorer") if self.max_context else None
        if too_long is not None:
            return TokenLogprobs(error=too_long, rejected=too_long)
        try:
            if api == "completions_echo":
                out = await self._echo(client, sem, context, req, ids, first, last)
            elif api == "vllm_prompt_logprobs":
                out = await self._prompt_logprobs(client, sem, ids, first, last)
            else:
                out = await self._sglang(client, sem, ids[:last], first)
        except RequestFailed as exc:
            if exc.over_context:
                return TokenLogprobs(error=str(exc), rejected=f"scorer: {exc}")
            self.transport.failed()
            return TokenLogprobs(error=str(exc))
        out.context_tokens = first
        return out

    async def _echo(self, client, sem, context: str, req: ScoreRequest, ids: List[int], first: int, last: int):
        """Legacy completions with echo. The prompt goes as token ids (the text tokenized here, as one)
        and the scored tokens' log-probs are the echoed entries at their positions. A server that
        refuses token-id prompts is sent the text; the scored tokens are then picked by the same rule
        from the characters of the server's tokens (`text_offset`)."""
        if self._echo_text:
            return await self._echo_text_offsets(client, sem, context, req)
        scored = ids[first:last]

        def parse(payload: dict) -> TokenLogprobs:
            lp = payload["choices"][0]["logprobs"]
            values = lp["token_logprobs"]
            if len(values) < last:  # the echoed prompt, then any generated token
                raise BadPayload(f"{len(values)} echoed log-probs for {last} prompt tokens")
            out = values[first:last]
            if any(v is None for v in out):
                raise BadPayload("no log-prob for a target token")
            return TokenLogprobs(tokens=self.tokenizer.convert_ids_to_tokens(scored), logprobs=[float(v) for v in out])

        try:
            return await self._echo_call(client, sem, ids[:last], parse)
        except RequestFailed as exc:
            # a 400 for length also names the prompt: that one is the request's verdict, not the API's
            if exc.over_context or not (exc.status in (400, 422) and "prompt" in str(exc)):
                raise
            log.warning("server refuses token-id prompts; sending texts (the server tokenizes them)")
            self._echo_text = True
            return await self._echo_text_offsets(client, sem, context, req)

    async def _echo_call(self, client, sem, prompt: Any, parse: Callable[[dict], TokenLogprobs]) -> TokenLogprobs:
        def body() -> dict:
            return {
                "model": self.model_id,
                "prompt": prompt,
                "max_tokens": self._echo_max_tokens,
                "echo": True,
                "logprobs": 1,
                "temperature": 0.0,
            }

        sent = body()
        try:
            return await self.transport.call(client, sem, "/completions", sent, parse)
        except RequestFailed as exc:
            if exc.over_context or not (
                exc.status in (400, 422) and sent["max_tokens"] == 0 and "max_tokens" in str(exc)
            ):
                raise
            if self._echo_max_tokens == 0:
                log.warning("server refuses max_tokens=0 with echo; asking for one token and ignoring it")
            self._echo_max_tokens = 1
            return await self.transport.call(client, sem, "/completions", body(), parse)

    async def _echo_text_offsets(self, client, sem, context: str, req: ScoreRequest) -> TokenLogprobs:
        text = context + req.target + req.suffix
        start, end = len(context), len(context) + len(req.target)

        def parse(payload: dict) -> TokenLogprobs:
            lp = payload["choices"][0]["logprobs"]
            offsets, tokens, values = lp["text_offset"], lp["tokens"], lp["token_logprobs"]
            if not (len(offsets) == len(tokens) == len(values)):
                raise BadPayload("logprobs arrays differ in length")
            spans = [
                (off, offsets[i + 1] if i + 1 < len(offsets) else off + len(tokens[i])) for i, off in enumerate(offsets)
            ]
            first, last = scored_token_range(spans, start, end)
            if last <= first:
                raise BadPayload("no echoed token falls inside the target's characters")
            if any(values[i] is None for i in range(first, last)):
                raise BadPayload("no log-prob for a target token")
            return TokenLogprobs(tokens=list(tokens[first:last]), logprobs=[float(v) for v in values[first:last]])

        return await self._echo_call(client, sem, text, parse)

    async def _prompt_logprobs(self, client, sem, ids: List[int], first: int, last: int) -> TokenLogprobs:
        """vLLM's `prompt_logprobs`: one {token_id: {logprob, rank, decoded_token}} per prompt
        position (None first); the prompt goes as the token ids of the whole text, so the scored
        positions [first, last) are known exactly."""

        def parse(payload: dict) -> TokenLogprobs:
            entries = payload["choices"][0]["prompt_logprobs"]
            if len(entries) != len(ids):
                raise BadPayload(f"{len(entries)} prompt_logprobs entries for {len(ids)} prompt tokens")
            values = [float(entries[p][str(ids[p])]["logprob"]) for p in range(first, last)]
            return TokenLogprobs(tokens=self.tokenizer.convert_ids_to_tokens(ids[first:last]), logprobs=values)

        # The reference's scorer call samples at temperature 1.0, top_p 1 (the log-probs of the prompt are
        # then the model's own whatever a server applies them to); one token, not its 100, is generated.
        body = {
            "model": self.model_id,
            "prompt": ids,
            "max_tokens": 1,
            "prompt_logprobs": 1,
            "temperature": 1.0,
            "top_p": 1.0,
        }
        return await self.transport.call(client, sem, "/completions", body, parse)

    async def _sglang(self, client, sem, ids: List[int], first: int) -> TokenLogprobs:
        """SGLang's /generate. Its first returned input position carries no log-prob, so logging
        starts one token before the scored ones; the context before that stays a cacheable prefix."""
        scored = ids[first:]
        start = max(0, first - 1)

        def parse(payload: dict) -> TokenLogprobs:
            rows = payload["meta_info"]["input_token_logprobs"][-len(scored) :]
            if len(rows) != len(scored) or [int(r[1]) for r in rows] != scored:
                raise BadPayload("input_token_logprobs do not end with the target's tokens")
            if any(r[0] is None for r in rows):
                raise BadPayload("a target token has no log-prob")
            return TokenLogprobs(
                tokens=self.tokenizer.convert_ids_to_tokens(scored), logprobs=[float(r[0]) for r in rows]
            )

        body = {
            "input_ids": ids,
            "sampling_params": {"max_new_tokens": 0, "temperature": 0.0},
            "return_logprob": True,
            "logprob_start_len": start,
            "top_logprobs_num": 0,
        }
        return await self.transport.call(client, sem, "/generate", body, parse, root=True)

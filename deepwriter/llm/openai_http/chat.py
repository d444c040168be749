"""Generation through /v1/chat/completions: n samples per prompt, per-prompt seeds, JSON-schema
structured output, and the assistant prefill (continue_final_message, with a fallback for servers
that refuse it)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence

from deepwriter.config.llm import EndpointConfig
from deepwriter.llm.base import Generation, Message, Sampling, over_context
from deepwriter.llm.openai_http.transport import BadPayload, HTTPClient, RequestFailed, Transport, run_sync

log = logging.getLogger("deepwriter.llm.http")


class OpenAIGenerator(HTTPClient):
    """`Generator` over /v1/chat/completions of one or more OpenAI-compatible servers."""

    concurrent_calls = True  # independent requests: schedulers send them one per item, concurrently

    def __init__(self, endpoint: EndpointConfig, model_id: str, tokenizer=None, max_context: Optional[int] = None):
        self.endpoint = endpoint
        self.model_id = model_id
        self.transport = Transport(endpoint)
        self._native_prefill = True  # cleared when a server refuses continue_final_message
        # With the model's tokenizer and context, a prompt that cannot fit is measured here and never
        # sent; without them, the server's 400 for length is read as the same verdict.
        self.tokenizer, self.max_context = tokenizer, max_context

    def measure(self, messages: List[Message], prefill: Optional[str], sampling: Sampling) -> Optional[str]:
        """Why this prompt cannot be served in the model's context (None: it fits, or is not measured)."""
        if self.tokenizer is None or self.max_context is None:
            return None
        from deepwriter.llm.hf import render_prompt  # transformers: only for a prompt rendered here

        text = render_prompt(self.tokenizer, messages, prefill or "")
        tokens = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return over_context(tokens, sampling.max_new_tokens, self.max_context, "generator")

    def __repr__(self) -> str:
        return (
            f"OpenAIGenerator(model_id={self.model_id!r}, base_urls={self.transport.base_urls}, "
            f"api_key_env={self.endpoint.api_key_env!r})"
        )

    def generate(
        self,
        prompts: Sequence[List[Message]],
        sampling: Sampling,
        n: int = 1,
        prefill: Optional[Sequence[str]] = None,
        seeds: Optional[Sequence[int]] = None,
        json_schemas: Optional[Sequence[Optional[dict]]] = None,
    ) -> List[List[Generation]]:
        return run_sync(
            lambda: self.agenerate(prompts, sampling, n=n, prefill=prefill, seeds=seeds, json_schemas=json_schemas)
        )

    async def agenerate(
        self,
        prompts: Sequence[List[Message]],
        sampling: Sampling,
        n: int = 1,
        prefill: Optional[Sequence[str]] = None,
        seeds: Optional[Sequence[int]] = None,
        json_schemas: Optional[Sequence[Optional[dict]]] = None,
    ) -> List[List[Generation]]:
        for name, given in (("prefill", prefill), ("seeds", seeds), ("json_schemas", json_schemas)):
            if given is not None and len(given) != len(prompts):
                raise ValueError(f"{name} has {len(given)} entries for {len(prompts)} prompts")
        items = [
            (
                list(m),
                prefill[i] if prefill is not None else None,
                seeds[i] if seeds is not None else sampling.seed,
                json_schemas[i] if json_schemas is not None else None,
            )
            for i, m in enumerate(prompts)
        ]

        async def one(client, sem, item):
            sampling_i = dataclasses.replace(sampling, seed=item[2])
            return await self._one(client, sem, item[0], item[1], sampling_i, n, item[3])

        return await self.transport.map(items, one, "generate")

    def _body(
        self, messages: List[Message], prefill: Optional[str], sampling: Sampling, n: int, schema: Optional[dict] = None
    ) -> dict:
        body: Dict[str, Any] = {
            "model": self.model_id,
            "messages": messages,
            "n": n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_new_tokens,
        }
        if sampling.seed is not None and self.endpoint.send_seed:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema.get("title", "reply"), "schema": schema, "strict": True},
            }
        if prefill:
            body["messages"] = messages + [{"role": "assistant", "content": prefill}]
            if self._native_prefill:
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
        return body

    async def _one(
        self,
        client,
        sem,
        messages: List[Message],
        prefill: Optional[str],
        sampling: Sampling,
        n: int,
        schema: Optional[dict] = None,
    ) -> List[Generation]:
        def parse_for(body: dict) -> Callable[[dict], List[Generation]]:
            # without continue_final_message a server may answer with the whole assistant turn
            return lambda payload: parse(payload, repeated=bool(prefill) and "continue_final_message" not in body)

        def parse(payload: dict, repeated: bool) -> List[Generation]:
            choices = sorted(payload["choices"], key=lambda c: c.get("index", 0))
            if len(choices) != n:
                raise BadPayload(f"asked for n={n} choices, got {len(choices)}")
            usage = payload.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            # per-choice token counts are not reported; the total is shared out evenly
            completion_each = int(usage.get("completion_tokens") or 0) // n
            gens = []
            for c in choices:
                text = c["message"].get("content") or ""
                if repeated and text.startswith(prefill):
                    text = text[len(prefill) :]
                reason = c.get("finish_reason") or "stop"
                gens.append(
                    Generation(
                        text=text,
                        prompt_tokens=prompt_tokens,
                        completion_tokens=completion_each,
                        finish_reason="length" if reason == "length" else "stop",
                    )
                )
            return gens

        too_long = self.measure(messages, prefill, sampling)
        if too_long is not None:
            return [Generation(text="", finish_reason="error", error=too_long, rejected=too_long) for _ in range(n)]
        try:
            body = self._body(messages, prefill, sampling, n, schema)
            try:
                return await self.transport.call(client, sem, "/chat/completions", body, parse_for(body))
            except RequestFailed as exc:
                refused = exc.status in (400, 422) and (
                    "continue_final_message" in str(exc) or "add_generation_prompt" in str(exc)
                )
                if not (refused and "continue_final_message" in body):
                    raise
                if self._native_prefill:
                    log.warning(
                        "server refuses continue_final_message; sending prefills as a plain trailing assistant message"
                    )
                self._native_prefill = False
                body = self._body(messages, prefill, sampling, n, schema)
                return await self.transport.call(client, sem, "/chat/completions", body, parse_for(body))
        except RequestFailed as exc:
            rejected = f"generator: {exc}" if exc.over_context else None
            if rejected is None:
                self.transport.failed()
            return [Generation(text="", finish_reason="error", error=str(exc), rejected=rejected) for _ in range(n)]

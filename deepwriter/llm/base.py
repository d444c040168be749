"""The small interface every stage talks to: a Generator writes text, a Scorer returns the
log-probabilities of a given target text. Backends (transformers in-process, OpenAI-compatible HTTP)
implement it; the REER search, the judge and the eval stage never import a backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Protocol, Sequence, Tuple, runtime_checkable

Message = Dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.8
    top_p: float = 0.85
    max_new_tokens: int = 512
    seed: Optional[int] = None  # same seed, same backend, same inputs: same text
    stop: tuple = ()


@dataclass
class Generation:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"  # stop | length | error
    error: Optional[str] = None
    # Set (with `error`) when the prompt cannot fit the model's context: measured before sending, or
    # a server's 400 for length. Deterministic, so a retry or a re-run meets it again: the search
    # turns it into a verdict; callers that only read `error` still see a failed call.
    rejected: Optional[str] = None


@dataclass
class ScoreRequest:
    """Score `target` given a chat context: the messages (user turn etc.) and the beginning of the
    assistant turn (`assistant_prefix`, e.g. "<think>\\n...\\n</think>\\n"), rendered by the scorer
    with its own chat template. `target` continues the assistant turn and `suffix` (never scored)
    follows it. Context, target and suffix are tokenized as one text and the scored tokens are those
    `scored_token_range` picks: a token straddling the target's start or end counts as the target's."""

    messages: List[Message]
    assistant_prefix: str
    target: str
    suffix: str = ""


@dataclass
class TokenLogprobs:
    tokens: List[str] = field(default_factory=list)
    logprobs: List[float] = field(default_factory=list)
    # Set when the backend could not score this request (e.g. an HTTP call failed after all retries);
    # tokens/logprobs are then empty and the caller decides what a failed score means.
    error: Optional[str] = None
    # Tokens of the rendered context read before the target (0: the backend does not count them);
    # with len(logprobs), the tokens this request cost the scorer.
    context_tokens: int = 0
    # Set (with `error`) when the request cannot fit the scorer's context (see Generation.rejected).
    rejected: Optional[str] = None

    def __len__(self) -> int:
        return len(self.logprobs)


class ModelCallFailed(Exception):
    """A model call that failed for reasons of infrastructure, after the backend's own retries (a
    `Generation` or `TokenLogprobs` with `error` set). Never a verdict on the item it was for: the
    item stays unfinished, for a re-run."""


def over_context(prompt_tokens: int, new_tokens: int, max_context: int, who: str) -> Optional[str]:
    """The reason a request of `prompt_tokens` that asks for `new_tokens` more cannot be served in a
    context of `max_context` tokens (a server answers it with a 400), or None when it fits."""
    if prompt_tokens + new_tokens <= max_context:
        return None
    return (
        f"{who}: prompt of {prompt_tokens} tokens + {new_tokens} to generate is over the context of "
        f"{max_context} (models.{who}.max_context)"
    )


@runtime_checkable
class Generator(Protocol):
    model_id: str
    # True for a backend whose calls are independent requests to servers (HTTP): a scheduler sends
    # them one per item, concurrently. False (or absent) for an in-process backend, which wants
    # batches. (A class attribute; the runtime protocol check looks at methods only.)

    def generate(
        self,
        prompts: Sequence[List[Message]],
        sampling: Sampling,
        n: int = 1,
        prefill: Optional[Sequence[str]] = None,
        seeds: Optional[Sequence[int]] = None,
    ) -> List[List[Generation]]:
        """For each prompt, `n` continuations of the assistant turn. `prefill[i]` (if given) is
        already written at the start of the assistant turn and is not repeated in the output.
        `seeds[i]` (if given) replaces `sampling.seed` for prompt i, so that its samples do not
        depend on the other prompts of the call."""
        ...


@runtime_checkable
class Scorer(Protocol):
    model_id: str

    def score(self, requests: Sequence[ScoreRequest]) -> List[TokenLogprobs]:
        """Per-token log-probs of each request's target."""
        ...


def clipped_mean_nll(lp: TokenLogprobs, clip_min: Optional[float] = -2.0, clip_max: Optional[float] = 0.0) -> float:
    """Mean negative log-likelihood with each token log-prob clipped to [clip_min, clip_max];
    both None gives the plain NLL. An empty target has no score."""
    if not lp.logprobs:
        raise ValueError("cannot score an empty target")
    total = 0.0
    for v in lp.logprobs:
        if clip_min is not None:
            v = max(v, clip_min)
        if clip_max is not None:
            v = min(v, clip_max)
        total += v
    return -total / len(lp.logprobs)


def scored_token_range(offsets: Sequence[Tuple[int, int]], start: int, end: int) -> Tuple[int, int]:
    """[first, last) token indices scored for the target characters text[start:end], given the
    (start, end) character span of every token of the whole text. The reference's rule (REER
    synthesize.py, PosteriorManager.compute), for every backend: the first scored token is the last
    token starting at or before `start` (so a token straddling the boundary with the context counts),
    the last is the first token from there ending at or after `end` (so does one straddling into what
    follows). (0, 0): no token qualifies."""
    first = next((i for i in range(len(offsets) - 1, -1, -1) if offsets[i][0] <= start), None)
    if first is None:
        return 0, 0
    last = next((i + 1 for i in range(first, len(offsets)) if offsets[i][1] >= end), None)
    return (first, last) if last is not None else (0, 0)


class TokenizerWithoutOffsets(ValueError):
    """The scorer's tokenizer cannot give character offsets (a slow, non-Rust tokenizer)."""


def encode_for_scoring(tokenizer, context: str, target: str, suffix: str = "") -> Tuple[List[int], int, int]:
    """(token ids of context + target + suffix, first, last): the text tokenized as one, and the
    [first, last) range of the tokens scored for `target` (scored_token_range). The tokens after
    `last` change no scored log-prob of a causal model in exact arithmetic; a server whose kernels
    depend on the prompt's length is sent them anyway (OpenAIScorer, vLLM)."""
    text = context + target + suffix
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError as exc:  # transformers' slow tokenizers
        raise TokenizerWithoutOffsets(
            f"{type(tokenizer).__name__} gives no character offsets: scoring needs a fast tokenizer"
        ) from exc
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    first, last = scored_token_range(offsets, len(context), len(context) + len(target)) if target else (0, 0)
    return list(enc["input_ids"]), first, last

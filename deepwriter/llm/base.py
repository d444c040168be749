"""The small interface every stage talks to: a Generator writes text, a Scorer returns the
log-probabilities of a given target text. Backends (transformers in-process, OpenAI-compatible HTTP)
implement it; the REER search, the judge and the eval stage never import a backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Protocol, Sequence, runtime_checkable

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


@dataclass
class ScoreRequest:
    """Score `target` given a chat context: the messages (user turn etc.) and the beginning of the
    assistant turn (`assistant_prefix`, e.g. "<think>\\n...\\n</think>\\n"), rendered by the scorer
    with its own chat template. `target` continues the assistant turn."""

    messages: List[Message]
    assistant_prefix: str
    target: str


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

    def __len__(self) -> int:
        return len(self.logprobs)


class ModelCallFailed(Exception):
    """A model call that failed for reasons of infrastructure, after the backend's own retries (a
    `Generation` or `TokenLogprobs` with `error` set). Never a verdict on the item it was for: the
    item stays unfinished, for a re-run."""


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

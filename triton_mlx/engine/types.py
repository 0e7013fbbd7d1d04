"""Plain data passed between the front-ends and the engine.

Nothing here imports MLX, so front-ends can build requests and read outputs without touching
the engine's internals.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence picks its next token; every field is honoured while batched."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    logit_bias: dict[int, float] = field(default_factory=dict)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to generate from: already tokenized, already validated.

    ``logprobs``: None for none; k >= 0 for the chosen token's log probability plus the k
    most likely alternatives at each step. ``ignore_eos``: an end-of-sequence token does not
    end the sequence (vLLM's extension, for fixed output lengths). ``min_tokens``: no
    end-of-sequence token and no stop string ends it before this many tokens (vLLM's rule).
    """

    prompt_tokens: list[int]
    max_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    request_id: str | None = None
    logprobs: int | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    grammar: str | None = None
    """An llguidance grammar (the JSON that ``llguidance.LLMatcher.grammar_from_*`` returns),
    already validated by the serving layer: every token is sampled under its mask."""
    skip_special_tokens: bool = True
    """Leave special tokens out of the text (but for end-of-sequence ones, which never show,
    keeping them serves parsers whose markers are special tokens)."""

    def for_choice(self, index: int) -> GenerationRequest:
        """The request for choice ``index`` of ``n``: with a seed, each choice draws its own
        numbers (``seed + index``)."""
        if index == 0 or self.sampling.seed is None:
            return self
        sampling = dataclasses.replace(self.sampling, seed=self.sampling.seed + index)
        return dataclasses.replace(self, sampling=sampling)


Logprob = tuple[float, list[tuple[int, float]]]
"""A sampled token's log probability and the top alternatives, best first, as the decode step
reads them for a row that asked (``DecodeBatch``) and the stream formats them (``TextOutput``)."""


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token, its log probability, and the most likely alternatives."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class GenerationOutput:
    """What one engine step produced for one sequence.

    ``text`` is new, complete UTF-8 text that is safe to show: it never ends inside a multi-byte
    character and never holds the start of a stop string. ``finish_reason`` is set on the last
    output of a sequence only ("stop" or "length"). ``logprobs`` covers the tokens generated
    since the previous output (when asked for); ``cached_tokens`` is how many prompt tokens
    came from the prefix cache.
    """

    text: str
    completion_tokens: int
    finish_reason: str | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    cached_tokens: int = 0
    stop_string: str | None = None
    """The stop string that ended the sequence (``finish_reason`` "stop"), if one did."""


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of an engine's occupancy, for metrics, readiness and tests."""

    running: int
    queued: int
    slots: int
    max_queue: int
    generated_tokens: int
    prompt_tokens: int
    cached_prompt_tokens: int
    prefix_cache_bytes: int
    kv_reserved_bytes: int
    kv_budget_bytes: int
    ranks: int = 1
    """Ranks the model is split across (``distributed``); 1 when it is not."""
    exchange_seconds: float = 0.0
    """Time spent telling (rank 0) or hearing (the others) each step's commands."""
    exchanges: int = 0
    """How many such exchanges (one per turn of the engine loop)."""
    collective_seconds: float = 0.0
    """Time the sampled steps spent in the model's own collectives (``CollectiveClock``)."""
    collective_steps: int = 0
    """How many steps were sampled (one in 64, on every rank)."""
    sampled_step_seconds: float = 0.0
    """The sampled steps' whole time, collectives included."""


class EngineError(Exception):
    """Generation failed inside the engine; the message is safe to show to a client."""


class QueueFullError(EngineError):
    """Every batch slot is busy and the waiting queue is full."""


class RequestTooLargeError(EngineError):
    """The request's KV cache could never fit in the memory budget, even alone."""


class EngineNotRunningError(EngineError):
    """The engine is stopping or stopped and takes no new requests."""

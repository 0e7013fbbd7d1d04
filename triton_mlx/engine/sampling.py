"""Per-sequence samplers and penalties, built on the engine thread.

Each sequence in a batch carries its own sampler and processors, so requests with different
parameters share one batch. Greedy sequences get mlx-lm's shared greedy sampler, which the
decode batch recognises and replaces with one argmax over all its greedy rows; unseeded ones a
``SharedDraw``, which it draws for all such rows of the same filters at once; seeded ones a
sampler of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p, greedy_sampler

from triton_mlx.engine.penalties import Penalties
from triton_mlx.engine.types import SamplingParams

Sampler = Callable[[mx.array], mx.array]
LogitsProcessor = Callable[[mx.array, mx.array], mx.array]


@dataclass(frozen=True)
class Filters:
    """The truncation filters of one sampling configuration, applied in mlx-lm's order (top-p,
    min-p, top-k); a value that keeps every token is off. They work on a row or on rows."""

    top_p: float = 1.0
    min_p: float = 0.0
    top_k: int = 0

    @classmethod
    def of(cls, params: SamplingParams, vocab_size: int) -> Filters:
        return cls(top_p=params.top_p if 0.0 < params.top_p < 1.0 else 1.0,
                   min_p=params.min_p if params.min_p > 0.0 else 0.0,
                   # top_k >= vocab keeps every token: nothing to filter
                   top_k=params.top_k if 0 < params.top_k < vocab_size else 0)

    @property
    def reads_probabilities(self) -> bool:
        """Top-p sums probabilities; min-p, top-k and the draw itself ignore a row's shift, so
        without top-p the raw logits do as well as log probabilities."""
        return self.top_p < 1.0

    def __call__(self, logprobs: mx.array) -> mx.array:
        if self.top_p < 1.0:
            logprobs = apply_top_p(logprobs, self.top_p)
        if self.min_p > 0.0:
            logprobs = apply_min_p(logprobs, self.min_p)
        if self.top_k:
            logprobs = apply_top_k(logprobs, self.top_k)
        return logprobs


@dataclass(frozen=True)
class SharedDraw:
    """How an unseeded sequence samples: in one draw with the batch's other unseeded sequences
    of the same ``filters`` (each at its own temperature), from MLX's global generator. One
    draw per step, not one per sequence: on a GPU each per-row draw is a handful of kernel
    launches."""

    temperature: float
    filters: Filters


def shared_draw(params: SamplingParams, vocab_size: int) -> SharedDraw | None:
    """The shared draw for ``params``; None when greedy or seeded (a seeded sequence owns its
    random key, so it samples alone: ``make_sampler``)."""
    if params.greedy or params.seed is not None:
        return None
    return SharedDraw(params.temperature, Filters.of(params, vocab_size))


def draw_rows(logits: mx.array, inverse_temperatures: mx.array, filters: Filters) -> mx.array:
    """One token per row of ``logits`` (rows, vocabulary), each row scaled by its inverse
    temperature ((rows, 1)) after ``filters``."""
    if filters.reads_probabilities:
        logits = log_softmax(logits)
    return mx.random.categorical(filters(logits) * inverse_temperatures)


def log_softmax(logits: mx.array) -> mx.array:
    """Log probabilities of each row. Only for the rows that read them: on a CPU the
    exponentials of a (64, 49k) batch take as long as a small model's forward pass."""
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def make_sampler(params: SamplingParams, vocab_size: int) -> Sampler:
    """A sampler for ``params``: argmax at temperature 0, else filtered categorical sampling.

    With a ``seed`` the sampler owns its random key, so its draws do not depend on which other
    sequences share the batch.
    """
    if params.greedy:
        return greedy_sampler
    filters = Filters.of(params, vocab_size)
    inverse_temperature = 1.0 / params.temperature
    # Seeds run from -2**63 to 2**64 - 1 (OpenAI's and vLLM's ranges); MLX keys take uint64.
    key = mx.random.key(params.seed % 2**64) if params.seed is not None else None

    def sample(logprobs: mx.array) -> mx.array:
        nonlocal key
        logprobs = filters(logprobs)
        if key is None:
            return mx.random.categorical(logprobs * inverse_temperature)
        key, subkey = mx.random.split(key)
        return mx.random.categorical(logprobs * inverse_temperature, key=subkey)

    return sample


def make_logits_processors(params: SamplingParams) -> list[LogitsProcessor | Penalties]:
    """A sequence's processors of its logits that need its tokens so far: its ``Penalties``
    when any of the three is set, which the decode batch applies to all its penalised rows at
    once (``penalties``); empty when none is. (Logit bias and ``min_tokens`` need no history:
    the decode batch applies them to all its rows at once too.) Frequency and presence
    penalties count generated tokens only, as OpenAI defines them; the repetition penalty
    (Hugging Face's) covers prompt and output."""
    penalties = Penalties(params.frequency_penalty, params.presence_penalty,
                          params.repetition_penalty)
    if penalties == Penalties():
        return []
    return [penalties]

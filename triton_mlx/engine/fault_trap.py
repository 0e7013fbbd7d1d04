"""Per-sequence failure isolation inside mlx-lm's batched step.

A sequence's sampler and logits processors run inside ``BatchGenerator.next()``, in the same
step as every other sequence of the batch. An exception there would abort the whole step, and
the engine cannot tell whose code raised it, so every running request would fail. Wrapping
each sequence's callables in a ``FaultTrap`` keeps the step going: the exception is recorded
against that one sequence, a harmless stand-in result (the logits unchanged, the argmax token)
lets the batch finish the step, and the engine fails that sequence alone right after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import mlx.core as mx
from mlx_lm.sample_utils import greedy_sampler

from triton_mlx.engine.penalties import Penalties

Sampler = Callable[[mx.array], mx.array]
LogitsProcessor = Callable[[mx.array, mx.array], mx.array]


class FaultTrap:
    """Catches the exceptions of one sequence's own callables; ``error`` holds the first."""

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.on_first_error: Callable[[], None] | None = None
        """Called once, when the first error is recorded (the engine notes which sequence
        failed, so it never scans the whole batch for failures)."""

    def sampler(self, sampler: Sampler) -> Sampler:
        """``sampler``, guarded. mlx-lm's shared greedy sampler is left as it is: the batch
        samples every greedy sequence in one call only while they share that very object (and
        an argmax has no per-request code to fail)."""
        if sampler is greedy_sampler:
            return sampler

        def guarded(logprobs: mx.array) -> mx.array:
            try:
                return sampler(logprobs)
            except Exception as exc:
                self.record(exc)
                return mx.argmax(logprobs, axis=-1)

        return guarded

    def processors(self, processors: Sequence[Any]) -> list[Any]:
        """``processors``, each guarded; ``Penalties`` (settings the batch applies, not code of
        the sequence's own) are left as they are."""
        return [p if isinstance(p, Penalties) else self._processor(p) for p in processors]

    def _processor(self, processor: LogitsProcessor) -> LogitsProcessor:
        def guarded(tokens: mx.array, logits: mx.array) -> mx.array:
            try:
                return processor(tokens, logits)
            except Exception as exc:
                self.record(exc)
                return logits

        return guarded

    def record(self, exc: Exception) -> None:
        """Keep ``exc`` if it is this sequence's first error (any thread)."""
        if self.error is None:
            self.error = exc
            if self.on_first_error is not None:
                self.on_first_error()

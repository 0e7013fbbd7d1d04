"""Frequency, presence and repetition penalties for all the rows of a decode batch at once.

A row's penalties need its tokens so far: OpenAI's frequency and presence penalties count the
tokens it has generated, Hugging Face's repetition penalty covers every token it has seen
(prompt and output). A processor per row that recounts its history every step costs a handful
of operations per row and step: on a GPU, where a step is bound by launching kernels, 64
penalised rows add some 500 launches to it. Here each row keeps two vocabulary-wide vectors,
its generated-token counts and the tokens it has seen, and the batch stacks the penalised rows'
vectors into (rows, vocabulary) arrays (``PenaltyStack``): one update and one application per
step, whatever the number of rows. The stack is rebuilt only when the batch's rows change. (On
a CPU both ways make the same elementwise passes over the logits: no faster there.)
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx


@dataclass(frozen=True)
class Penalties:
    """One sequence's penalties; only sequences with an active one carry this."""

    frequency: float = 0.0
    presence: float = 0.0
    repetition: float = 1.0
    """Hugging Face's: a seen token's logit is divided by it when positive, multiplied when
    negative; 1 is off."""


class RowHistory:
    """One row's counts: tokens generated (for frequency and presence) and tokens seen (prompt
    and output, for repetition), as vectors over the vocabulary."""

    def __init__(self, penalties: Penalties, prompt: list[int], vocab_size: int) -> None:
        self.penalties = penalties
        self.generated = mx.zeros((vocab_size,), dtype=mx.float32)
        self.seen = mx.zeros((vocab_size,), dtype=mx.bool_)
        if prompt:
            self.seen[mx.array(prompt)] = True


class PenaltyStack:
    """The penalised rows of one batch membership, stacked (rows in ``histories``' order)."""

    def __init__(self, histories: list[RowHistory]) -> None:
        self.histories = histories
        self.generated = mx.stack([h.generated for h in histories])
        self.seen = mx.stack([h.seen for h in histories])
        penalties = [h.penalties for h in histories]
        self._output = any(p.frequency or p.presence for p in penalties)
        self._repeats = any(p.repetition != 1.0 for p in penalties)
        self.frequency = mx.array([[p.frequency] for p in penalties])
        self.presence = mx.array([[p.presence] for p in penalties])
        self.repetition = mx.array([[p.repetition] for p in penalties])
        self._rows = mx.arange(len(histories))

    def record(self, tokens: mx.array, generated: bool = True) -> None:
        """The tokens just fed to the model, one per row: seen, and counted as generated
        unless they are the prompts' last tokens (``generated`` False: a batch's first step)."""
        self.seen[self._rows, tokens] = True
        if generated:
            self.generated = self.generated.at[self._rows, tokens].add(1.0)

    def apply(self, logits: mx.array) -> mx.array:
        """The penalised rows' ``logits`` (rows, vocabulary), penalties applied: frequency and
        presence first, then repetition."""
        if self._output:
            counts = self.generated
            penalty = self.frequency * counts + self.presence * (counts > 0)
            logits = logits - penalty.astype(logits.dtype)
        if self._repeats:
            scaled = mx.where(logits < 0, logits * self.repetition, logits / self.repetition)
            logits = mx.where(self.seen, scaled.astype(logits.dtype), logits)
        return logits

    def arrays(self) -> list[mx.array]:
        """What a step changes: to evaluate with the step."""
        return [self.generated, self.seen]

    def unstack(self) -> None:
        """Hand each row its vectors back, before the batch's rows change."""
        for j, history in enumerate(self.histories):
            history.generated = self.generated[j]
            history.seen = self.seen[j]


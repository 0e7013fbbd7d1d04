"""Frequency, presence and repetition penalties for all the rows of a decode batch at once.

A row's penalties need its tokens so far: OpenAI's frequency and presence penalties count the
tokens it has generated, Hugging Face's repetition penalty covers every token it has seen
(prompt and output). A processor per row that recounts its history every step costs a handful
of operations per row and step: on a GPU, where a step is bound by launching kernels, 64
penalised rows add some 500 launches to it. Here each row keeps the tokens fed to the model and
its generated-token counts, and the batch stacks the penalised rows' into arrays
(``PenaltyStack``): one update and one application per step, whatever the number of rows,
over the tokens the rows have seen rather than the whole vocabulary. The stack is rebuilt only
when the batch's rows change.
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
    """One row's tokens so far: every token fed to the model (prompt and output, for
    repetition; repeats allowed) and the counts of the generated ones over the vocabulary
    (for frequency and presence)."""

    def __init__(self, penalties: Penalties, prompt: list[int], vocab_size: int) -> None:
        self.penalties = penalties
        self.fed = mx.array(prompt, dtype=mx.uint32)
        self.generated = mx.zeros((vocab_size,), dtype=mx.float32)


class PenaltyStack:
    """The penalised rows of one batch membership, stacked (rows in ``histories``' order).

    Only the logits of tokens a row has seen change, so they are gathered, penalised and put
    back: work over each row's tokens so far, not over the vocabulary (which on a CPU, where
    each elementwise pass runs on one core, made the penalties cost as much as the step)."""

    def __init__(self, histories: list[RowHistory]) -> None:
        self.histories = histories
        self.generated = mx.stack([h.generated for h in histories])
        self.fed: mx.array | None = None
        """(rows, tokens so far): made at the first ``record``, which pads each row with the
        token it records (a repeat: harmless, the same logit is put back twice)."""
        penalties = [h.penalties for h in histories]
        self._output = any(p.frequency or p.presence for p in penalties)
        self.frequency = mx.array([[p.frequency] for p in penalties])
        self.presence = mx.array([[p.presence] for p in penalties])
        self.repetition = mx.array([[p.repetition] for p in penalties])
        self._rows = mx.arange(len(histories))

    def record(self, tokens: mx.array, generated: bool = True) -> None:
        """The tokens just fed to the model, one per row: seen, and counted as generated
        unless they are the prompts' last tokens (``generated`` False: a batch's first step)."""
        column = tokens.astype(mx.uint32)[:, None]
        if self.fed is None:
            self.fed = mx.concatenate([self._padded(list(column)), column], axis=1)
        else:
            self.fed = mx.concatenate([self.fed, column], axis=1)
        if generated:
            self.generated = self.generated.at[self._rows, tokens].add(1.0)

    def _padded(self, pads: list[mx.array]) -> mx.array:
        """The rows' tokens as one (rows, longest) array, each row padded with its ``pads``
        token: one it has seen, or is recording now."""
        longest = max(h.fed.size for h in self.histories)
        return mx.stack([mx.concatenate([h.fed, mx.repeat(pad, longest - h.fed.size)])
                         for h, pad in zip(self.histories, pads, strict=True)])

    def apply(self, logits: mx.array) -> mx.array:
        """The penalised rows' ``logits`` (rows, vocabulary), penalties applied to the tokens
        each row has seen: frequency and presence first, then repetition. (Before the first
        ``record``, every row must have seen a token.)"""
        if self.fed is None:
            self.fed = self._padded([h.fed[:1] for h in self.histories])
        values = mx.take_along_axis(logits, self.fed, axis=-1)
        if self._output:
            counts = mx.take_along_axis(self.generated, self.fed, axis=-1)
            penalty = self.frequency * counts + self.presence * (counts > 0)
            values = values - penalty.astype(values.dtype)
        scaled = mx.where(values < 0, values * self.repetition, values / self.repetition)
        return mx.put_along_axis(logits, self.fed, scaled.astype(logits.dtype), axis=-1)

    def arrays(self) -> list[mx.array]:
        """What a step changes: to evaluate with the step."""
        return [self.generated] if self.fed is None else [self.generated, self.fed]

    def unstack(self) -> None:
        """Hand each row its tokens and counts back, before the batch's rows change."""
        for j, history in enumerate(self.histories):
            history.generated = self.generated[j]
            if self.fed is not None:
                history.fed = self.fed[j]

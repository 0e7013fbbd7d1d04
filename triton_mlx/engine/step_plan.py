"""What each row of a decode batch asks of a step (``RowSettings``), and the batch's plan of it,
worked out once per batch membership (``StepPlan``).

``DecodeBatch`` rebuilds its ``StepPlan`` only when rows join or leave, so a step's work on the
host does not grow with the rows' settings: the logit biases gathered into one scatter, the
penalised, processed, seeded and logprob rows as index arrays, and the unseeded sampling rows
grouped by their filters (``DrawGroup``: drawn together, each at its own temperature).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx

from triton_mlx.engine.fault_trap import FaultTrap, LogitsProcessor, Sampler
from triton_mlx.engine.penalties import Penalties
from triton_mlx.engine.sampling import Filters, SharedDraw, draw_rows

__all__ = ["DrawGroup", "RowSettings", "StepPlan"]


@dataclass(eq=False)
class RowSettings:
    """What one sequence asks of each step besides its forward pass."""

    trap: FaultTrap
    sampler: Sampler | None = None
    """A seeded row's own sampler; None: greedy (argmax with the rest of the batch) or ``draw``."""
    draw: SharedDraw | None = None
    """An unseeded row's sampling, drawn with the batch's rows of the same filters."""
    logit_bias: dict[int, float] = field(default_factory=dict)
    penalties: list[LogitsProcessor | Penalties] = field(default_factory=list)
    """What needs the sequence's tokens so far: its ``Penalties``, applied with the batch's
    other penalised rows at once, and processors of its own, applied row by row."""
    min_tokens: int = 0
    """End-of-sequence tokens are masked until this many tokens are generated."""
    stop_tokens: frozenset[int] = frozenset()
    """Tokens that end the sequence with "stop" (none with ``ignore_eos``)."""
    logprobs: int | None = None
    """Top alternatives wanted with each token's log probability; None: none."""

    def __post_init__(self) -> None:
        self.stacked = next((p for p in self.penalties if isinstance(p, Penalties)), None)
        self.processors = [p for p in self.penalties if not isinstance(p, Penalties)]


class StepPlan:
    """Which rows need what, derived once per batch membership (not once per step)."""

    def __init__(self, rows: list[RowSettings], eos_ids: list[int]) -> None:
        bias_rows, bias_ids, bias_values = [], [], []
        for i, row in enumerate(rows):
            for token, value in row.logit_bias.items():
                bias_rows.append(i)
                bias_ids.append(token)
                bias_values.append(value)
        self.bias = ((mx.array(bias_rows), mx.array(bias_ids), mx.array(bias_values))
                     if bias_rows else None)
        self.stacked_rows = [i for i, row in enumerate(rows) if row.stacked is not None]
        self.stacked_index = mx.array(self.stacked_rows) if self.stacked_rows else None
        self.processor_rows = [i for i, row in enumerate(rows) if row.processors]
        self.processor_index = mx.array(self.processor_rows) if self.processor_rows else None
        self.min_rows = [i for i, row in enumerate(rows) if row.min_tokens > 0]
        self.sampled_rows = [i for i, row in enumerate(rows) if row.sampler is not None]
        self.sampled_index = mx.array(self.sampled_rows) if self.sampled_rows else None
        alike: dict[Filters, list[int]] = {}
        for i, row in enumerate(rows):
            if row.draw is not None:
                alike.setdefault(row.draw.filters, []).append(i)
        self.draws = [DrawGroup(members, filters, [rows[i].draw.temperature for i in members])
                      for filters, members in alike.items()]
        self.logprob_rows = [i for i, row in enumerate(rows) if row.logprobs is not None]
        self.logprob_index = mx.array(self.logprob_rows) if self.logprob_rows else None
        self.top = max((rows[i].logprobs or 0 for i in self.logprob_rows), default=0)


class DrawGroup:
    """The unseeded rows that share one set of filters: drawn together, each at its own
    temperature."""

    def __init__(self, rows: list[int], filters: Filters, temperatures: list[float]) -> None:
        self.rows = rows
        self.index = mx.array(rows)
        self.filters = filters
        self.inverse_temperatures = mx.array([[1.0 / t] for t in temperatures])

    def draw(self, logits: mx.array) -> mx.array:
        """One token per row of ``logits`` (this group's rows, in order)."""
        return draw_rows(logits, self.inverse_temperatures, self.filters)

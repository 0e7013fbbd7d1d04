"""Engine-thread record of one sequence in the batch: whose it is and what guards it."""

from __future__ import annotations

from dataclasses import dataclass

from triton_mlx.engine.fault_trap import FaultTrap
from triton_mlx.engine.stream import GenerationStream
from triton_mlx.engine.types import GenerationRequest


@dataclass(eq=False)
class Sequence:
    """One sequence in the batch. Its text is assembled on the event loop (``TextOutput``)."""

    stream: GenerationStream
    uid: int = -1
    cached_tokens: int = 0
    trap: FaultTrap | None = None
    """Records an exception raised by this sequence's sampler or logits processors."""

    @property
    def request(self) -> GenerationRequest:
        return self.stream.request

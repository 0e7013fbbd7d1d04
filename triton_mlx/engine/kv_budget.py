"""Admission control from memory: will a request's KV cache fit, now or ever?

Each running sequence reserves the KV bytes its prompt plus ``max_tokens`` can grow to
(rounded up to the cache's allocation step), so the sum of reservations never exceeds the
budget and a burst of long requests waits in the queue instead of running out of memory.
"""

from __future__ import annotations

import math

CACHE_STEP = 256  # mlx-lm's KVCache grows its buffers in steps of this many tokens


class KVBudget:
    """Byte accounting for the KV caches of one model's running sequences."""

    def __init__(self, bytes_per_token: int, budget_bytes: int) -> None:
        self.bytes_per_token = bytes_per_token
        self.budget_bytes = max(budget_bytes, 0)
        self.reserved_bytes = 0

    def need(self, tokens: int) -> int:
        """Bytes a sequence of ``tokens`` tokens may occupy."""
        return math.ceil(tokens / CACHE_STEP) * CACHE_STEP * self.bytes_per_token

    def can_ever_fit(self, need: int) -> bool:
        return need <= self.budget_bytes

    def free_bytes(self) -> int:
        return self.budget_bytes - self.reserved_bytes

    def reserve(self, need: int) -> None:
        self.reserved_bytes += need

    def release(self, need: int) -> None:
        self.reserved_bytes -= need

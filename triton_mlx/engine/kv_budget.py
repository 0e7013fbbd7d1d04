"""Admission control from memory: will a request's KV cache fit, now or ever?

Each running sequence reserves the KV bytes its prompt plus ``max_tokens`` can grow to
(rounded up to the cache's allocation step), so the sum of reservations never exceeds the
budget and a burst of long requests waits in the queue instead of running out of memory. The
budget is what the memory limit leaves once the weights are in, less some headroom; the bytes
per token are measured on the model itself.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache

CACHE_STEP = 256  # mlx-lm's KVCache grows its buffers in steps of this many tokens
HEADROOM = 0.1  # share of the memory budget kept free for activations and MLX's buffers

logger = logging.getLogger("triton_mlx.engine")


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


def measure_budget(model: Any, stream: Any, memory_budget_bytes: int | None,
                   name: str) -> KVBudget:
    """KV bytes per token (measured on a one-token cache) and the bytes left for KV caches
    once the weights are in memory; on the model's thread, after loading."""
    with mx.stream(stream):
        cache = make_prompt_cache(model)
        model(mx.array([[0]]), cache=cache)
        mx.eval([c.state for c in cache])
    allocated = max(getattr(getattr(cache[0], "keys", None), "shape", (1, 1, 1))[2], 1)
    bytes_per_token = max(sum(c.nbytes for c in cache) // allocated, 1)
    del cache
    total = memory_budget_bytes or default_memory_budget()
    free = int(total * (1 - HEADROOM)) - mx.get_active_memory()
    logger.info("model %s: %.0f MiB for KV caches (%d bytes per token, budget %.0f MiB)",
                name, free / 2**20, bytes_per_token, total / 2**20)
    return KVBudget(bytes_per_token=bytes_per_token, budget_bytes=free)


def default_memory_budget() -> int:
    """Without ``--max-memory-gb``: the GPU's recommended working set, else half the RAM."""
    info = mx.device_info()
    for key in ("max_recommended_working_set_size", "memory_size", "total_memory"):
        if info.get(key):
            return int(info[key])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2

"""Memory readings for metrics: MLX's allocator counters and the process's resident size."""

from __future__ import annotations

import os
import resource
import sys

import mlx.core as mx


def mlx_memory() -> dict[str, float]:
    """Bytes MLX holds now (active), at most so far (peak) and keeps for reuse (cache)."""
    return {
        "mlx_active": float(mx.get_active_memory()),
        "mlx_peak": float(mx.get_peak_memory()),
        "mlx_cache": float(mx.get_cache_memory()),
    }


def process_resident_bytes() -> float:
    """Resident set size now on Linux (/proc); the peak elsewhere (all getrusage offers)."""
    try:
        with open("/proc/self/statm") as statm:
            return float(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return float(peak if sys.platform == "darwin" else peak * 1024)


def set_memory_limit(gigabytes: float) -> None:
    """Cap what MLX may allocate; MLX waits for memory to free up rather than exceeding it."""
    mx.set_memory_limit(int(gigabytes * 1024**3))

"""Triton's statistics extension and repository index, as JSON documents.

The statistics are those both front-ends record (``observability.inference_stats``), so a
request on the OpenAI port counts here too. ``batch_stats`` stays empty: the engine batches
continuously, per step, not in the per-request executions Triton's batch statistics describe.
"""

from __future__ import annotations

from typing import Any

from triton_mlx.observability.inference_stats import InferenceStats
from triton_mlx.repository.repository import ModelEntry, ModelState
from triton_mlx.triton.signature import MODEL_VERSION

_ZERO = {"count": 0, "ns": 0}


def model_stats(stats: InferenceStats, name: str) -> dict[str, Any]:
    """One ``$model_stat`` object."""
    s = stats.snapshot(name)
    return {
        "name": name,
        "version": MODEL_VERSION,
        "last_inference": s.last_inference_ms,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": s.success.as_dict(),
            "fail": s.fail.as_dict(),
            "queue": s.queue.as_dict(),
            "compute_input": s.compute_input.as_dict(),
            "compute_infer": s.compute_infer.as_dict(),
            "compute_output": s.compute_output.as_dict(),
            "cache_hit": dict(_ZERO),
            "cache_miss": dict(_ZERO),
        },
        "response_stats": {},
        "batch_stats": [],
        "memory_usage": [],
    }


def index_entry(entry: ModelEntry) -> dict[str, str]:
    """One ``/v2/repository/index`` item; ``reason`` only when there is one, as Triton does."""
    item = {"name": entry.name, "version": MODEL_VERSION, "state": str(entry.state)}
    if entry.state is ModelState.UNAVAILABLE and entry.reason:
        item["reason"] = entry.reason
    return item

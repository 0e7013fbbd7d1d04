"""Embeddings from a chat (decoder-only) model: its last hidden state, mean-pooled, normalised.

mlx-lm's architectures keep the transformer body as ``model.model``: it maps token ids to the
final-normed hidden states the LM head reads. Inputs are right-padded, so causal attention
keeps every real token blind to the padding after it, and the mask only has to leave padding
out of the mean. Long batches run in chunks through a KV cache, so attention never holds more
than ``chunk`` x length scores at once: the result equals one full forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache

CHUNK_TOKENS = 512
"""Positions per forward call; bounds the attention scores held at once."""


def hidden_size(model: Any) -> int:
    """The embedding width, found by running the body on one token; raises if the
    architecture has no ``model.model`` body that returns (batch, length, hidden) states."""
    body = getattr(model, "model", None)
    if body is None or not callable(body):
        raise TypeError(f"{type(model).__module__} has no transformer body (model.model)")
    hidden = body(mx.array([[0]], dtype=mx.int32))
    if not hasattr(hidden, "ndim") or hidden.ndim != 3:
        raise TypeError(f"{type(model).__module__}'s body does not return hidden states")
    return int(hidden.shape[-1])


def mean_pooled(model: Any, chunk: int = CHUNK_TOKENS) -> Callable[[mx.array, mx.array], mx.array]:
    """The ``(ids, mask) -> vectors`` forward for ``batching.Round``."""

    def forward(ids: mx.array, mask: mx.array) -> mx.array:
        cache = make_prompt_cache(model)
        weights = mask.astype(mx.float32)[..., None]
        total = None
        for start in range(0, ids.shape[1], chunk):
            hidden = model.model(ids[:, start : start + chunk], cache=cache)
            part = (hidden.astype(mx.float32) * weights[:, start : start + chunk]).sum(axis=1)
            total = part if total is None else total + part
            mx.eval(total)
        mean = total / mx.maximum(weights.sum(axis=1), 1.0)
        return mean / mx.maximum(mx.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)

    return forward

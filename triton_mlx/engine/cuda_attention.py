"""Prompt attention on MLX's CUDA backend without building a cuDNN graph for every prompt shape.

MLX 0.32.4's CUDA backend runs a prompt's attention (more than one query) through cuDNN's fused
attention, whose execution graph is built per exact shape, strides and mask shape and kept in
an LRU cache. Building one took 45-60 ms on the H200 (``python -m bench.cuda_probe``): a forward
pass of a 4-layer model at a prompt length seen before took 1.8-2.4 ms, at a new length 44-60
ms, and a new length after a cached prefix, or a new batch of prompts of unequal lengths (an
array mask), the same again. A server almost never sees the same shape twice (every prompt has
its own length, every prefill its own batch), so that build landed on nearly every time to first
token: 66 ms of a lone stream's 67 ms from submission to first text, in the same run.

``install`` replaces ``mx.fast.scaled_dot_product_attention`` with a function that computes a
small prompt attention as matrix products and a softmax (what MLX itself falls back to where no
fused kernel applies; nothing in it is built per shape), and hands everything else to MLX's
fused kernel unchanged: one query per row (decode, MLX's vector kernel), attention sinks, an
explicit stream, and a score tensor above ``MAX_SCORES`` elements, where the fused kernel's
memory and speed are worth a graph build (a long prompt's prefill chunk). Installed only on
CUDA; Metal and the CPU have no per-shape build.
"""

from __future__ import annotations

import threading
from typing import Any

import mlx.core as mx

__all__ = ["MAX_SCORES", "install", "prompt_attention", "unfused_attention"]

MAX_SCORES = 1 << 26
"""Largest (batch x query heads x queries x keys) score tensor computed unfused: 64M elements,
~256 MB in float32; e.g. 128 prompts of 60 tokens (15M), or one of 1,400 (63M)."""

_lock = threading.Lock()
_fused: Any = None  # MLX's own function, once installed


def install() -> None:
    """Route ``mx.fast.scaled_dot_product_attention`` through ``prompt_attention``
    (idempotent, thread-safe). Call it only on MLX's CUDA backend."""
    global _fused
    with _lock:
        if _fused is not None:
            return
        _fused = mx.fast.scaled_dot_product_attention
        mx.fast.scaled_dot_product_attention = prompt_attention


def prompt_attention(q: mx.array, k: mx.array, v: mx.array, *, scale: float,
                     mask: Any = None, sinks: mx.array | None = None, **options: Any) -> mx.array:
    """``mx.fast.scaled_dot_product_attention``'s contract: unfused for a small prompt, MLX's
    fused kernel for the rest (see the module docstring)."""
    fused = _fused if _fused is not None else mx.fast.scaled_dot_product_attention
    batch, heads, queries, _ = q.shape
    if (queries == 1 or sinks is not None or options
            or batch * heads * queries * k.shape[2] > MAX_SCORES):
        return fused(q, k, v, scale=scale, mask=mask, sinks=sinks, **options)
    return unfused_attention(q, k, v, scale, mask)


def unfused_attention(q: mx.array, k: mx.array, v: mx.array, scale: float,
                      mask: Any = None) -> mx.array:
    """softmax(q kᵀ · scale + mask) v, the softmax in float32, for queries (B, Hq, L, D) and
    keys and values (B, Hkv, S, D) with Hq a multiple of Hkv (grouped-query attention).

    ``mask``: None; ``"causal"`` (aligned to the last key, as MLX's: query i sees keys up to
    i + S - L); a boolean array (True: attend); or an additive array; arrays broadcast against
    (B, Hq, L, S)."""
    batch, q_heads, length, dim = q.shape
    kv_heads, keys = k.shape[1], k.shape[2]
    repeats = q_heads // kv_heads
    q = q * mx.array(scale, dtype=q.dtype)
    if repeats > 1:  # queries grouped by the KV head they share: (B, Hkv, repeats, L, D)
        q = q.reshape(batch, kv_heads, repeats, length, dim)
        k = mx.expand_dims(k, 2)
        v = mx.expand_dims(v, 2)
    scores = q @ k.swapaxes(-1, -2)
    if mask is not None:
        if isinstance(mask, str):
            if mask != "causal":
                raise ValueError(f"unknown attention mask {mask!r}")
            mask = mx.arange(length)[:, None] + (keys - length) >= mx.arange(keys)[None]
        if repeats > 1 and mask.ndim == 4:  # (B|1, Hq|1, L, S) onto the grouped scores
            if mask.shape[1] == 1:
                mask = mx.expand_dims(mask, 2)
            else:
                mask = mask.reshape(mask.shape[0], kv_heads, repeats, length, keys)
        if mask.dtype == mx.bool_:
            scores = mx.where(mask, scores, mx.array(mx.finfo(scores.dtype).min, scores.dtype))
        else:
            scores = scores + mask.astype(scores.dtype)
    out = mx.softmax(scores, axis=-1, precise=True) @ v
    return out.reshape(batch, q_heads, length, dim)

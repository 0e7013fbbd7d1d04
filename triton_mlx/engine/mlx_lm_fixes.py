"""Patches to mlx-lm for bugs that break serving, applied once before a model is loaded.

Each patch names the mlx-lm version it was written against and why it exists. Each has a test
(``tests/engine/test_mlx_lm_fixes.py``) that runs mlx-lm's unpatched code and fails once that
code works: then the patch has become dead weight and should go. The patched functions keep the
original as ``__wrapped__`` (``inspect.unwrap`` gives it back).

- gemma2 attention with a batched mask (mlx-lm 0.32.2). ``gemma2.Attention`` computes grouped-
  query attention by reshaping the queries to (batch, kv_heads, repeats, length, keys) and adds
  the mask to those scores unchanged. A batch of sequences gets a (batch, 1, length, keys) mask
  from ``BatchKVCache`` (each row has its own left padding), which lines up with the wrong axes
  of the 5-d scores: with a batch size other than 1 or ``kv_heads`` it fails
  (``[broadcast_shapes] Shapes (5,1,30,54) and (5,2,2,30,54)``); with a batch of exactly
  ``kv_heads`` rows it silently gives each KV head the padding of one row. The fix gives such a
  mask the missing ``repeats`` axis, (batch, 1, 1, length, keys), before mlx-lm's own code runs.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

__all__ = ["apply"]

_lock = threading.Lock()
_applied = False


def apply() -> None:
    """Install every patch (idempotent, thread-safe)."""
    global _applied
    with _lock:
        if _applied:
            return
        _patch_gemma2_attention()
        _applied = True


def _patch_gemma2_attention() -> None:
    import mlx.core as mx
    from mlx_lm.models import gemma2

    original = gemma2.Attention.__call__

    @functools.wraps(original)
    def __call__(self: Any, x: Any, mask: Any = None, cache: Any = None) -> Any:  # noqa: N807
        # mlx-lm 0.32.2: a per-row (B, 1, L, S) mask must become (B, 1, 1, L, S) to meet the
        # (B, kv_heads, repeats, L, S) grouped-query scores; see the module docstring.
        if self.repeats > 1 and isinstance(mask, mx.array) and mask.ndim == 4:
            mask = mx.expand_dims(mask, 2)
        return original(self, x, mask, cache)

    gemma2.Attention.__call__ = __call__

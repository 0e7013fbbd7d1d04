"""Row operations on a batch's per-layer KV caches with one host read, not one per layer.

mlx-lm's ``BatchKVCache.filter`` and ``extract`` (0.32.2) each read the layer's left padding
back to the host (``tolist``): a 16-layer model pays 16 device syncs per filter and 16 per
extracted row. On MLX's CUDA backend a sync stops the host from queueing the next step while the
device drains, so a step where several sequences finish paid dozens of them. Every layer of a
batch is built, merged, extended and filtered together, so the layers hold the same left
padding: it is read once, from the first layer, and applied to all; and it is read as already
computed, never derived and read at once, which would wait for the step in flight. Batches with
other cache types (sliding windows, recurrent state) keep mlx-lm's per-layer methods.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import BatchKVCache, KVCache


def uniform(caches: list[Any]) -> bool:
    """Whether every layer is a plain ``BatchKVCache`` (the layers share their padding)."""
    return bool(caches) and all(type(c) is BatchKVCache for c in caches)


def filter_rows(caches: list[Any], keep: list[int]) -> None:
    """Keep rows ``keep`` (in that order) of every layer, in place; mlx-lm's ``filter``."""
    if not uniform(caches):
        for cache in caches:
            cache.filter(keep)
        return
    index = mx.array(keep)
    shift = min(_host_padding(caches)[i] for i in keep)
    for cache in caches:
        if cache.keys is not None:
            cache.keys = cache.keys[index]
            cache.values = cache.values[index]
        cache.offset = cache.offset[index]
        cache.left_padding = cache.left_padding[index]
        if shift > 0:  # drop the columns every remaining row pads
            if cache.keys is not None:
                cache.keys = cache.keys[..., shift:, :]
                cache.values = cache.values[..., shift:, :]
            cache._idx -= shift
            cache.left_padding = cache.left_padding - shift
    settle_padding(caches)


def extract_rows(caches: list[Any], rows: list[int]) -> list[list[Any]]:
    """Copies of rows ``rows`` as single-sequence caches (one list of layers per row); the
    batch keeps its own. mlx-lm's ``extract``."""
    if not rows:
        return []
    if not uniform(caches):
        return [[c.extract(i) for c in caches] for i in rows]
    padding = _host_padding(caches)
    out = []
    for i in rows:
        layers = []
        for cache in caches:
            single = KVCache()
            single.keys = mx.contiguous(cache.keys[i : i + 1, :, padding[i] : cache._idx])
            single.values = mx.contiguous(cache.values[i : i + 1, :, padding[i] : cache._idx])
            single.offset = single.keys.shape[2]
            layers.append(single)
        out.append(layers)
    return out


def settle_padding(caches: list[Any]) -> None:
    """Queue the evaluation of a batch's new left padding as soon as it changes (filtered,
    extended), so that the next host read of it (``_host_padding``) finds it computed with the
    step it was queued before, instead of waiting for the step in flight behind it."""
    if uniform(caches):
        mx.async_eval(caches[0].left_padding)


def _host_padding(caches: list[Any]) -> list[int]:
    """The batch's left padding on the host: the one host read of a row operation. It reads
    the padding as it is, computed already (``settle_padding``): a padding derived here and
    read at once would wait for the whole step in flight, leaving the device idle while the
    next step is built, on every step where a sequence ends."""
    return caches[0].left_padding.tolist()

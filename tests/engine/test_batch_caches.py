"""``batch_caches`` filters and extracts rows exactly as mlx-lm's per-layer methods do."""

from __future__ import annotations

import mlx.core as mx
import pytest
from mlx_lm.models.cache import BatchKVCache, KVCache, RotatingKVCache

from triton_mlx.engine import batch_caches

LAYERS, HEADS, DIM = 3, 2, 4


def _batch(lengths: list[int], seed: int = 0) -> list[BatchKVCache]:
    """Per-layer batch caches of rows with ``lengths`` tokens each (so left paddings differ)."""
    mx.random.seed(seed)
    layers = []
    for _ in range(LAYERS):
        rows = []
        for n in lengths:
            cache = KVCache()
            cache.update_and_fetch(mx.random.normal((1, HEADS, n, DIM)),
                                   mx.random.normal((1, HEADS, n, DIM)))
            rows.append(cache)
        layers.append(BatchKVCache.merge(rows))
    return layers


def _same(a: BatchKVCache, b: BatchKVCache) -> bool:
    return (a._idx == b._idx and mx.array_equal(a.keys, b.keys).item()
            and mx.array_equal(a.values, b.values).item()
            and a.offset.tolist() == b.offset.tolist()
            and a.left_padding.tolist() == b.left_padding.tolist())


@pytest.mark.parametrize("keep", [[0, 2], [1], [2, 0, 3], [3]])
def test_filter_rows_is_mlx_lms_filter(keep):
    ours, theirs = _batch([2, 7, 4, 5]), _batch([2, 7, 4, 5])
    batch_caches.filter_rows(ours, keep)
    for cache in theirs:
        cache.filter(keep)
    assert all(_same(a, b) for a, b in zip(ours, theirs, strict=True))


def test_filter_rows_drops_padding_no_row_needs():
    caches = _batch([2, 7, 4])
    batch_caches.filter_rows(caches, [0, 2])  # the 7-token row goes: 3 columns pad both others
    assert caches[0]._idx == 4 and caches[0].left_padding.tolist() == [2, 0]


def test_extract_rows_is_mlx_lms_extract():
    caches = _batch([3, 6, 1])
    for i, layers in zip([2, 0, 1], batch_caches.extract_rows(caches, [2, 0, 1]), strict=True):
        for ours, layer in zip(layers, caches, strict=True):
            theirs = layer.extract(i)
            assert ours.offset == theirs.offset
            assert mx.array_equal(ours.keys, theirs.keys).item()
            assert mx.array_equal(ours.values, theirs.values).item()


def test_only_plain_batch_caches_count_as_uniform():
    assert batch_caches.uniform(_batch([1, 2]))
    assert not batch_caches.uniform([])
    assert not batch_caches.uniform([*_batch([1, 2]), RotatingKVCache(max_size=4)])

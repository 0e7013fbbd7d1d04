"""How a round of embedding jobs is cut into forward passes."""

from __future__ import annotations

import asyncio

import mlx.core as mx
import numpy as np

from triton_mlx.encoders.batching import EmbedJob, Round


def _passes(lengths: list[int], **limits) -> list[tuple[int, int]]:
    """(rows, padded length) of each forward pass for one job with inputs of ``lengths``."""
    loop = asyncio.new_event_loop()
    try:
        job = EmbedJob(inputs=[[1] * n for n in lengths], loop=loop, future=loop.create_future())
        shapes = []

        def forward(ids, mask):
            shapes.append(tuple(ids.shape))
            assert (np.array(mask).sum(axis=1) > 0).all()
            return mx.zeros((ids.shape[0], 4))

        batches = Round([job], dimensions=4, **limits)
        while not batches.done:
            batches.step(forward)
        assert job.remaining == 0 and job.settled
        return shapes
    finally:
        loop.close()


def test_similar_lengths_share_a_pass_and_outliers_do_not_pad_it():
    assert _passes([10, 11, 12, 12, 13]) == [(5, 13)]
    # One long input would make the short ones 95% padding: it runs on its own.
    assert _passes([10] * 8 + [200]) == [(8, 10), (1, 200)]
    # Short inputs tolerate a few padding tokens (a pass costs more than that).
    assert _passes([1, 2, 3, 4, 5, 6]) == [(6, 6)]
    # On a GPU padding is free and passes are not: only the budget cuts.
    assert _passes([10] * 8 + [200], padding_share=1.0) == [(9, 200)]


def test_token_budget_and_max_rows_bound_a_pass():
    assert _passes([100] * 10, token_budget=300) == [(3, 100)] * 3 + [(1, 100)]
    assert _passes([5] * 5, max_rows=2) == [(2, 5), (2, 5), (1, 5)]

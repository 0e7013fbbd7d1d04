"""The bench measures the systems of a round in alternating order."""

from __future__ import annotations

from bench.interleave import round_order


def test_odd_rounds_reverse_the_order_even_rounds_keep_it():
    systems = ["generate_step", "BatchGenerator b1", "triton-mlx", "mlx_lm.server"]
    assert round_order(systems, 0) == systems
    assert round_order(systems, 1) == systems[::-1]
    assert round_order(systems, 2) == systems
    assert systems == ["generate_step", "BatchGenerator b1", "triton-mlx", "mlx_lm.server"]

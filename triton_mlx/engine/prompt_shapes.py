"""Prompt lengths rounded up to a few sizes on CUDA, so that prefill meets shapes it has seen.

On MLX 0.32.4's CUDA backend every matrix product of a shape not seen before pays for finding
its cuBLAS algorithm (and more) on first use: 3-4 ms per weight shape on the H200 against
0.1-0.2 ms the second time (``python -m bench.cuda_probe --ops``), ~20 ms for a forward pass of
a Llama whose weights have five shapes. A prefill is a product of (prompts x length) rows, and
prompts rarely share a length, so nearly every prefill paid it. Right-padding each prefill batch
to the next of these lengths (the padding is masked and moved to the left like any row's, as
for prompts of unequal lengths) leaves a handful of shapes per batch size, which the engine
warms at load for a lone prompt: multiples of 16 up to 128 (a prefill that short is bound by
reading the weights, not by its rows), then four steps per doubling (at most a quarter more
rows to compute). Not used on Metal or the CPU, where a new shape costs nothing measured here,
and the CPU pays for every padded row.
"""

from __future__ import annotations

import functools

__all__ = ["lengths", "padded_length"]


@functools.lru_cache(maxsize=8)
def lengths(limit: int) -> tuple[int, ...]:
    """The lengths prefill is padded to, up to ``limit`` (which is always the last)."""
    out = list(range(16, min(limit, 128) + 1, 16))
    base = 128
    while base < limit:
        out += [base * k // 4 for k in (5, 6, 7, 8) if base * k // 4 <= limit]
        base *= 2
    if not out or out[-1] != limit:
        out.append(limit)
    return tuple(out)


def padded_length(longest: int, limit: int) -> int:
    """The length a prefill batch whose longest row has ``longest`` tokens is padded to:
    the smallest of ``lengths(limit)`` that holds it, or ``longest`` itself from ``limit`` on
    (such a prompt is cut into chunks of ``limit`` anyway)."""
    if longest >= limit:
        return longest
    return next(n for n in lengths(limit) if n >= longest)

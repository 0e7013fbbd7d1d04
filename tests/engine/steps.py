"""Seeing the batch from inside the engine's steps, for tests that check who ran together,
and reading a stream to its end."""

from __future__ import annotations

from triton_mlx.engine import sampling
from triton_mlx.engine.types import EngineStats


def stats_at_each_step(monkeypatch, engine) -> list[EngineStats]:
    """``engine.stats()`` as each sequence samples a token, taken on the engine thread in the
    middle of the step (so it shows every sequence of that step's batch). The list fills as
    the engine runs; assert on it in the test once the sequences are done."""
    seen: list[EngineStats] = []
    real = sampling.make_logits_processors

    def record(_tokens, logits):
        seen.append(engine.stats())
        return logits

    monkeypatch.setattr(sampling, "make_logits_processors",
                        lambda params: [*real(params), record])
    return seen


async def collect(stream):
    """A stream's whole text and its last output (the one with the finish reason)."""
    texts, last = [], None
    async for output in stream:
        texts.append(output.text)
        last = output
    return "".join(texts), last

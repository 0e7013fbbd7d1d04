"""Seeing the batch from inside the engine's steps, for tests that check who ran together,
and reading a stream to its end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from triton_mlx.engine import sampling
from triton_mlx.engine.types import EngineStats


def at_each_processor_call(monkeypatch, look: Callable[[Any], Any]) -> list[Any]:
    """``look(tokens so far)`` each time a sequence's logits are processed (every sequence
    gets a processor of its own that records it, on the engine's thread). The list fills as
    the sequences run; assert on it in the test once they are done."""
    seen: list[Any] = []
    real = sampling.make_logits_processors

    def record(tokens, logits):
        seen.append(look(tokens))
        return logits

    monkeypatch.setattr(sampling, "make_logits_processors",
                        lambda params: [*real(params), record])
    return seen


def stats_at_each_step(monkeypatch, engine) -> list[EngineStats]:
    """``engine.stats()`` as each sequence samples a token, taken in the middle of the step (so
    it shows every sequence of that step's batch)."""
    return at_each_processor_call(monkeypatch, lambda _tokens: engine.stats())


async def collect(stream):
    """A stream's whole text and its last output (the one with the finish reason)."""
    texts, last = [], None
    async for output in stream:
        texts.append(output.text)
        last = output
    return "".join(texts), last

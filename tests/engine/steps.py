"""Seeing the batch from inside the engine's steps, for tests that check who ran together."""

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
                        lambda params, prompt_length: [*real(params, prompt_length), record])
    return seen

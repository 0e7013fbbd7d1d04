"""Embedding requests, whatever the protocol: token ids checked against the model, vectors
computed by its embedder, engine refusals as :class:`RequestError`."""

from __future__ import annotations

import numpy as np

from triton_mlx.encoders.batching import Embedder
from triton_mlx.engine.types import EngineNotRunningError, QueueFullError
from triton_mlx.serving.errors import engine_failed, invalid, not_ready, queue_full


def checked_token_ids(embedder: Embedder, id_lists: list[list[int]], param: str
                      ) -> list[list[int]]:
    """Token id inputs, each below the vocabulary size, cut to the model's length."""
    for ids in id_lists:
        bad = next((t for t in ids if t >= embedder.vocab_size), None)
        if bad is not None:
            raise invalid(f"token id {bad} is out of range for a vocabulary of "
                          f"{embedder.vocab_size}", param)
    return [embedder.truncate(ids) for ids in id_lists]


async def embed(embedder: Embedder, tokens: list[list[int]]) -> np.ndarray:
    """(inputs, dimensions) float32 vectors. A full queue is a 429, a stopping model a 503,
    anything else that fails inside the engine a 500 with code ``engine_error``."""
    try:
        return await embedder.embed(tokens)
    except QueueFullError as exc:
        raise queue_full(str(exc)) from None
    except EngineNotRunningError as exc:
        raise not_ready(str(exc)) from None
    except Exception as exc:
        raise engine_failed(str(exc)) from None

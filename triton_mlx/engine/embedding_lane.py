"""Embedding requests to a chat model, run on its engine thread between generation steps.

Where the architecture exposes its hidden states (``decoder_embeddings``), ``/v1/embeddings``
can use a chat model too. Its MLX work must happen on the engine thread, and must not stall
the running streams: the jobs waiting at one moment form a ``Round``, and the thread runs one
forward pass of at most a prefill chunk of padded tokens between two generation steps, so a
stream waits no longer for an embedding batch than for a prefill chunk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import mlx.core as mx

from triton_mlx.encoders.batching import (
    TOKEN_BUDGET,
    EmbedJob,
    Forward,
    JobQueue,
    Round,
    max_padding_share,
)
from triton_mlx.engine import decoder_embeddings
from triton_mlx.engine.types import EngineError

logger = logging.getLogger("triton_mlx.engine")


class EmbeddingLane:
    """One chat model's embedding jobs: queued from asyncio, run on the engine thread."""

    def __init__(self, name: str, max_queue: int) -> None:
        self.name = name
        self.dimensions = 0
        """Embedding width; 0 when the architecture cannot embed (see ``attach``)."""
        self.max_seq_length = 0
        self._jobs = JobQueue(name, max_queue)
        self._waiting: list[EmbedJob] = []
        self._round: Round | None = None
        self._forward: Forward | None = None
        self._stream: Any = None
        self._token_budget = TOKEN_BUDGET
        self._padding_share = max_padding_share(False)
        self._on_pass: Callable[[int], None] = lambda tokens: None

    # ----- asyncio side -----

    def new_job(self, token_id_lists: list[list[int]]) -> EmbedJob:
        """A job for the running loop; ``QueueFullError`` when too many are waiting."""
        return self._jobs.new_job(token_id_lists)

    # ----- engine thread -----

    def attach(self, model: Any, stream: Any, token_budget: int,
               on_pass: Callable[[int], None]) -> None:
        """Find whether ``model`` exposes its hidden states, and their width (at load).
        ``on_pass`` is told the tokens of each forward pass."""
        try:
            with mx.stream(stream):
                self.dimensions = decoder_embeddings.hidden_size(model)
        except Exception as exc:
            logger.info("model %s cannot compute embeddings: %s", self.name, exc)
            return
        args = getattr(model, "args", None)
        self.max_seq_length = int(getattr(args, "max_position_embeddings", 0) or TOKEN_BUDGET)
        self._forward = decoder_embeddings.mean_pooled(model, chunk=min(token_budget, 512))
        self._stream = stream
        self._token_budget = token_budget
        self._padding_share = max_padding_share(mx.default_device() == mx.gpu)
        self._on_pass = on_pass

    @property
    def busy(self) -> bool:
        """Jobs wait or a round is under way."""
        return bool(self._waiting) or self._round is not None

    def add(self, job: EmbedJob) -> None:
        self._waiting.append(job)

    def step(self) -> None:
        """One batch of the round in progress (a new round takes every job waiting). A
        failure fails that round's jobs only."""
        if self._round is None:
            jobs, self._waiting = self._waiting, []
            self._round = Round(jobs, dimensions=self.dimensions,
                                token_budget=self._token_budget,
                                padding_share=self._padding_share, on_pass=self._on_pass)
        batches = self._round
        try:
            with mx.stream(self._stream):
                batches.step(self._forward)
        except Exception as exc:
            logger.exception("embedding failed for model %s", self.name)
            batches.fail(EngineError(f"embedding failed inside the engine: {exc}"))
            self._round = None
            return
        if batches.done:
            self._round = None

    def fail_all(self, error: EngineError) -> None:
        """Fail the round under way and every job waiting (the engine is stopping)."""
        if self._round is not None:
            self._round.fail(error)
            self._round = None
        for job in self._waiting:
            job.fail(error)
        self._waiting = []

"""One thread per embedding model, batching the inputs of one request and of concurrent ones.

Same threading rule as the chat engine: every MLX call happens on the model's thread. ``embed``
puts a job in a thread-safe inbox; the thread takes every job waiting and runs them as one
``batching.Round`` (sorted by length, padded, masked, split to fit the token budget). Jobs
that arrive meanwhile join the next round.
"""

from __future__ import annotations

import logging
import queue
from pathlib import Path
from typing import Any

import numpy as np

from triton_mlx.encoders.batching import (
    CPU_MAX_PADDING_SHARE,
    TOKEN_BUDGET,
    EmbedJob,
    JobQueue,
    Round,
    max_padding_share,
)
from triton_mlx.encoders.pooling import PoolingConfig, read_pooling_config
from triton_mlx.engine.model_thread import ModelThread
from triton_mlx.engine.types import EngineNotRunningError, EngineStats

logger = logging.getLogger("triton_mlx.encoders")

WARM_UP_TEXT = "Warm-up sentence for the encoder."


class EmbeddingEngine(ModelThread):
    """Sentence embeddings for one encoder model folder, computed on a thread of its own.

    ``max_rows`` caps the inputs per forward pass (the model's ``max_batch_size``); the
    token budget caps padded tokens per pass either way."""

    thread_prefix = "encoder"

    def __init__(
        self, path: Path, *, name: str, max_queue: int = 32, token_budget: int = TOKEN_BUDGET,
        max_rows: int | None = None,
    ) -> None:
        super().__init__(name)
        self.path = path
        self.token_budget = token_budget
        self.max_rows = max_rows
        self.pooling: PoolingConfig = PoolingConfig()
        self.dimensions = 0
        self.max_seq_length = 0
        self.vocab_size = 0
        self.tokenizer: Any = None
        self._inbox: queue.SimpleQueue[EmbedJob | None] = queue.SimpleQueue()
        self._jobs = JobQueue(name, max_queue)
        self._running = 0
        self._padding_share = CPU_MAX_PADDING_SHARE
        self.forward_passes = 0
        self.prompt_tokens = 0

    @property
    def max_queue(self) -> int:
        return self._jobs.max_queue

    # ----- lifecycle -----

    def _request_stop(self) -> None:
        self._inbox.put(None)

    def stats(self) -> EngineStats:
        return EngineStats(running=self._running,
                           queued=max(self._jobs.pending - self._running, 0), slots=1,
                           max_queue=self.max_queue, generated_tokens=0,
                           prompt_tokens=self.prompt_tokens, cached_prompt_tokens=0,
                           prefix_cache_bytes=0, kv_reserved_bytes=0, kv_budget_bytes=0)

    # ----- tokens (any thread) -----

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids with the model's special tokens, truncated to ``max_seq_length``."""
        return [e.ids for e in self.tokenizer.encode_batch(texts)]

    def truncate(self, ids: list[int]) -> list[int]:
        """Token-id inputs are used as given, cut to ``max_seq_length`` tokens."""
        return ids[: self.max_seq_length]

    # ----- requests (asyncio side) -----

    async def embed(self, token_id_lists: list[list[int]]) -> np.ndarray:
        """(len(inputs), dimensions) float32 vectors, pooled and normalised as configured."""
        if not self._accepting:
            raise EngineNotRunningError(f"model {self.name!r} is not accepting requests")
        if not token_id_lists:
            return np.empty((0, self.dimensions), dtype=np.float32)
        job = self._jobs.new_job(token_id_lists)
        self._inbox.put(job)
        return await job.future

    # ----- engine thread -----

    def _load_model(self) -> None:
        """Load and warm the model (on this thread)."""
        import mlx.core as mx
        from tokenizers import Tokenizer

        from triton_mlx.encoders.bert import load_bert

        self._model, config = load_bert(self.path)
        self.pooling = read_pooling_config(self.path)
        self.dimensions = self._model.hidden_size
        self.vocab_size = int(config["vocab_size"])
        self.max_seq_length = min(self.pooling.max_seq_length or 512,
                                  int(config["max_position_embeddings"]))
        tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.enable_truncation(self.max_seq_length)
        self.tokenizer = tokenizer
        self._padding_share = max_padding_share(mx.default_device() == mx.gpu)
        self._warm_up()

    def _shutdown(self) -> None:
        """Fail the jobs still waiting; release the model."""
        while True:
            try:
                job = self._inbox.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.fail(EngineNotRunningError(f"model {self.name!r} was unloaded"))
        self._model = None

    def _count_pass(self, tokens: int) -> None:
        self.forward_passes += 1
        self.prompt_tokens += tokens

    def _warm_up(self) -> None:
        """One pass of a short and a full-length input before the model is READY, so the first
        request pays no first allocations (nor kernel compilation on a GPU)."""
        import mlx.core as mx

        short = self.tokenize([WARM_UP_TEXT])[0]
        full = (short * (self.max_seq_length // len(short) + 1))[: self.max_seq_length]
        for ids in (short, full):
            ids_mx = mx.array([ids], dtype=mx.int32)
            mx.eval(self._forward(ids_mx, mx.ones_like(ids_mx)))

    def _forward(self, ids: Any, mask: Any) -> Any:
        from triton_mlx.encoders.pooling import pool

        return pool(self._model(ids, mask), mask, self.pooling)

    def _serve(self) -> None:
        while True:
            first = self._inbox.get()
            if first is None:
                return
            jobs, stop = [first], False
            while True:
                try:
                    job = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                jobs.append(job)
            self._running = len(jobs)
            batches = Round(jobs, dimensions=self.dimensions, token_budget=self.token_budget,
                            max_rows=self.max_rows, padding_share=self._padding_share,
                            on_pass=self._count_pass)
            try:
                while not batches.done:
                    batches.step(self._forward)
            except Exception as exc:  # a failed forward fails the round's requests only
                logger.exception("embedding model %s failed", self.name)
                batches.fail(RuntimeError(f"embedding failed: {exc}"))
            finally:
                self._running = 0
            if stop:
                return

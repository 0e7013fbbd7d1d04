"""One thread per embedding model, batching the inputs of one request and of concurrent ones.

Same threading rule as the chat engine: every MLX call happens on the model's thread. ``embed``
puts a job in a thread-safe inbox; the thread takes every job waiting, sorts all their inputs
by length, pads and masks them into batches of at most ``token_budget`` padded tokens (so a
large request is split), runs them, and hands each finished job's float32 matrix back to
asyncio with one ``loop.call_soon_threadsafe``. Jobs that arrive meanwhile join the next round.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from triton_mlx.encoders.pooling import PoolingConfig, read_pooling_config
from triton_mlx.engine.model_thread import ModelThread
from triton_mlx.engine.types import EngineNotRunningError, EngineStats, QueueFullError

logger = logging.getLogger("triton_mlx.encoders")

TOKEN_BUDGET = 8192
"""Padded tokens per forward pass: batch size x longest input of the batch."""


@dataclass
class _Job:
    inputs: list[list[int]]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    vectors: np.ndarray | None = None
    remaining: int = 0
    failed: bool = False
    order: list[int] = field(default_factory=list)


class EmbeddingEngine(ModelThread):
    """Sentence embeddings for one encoder model folder, computed on a thread of its own."""

    thread_prefix = "encoder"

    def __init__(
        self, path: Path, *, name: str, max_queue: int = 32, token_budget: int = TOKEN_BUDGET
    ) -> None:
        super().__init__(name)
        self.path = path
        self.max_queue = max_queue
        self.token_budget = token_budget
        self.pooling: PoolingConfig = PoolingConfig()
        self.dimensions = 0
        self.max_seq_length = 0
        self.vocab_size = 0
        self.tokenizer: Any = None
        self._inbox: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._jobs = 0  # submitted and not finished, guarded by _lock
        self._running = 0
        self.forward_passes = 0
        self.prompt_tokens = 0

    # ----- lifecycle -----

    def _request_stop(self) -> None:
        self._inbox.put(None)

    def stats(self) -> EngineStats:
        with self._lock:
            jobs = self._jobs
        return EngineStats(running=self._running, queued=max(jobs - self._running, 0), slots=1,
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
        with self._lock:
            if self._jobs >= self.max_queue + 1:
                raise QueueFullError(f"model {self.name!r} is busy: {self._jobs} requests "
                                     f"waiting; retry later")
            self._jobs += 1
        loop = asyncio.get_running_loop()
        job = _Job(inputs=token_id_lists, loop=loop, future=loop.create_future())
        self._inbox.put(job)
        return await job.future

    # ----- engine thread -----

    def _main(self) -> None:
        try:
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
        except BaseException as exc:  # reported through wait_loaded
            self._load_failed(exc)
            return
        self._load_succeeded()
        try:
            self._serve()
        finally:
            self._accepting = False
            while True:
                try:
                    job = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    self._fail(job, EngineNotRunningError(f"model {self.name!r} was unloaded"))
            self._model = None

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
            try:
                self._round(jobs)
            except Exception as exc:  # a failed forward fails the round's requests only
                logger.exception("embedding model %s failed", self.name)
                for job in jobs:
                    self._fail(job, RuntimeError(f"embedding failed: {exc}"))
            finally:
                self._running = 0
            if stop:
                return

    def _round(self, jobs: list[_Job]) -> None:
        import mlx.core as mx

        from triton_mlx.encoders.pooling import pool

        items = [(len(ids), j, i) for j, job in enumerate(jobs) for i, ids in enumerate(job.inputs)]
        items.sort(key=lambda item: item[0])
        for job in jobs:
            job.vectors = np.empty((len(job.inputs), self.dimensions), dtype=np.float32)
            job.remaining = len(job.inputs)
        start = 0
        while start < len(items):
            end = start + 1
            while end < len(items) and items[end][0] * (end + 1 - start) <= self.token_budget:
                end += 1
            batch = items[start:end]
            longest = batch[-1][0]
            ids = np.zeros((len(batch), longest), dtype=np.int32)
            mask = np.zeros((len(batch), longest), dtype=np.int32)
            for row, (length, j, i) in enumerate(batch):
                ids[row, :length] = jobs[j].inputs[i]
                mask[row, :length] = 1
            ids_mx, mask_mx = mx.array(ids), mx.array(mask)
            vectors = pool(self._model(ids_mx, mask_mx), mask_mx, self.pooling)
            result = np.array(vectors.astype(mx.float32), copy=False)
            self.forward_passes += 1
            self.prompt_tokens += int(mask.sum())
            for row, (_, j, i) in enumerate(batch):
                job = jobs[j]
                job.vectors[i] = result[row]
                job.remaining -= 1
                if job.remaining == 0:
                    self._finish(job)
            start = end

    def _finish(self, job: _Job) -> None:
        self._done()
        self._call(job, _set_result, job.future, job.vectors)

    def _fail(self, job: _Job, error: BaseException) -> None:
        if job.failed or (job.remaining == 0 and job.vectors is not None):
            return
        job.failed = True
        self._done()
        self._call(job, _set_exception, job.future, error)

    def _done(self) -> None:
        with self._lock:
            self._jobs -= 1

    @staticmethod
    def _call(job: _Job, fn: Callable[..., None], *args: Any) -> None:
        try:
            job.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop has closed: nobody waits for the answer
            pass


def _set_result(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)

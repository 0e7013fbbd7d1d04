"""Batching embedding jobs: what the encoder engine and the chat engine share.

A job is one request's inputs (token id lists). A ``Round`` takes every job waiting, sorts all
their inputs by length, pads and masks them into batches of at most ``token_budget`` padded
tokens (and at most ``max_rows`` inputs, and little padding: a batch of similar lengths is
cut where the next input would make it mostly padding), runs each batch through the model's
``forward`` and scatters the rows back. A job is handed to asyncio with one
``call_soon_threadsafe`` the moment its last row is done, so a small request never waits for a
large one of the same round.
Runs on the model's thread; the asyncio side only creates jobs and awaits their futures.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from triton_mlx.engine.types import QueueFullError

TOKEN_BUDGET = 8192
"""Padded tokens per forward pass: batch size x longest input of the batch."""
CPU_MAX_PADDING_SHARE = 0.25
"""On a CPU a batch stops growing before padding would be more than this share of its
tokens..."""
PADDING_SLACK_TOKENS = 32
"""...or more than this many tokens, whichever is larger: about what one more forward pass
costs on a CPU (a pass of one short input takes as long as ~30 tokens in a large batch).
A GPU is the other way round: a pass costs the same with or without padding, and fewer, fuller
passes win (measured on an H100: 3.0x for a MiniLM-shaped encoder, 2.2x for a 1B chat model,
at 64 mixed-length sentences per request), so there padding is bounded by the budget only."""


def max_padding_share(on_gpu: bool) -> float:
    return 1.0 if on_gpu else CPU_MAX_PADDING_SHARE

TOKENIZE_OFF_LOOP = 64
"""Above this many texts, ``tokenize_texts`` runs the tokenizer in a worker thread."""

Forward = Callable[[Any, Any], Any]
"""(ids, mask) as int32 ``mx.array`` of shape (batch, length) -> (batch, dimensions) vectors."""


class Embedder(Protocol):
    """What ``/v1/embeddings`` and Triton's ``/infer`` need from a model that embeds."""

    dimensions: int
    max_seq_length: int
    vocab_size: int

    def tokenize(self, texts: list[str]) -> list[list[int]]: ...

    def truncate(self, ids: list[int]) -> list[int]: ...

    async def embed(self, token_id_lists: list[list[int]]) -> np.ndarray: ...


async def tokenize_texts(embedder: Embedder, texts: list[str]) -> list[list[int]]:
    """Token ids for ``texts``; large lists are tokenized off the event loop."""
    if len(texts) > TOKENIZE_OFF_LOOP:
        return await asyncio.to_thread(embedder.tokenize, texts)
    return embedder.tokenize(texts)


@dataclass
class EmbedJob:
    """One request's inputs and the future its vectors go to."""

    inputs: list[list[int]]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    release: Callable[[], None] = lambda: None
    vectors: np.ndarray | None = None
    remaining: int = 0
    settled: bool = False

    def finish(self) -> None:
        self._settle(_set_result, self.vectors)

    def fail(self, error: BaseException) -> None:
        self._settle(_set_exception, error)

    def _settle(self, fn: Callable[[asyncio.Future, Any], None], value: Any) -> None:
        if self.settled:
            return
        self.settled = True
        self.release()
        try:
            self.loop.call_soon_threadsafe(fn, self.future, value)
        except RuntimeError:  # the loop has closed: nobody waits for the answer
            pass


class JobQueue:
    """Counts the jobs submitted and not yet settled, refusing more than ``max_queue`` waiting
    behind the one that runs. Any thread may call it."""

    def __init__(self, name: str, max_queue: int) -> None:
        self.name = name
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self._pending = 0

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    def new_job(self, inputs: list[list[int]]) -> EmbedJob:
        """A job for the running loop; QueueFullError when too many are waiting."""
        with self._lock:
            if self._pending >= self.max_queue + 1:
                raise QueueFullError(f"model {self.name!r} is busy: {self._pending} requests "
                                     f"waiting; retry later")
            self._pending += 1
        loop = asyncio.get_running_loop()
        return EmbedJob(inputs=inputs, loop=loop, future=loop.create_future(),
                        release=self._release)

    def _release(self) -> None:
        with self._lock:
            self._pending -= 1


class Round:
    """The inputs of the jobs waiting at one moment, sorted and cut into padded batches.

    ``step`` runs one batch (one forward pass); the encoder engine runs a round to the end,
    the chat engine runs one step between two generation steps so streams keep flowing.
    An exception from ``forward`` propagates: the caller fails the jobs still unsettled.
    """

    def __init__(
        self, jobs: list[EmbedJob], *, dimensions: int, token_budget: int = TOKEN_BUDGET,
        max_rows: int | None = None, padding_share: float = CPU_MAX_PADDING_SHARE,
        on_pass: Callable[[int], None] = lambda tokens: None,
    ) -> None:
        self.jobs = jobs
        self.on_pass = on_pass
        """Called with the tokens embedded by each pass, before its jobs settle, so an engine's
        counters already include a pass when its caller sees the vectors."""
        self.token_budget = token_budget
        self.max_rows = max_rows
        self.padding_share = padding_share
        self._items = sorted(
            ((len(ids), j, i) for j, job in enumerate(jobs) for i, ids in enumerate(job.inputs)),
            key=lambda item: item[0],
        )
        self._start = 0
        for job in jobs:
            job.vectors = np.empty((len(job.inputs), dimensions), dtype=np.float32)
            job.remaining = len(job.inputs)

    @property
    def done(self) -> bool:
        return self._start >= len(self._items)

    def step(self, forward: Forward) -> None:
        """Embed the next batch: as many of the shortest inputs left as the budget allows."""
        import mlx.core as mx

        items, start = self._items, self._start
        end, real = start + 1, items[start][0]
        while end < len(items):
            length, rows = items[end][0], end + 1 - start
            padded = length * rows
            if padded > self.token_budget or (self.max_rows is not None and rows > self.max_rows):
                break
            if padded - (real + length) > max(self.padding_share * padded, PADDING_SLACK_TOKENS):
                break
            real += length
            end += 1
        batch = items[start:end]
        longest = batch[-1][0]
        ids = np.zeros((len(batch), longest), dtype=np.int32)
        mask = np.zeros((len(batch), longest), dtype=np.int32)
        for row, (length, j, i) in enumerate(batch):
            ids[row, :length] = self.jobs[j].inputs[i]
            mask[row, :length] = 1
        vectors = forward(mx.array(ids), mx.array(mask))
        result = np.array(vectors.astype(mx.float32), copy=False)
        self.on_pass(int(mask.sum()))
        self._start = end
        for row, (_, j, i) in enumerate(batch):
            job = self.jobs[j]
            job.vectors[i] = result[row]
            job.remaining -= 1
            if job.remaining == 0:
                job.finish()

    def fail(self, error: BaseException) -> None:
        """Fail every job of the round that has not had its vectors yet."""
        for job in self.jobs:
            job.fail(error)


def _set_result(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)

"""The asyncio side of one generated sequence: what front-ends iterate and cancel.

A front-end holds a ``GenerationStream`` per choice. The engine thread hands each step's raw
token to it through the event loop (``feed``, never directly), and the stream turns tokens into
outputs there (``TextOutput``: text, stop strings, logprobs), so that work stays off the engine
thread. A reader that falls behind (an event loop busy with hundreds of streams) gets the
outputs that piled up merged into one, so it writes one event for several tokens rather than
falling further behind: delivery costs per event, not per token, exactly when that matters.

The stream knows nothing of the engine: it is given the function that asks for its
cancellation (also how a stop string takes the sequence out of the batch), so front-ends can
import it without pulling in MLX or the engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from triton_mlx.engine.text_output import TextOutput
from triton_mlx.engine.types import EngineError, GenerationOutput, GenerationRequest, Logprob

logger = logging.getLogger("triton_mlx.engine")

_FINISHED = object()  # queue sentinel: the stream has delivered its last output


class GenerationStream:
    """One sequence's outputs: iterate it; ``cancel()`` to stop early.

    Iteration ends after the output that carries a ``finish_reason``. A failure inside the
    engine raises ``EngineError`` from the iterator.
    """

    def __init__(
        self, request: GenerationRequest, request_cancel: Callable[[GenerationStream], None],
        text: TextOutput | None = None,
    ) -> None:
        self.request = request
        self._request_cancel = request_cancel
        self._text = text
        self._items: deque[Any] = deque()  # outputs, an error, or the end
        self._waiter: asyncio.Future[None] | None = None  # the reader waiting for an item
        self._done = False  # the reader has seen the end, or cancelled
        self._ended = False  # no more outputs will be put
        self.admitted_at: float | None = None
        """When the engine put the sequence in the batch (``time.perf_counter``, written once
        by the engine thread): the end of its wait in the queue, the start of its prefill."""

    def __aiter__(self) -> AsyncIterator[GenerationOutput]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[GenerationOutput]:
        items = self._items
        while True:
            while not items:
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
            item = items.popleft()
            if item is _FINISHED:
                return
            if isinstance(item, BaseException):
                self._done = True
                raise item
            while items and isinstance(items[0], GenerationOutput) and item.finish_reason is None:
                item = _merge(item, items.popleft())
            if item.finish_reason is not None:
                self._done = True
            yield item

    def cancel(self) -> None:
        """Stop generating and free the slot; safe to call at any time, more than once."""
        if not self._done:
            self._done = True
            self._request_cancel(self)

    def feed(self, token: int, logprob: Logprob | None, finish_reason: str | None,
             cached_tokens: int) -> None:
        """Take the next generated token (event loop only). A stop string ends the stream and
        asks the engine to take the sequence out of the batch; tokens after the end are
        dropped. A failure here (decoding, stop strings) fails this stream alone."""
        if self._ended or self._text is None:
            return
        try:
            output, stopped = self._text.advance(token, logprob, finish_reason, cached_tokens)
        except Exception as exc:
            logger.error("generation failed for one request; the others go on", exc_info=exc,
                         extra={"request_id": self.request.request_id})
            self.put(EngineError("generation failed inside the engine"))
            self._request_cancel(self)
            return
        if stopped:
            self._request_cancel(self)
        if output is not None:
            self.put(output)

    def put(self, item: GenerationOutput | EngineError) -> None:
        """Hand the reader an output or the error that ends the stream; event loop only."""
        if self._ended:
            return
        self._items.append(item)
        if isinstance(item, BaseException):
            self._ended = True
        elif item.finish_reason is not None:
            self._ended = True
            self._items.append(_FINISHED)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _merge(first: GenerationOutput, then: GenerationOutput) -> GenerationOutput:
    """Two consecutive outputs as one: their text and logprobs in order, the later counts."""
    return dataclasses.replace(then, text=first.text + then.text,
                               logprobs=first.logprobs + then.logprobs)


def deliver(batch: list[tuple[Any, ...]]) -> None:
    """On the event loop: each stream takes its token of the step (stream, token, logprob,
    finish reason, cached prompt tokens)."""
    for stream, token, logprob, finish_reason, cached_tokens in batch:
        stream.feed(token, logprob, finish_reason, cached_tokens)

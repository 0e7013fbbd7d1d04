"""The asyncio side of one generated sequence: what front-ends iterate and cancel.

A front-end holds a ``GenerationStream`` per choice; the engine thread puts each step's output
into it (through the event loop, never directly). The stream knows nothing of the engine: it
is given the function that asks for its cancellation, so front-ends can import it without
pulling in MLX or the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from triton_mlx.engine.types import EngineError, GenerationOutput, GenerationRequest

_FINISHED = object()  # queue sentinel: the stream has delivered its last output


class GenerationStream:
    """One sequence's outputs: iterate it; ``cancel()`` to stop early.

    Iteration ends after the output that carries a ``finish_reason``. A failure inside the
    engine raises ``EngineError`` from the iterator.
    """

    def __init__(
        self, request: GenerationRequest, request_cancel: Callable[[GenerationStream], None]
    ) -> None:
        self.request = request
        self._request_cancel = request_cancel
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._done = False

    def __aiter__(self) -> AsyncIterator[GenerationOutput]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[GenerationOutput]:
        while True:
            item = await self._queue.get()
            if item is _FINISHED:
                return
            if isinstance(item, BaseException):
                self._done = True
                raise item
            if item.finish_reason is not None:
                self._done = True
            yield item

    def cancel(self) -> None:
        """Stop generating and free the slot; safe to call at any time, more than once."""
        if not self._done:
            self._done = True
            self._request_cancel(self)

    def put(self, item: GenerationOutput | EngineError) -> None:
        """Hand the reader an output or the error that ends the stream; event loop only."""
        self._queue.put_nowait(item)
        if isinstance(item, GenerationOutput) and item.finish_reason is not None:
            self._queue.put_nowait(_FINISHED)

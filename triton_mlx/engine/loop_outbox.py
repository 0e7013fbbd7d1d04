"""Calls from an engine thread to the event loop, with one wake-up for all that pile up.

``loop.call_soon_threadsafe`` writes a byte to the event loop's self-pipe for every call: the
event loop wakes, reads the pipe and runs the call, each a system call around which the GIL
changes hands between the two threads. An engine thread posts one call per step; when the event
loop falls behind (hundreds of streams to write, or a lone stream's step shorter than the
event loop's work for it), each step still paid for its own wake-up and pipe read.

A ``LoopOutbox`` queues the calls in a deque and asks for a wake-up only when none is pending:
the event loop, once it runs, takes every call queued by then, in order, in one turn. Nothing
waits longer than it did (the first call of a batch wakes the loop at once), and a lagging loop
wakes once for several steps, whose tokens a ``GenerationStream`` then sends as one event.

Thread safety: ``deque.append`` and ``popleft`` are atomic. The event loop clears ``_pending``
before it empties the deque, so a call appended after the emptying started is either taken by
it or finds ``_pending`` clear and asks for a wake-up of its own; none is left behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("triton_mlx.engine")


class LoopOutbox:
    """Calls posted from any thread, run on ``loop`` in the order posted."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._calls: deque[tuple[Callable[[Any], None], Any]] = deque()
        self._pending = False  # a wake-up is scheduled and has not started emptying the deque

    def post(self, fn: Callable[[Any], None], arg: Any) -> None:
        """Run ``fn(arg)`` on the event loop soon; dropped if the loop has closed."""
        self._calls.append((fn, arg))
        if self._pending:
            return
        self._pending = True
        try:
            self.loop.call_soon_threadsafe(self._run)
        except RuntimeError:  # the loop has closed: nobody is left to read the output
            self._calls.clear()
            self._pending = False

    def _run(self) -> None:
        """On the event loop: every call posted so far, in order; one failing call is logged
        and the others still run (as separate ``call_soon`` callbacks would)."""
        self._pending = False
        calls = self._calls
        while calls:
            fn, arg = calls.popleft()
            try:
                fn(arg)
            except Exception:
                logger.exception("a call from the engine thread failed on the event loop")

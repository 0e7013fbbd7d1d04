"""Handing calls from an engine thread to the event loop without giving up the GIL.

``loop.call_soon_threadsafe`` wakes the event loop by writing to its self-pipe through Python's
socket API, which releases the GIL around the system call. The event loop's thread, woken on
another core by that very write, takes the GIL at once and keeps it while it turns the step's
tokens into text and sends them; the engine thread, back from its write, waits for all of that
before it can build the next step's graph. Where a step is bound by the host (a small model on a
GPU), that wait adds the event loop's per-token work to every step: in a simulation of a lone
stream (a 1.5 ms graph build, a 1.2 ms launch without the GIL, 150 us of event-loop work per
token) the engine ran at 0.93x the speed it had with no hand-off, and at 0.99x with this one.

A ``LoopHandoff`` queues the calls in a deque and wakes the loop by writing one byte to a pipe
of its own with libc's ``write`` called through ``ctypes.PyDLL``, which keeps the GIL (the pipe
is non-blocking: a full pipe means a wake-up is pending already). The event loop's thread wakes,
finds the GIL held and waits for it; it gets it when the engine thread next lets go, which it
does when it launches the next step (``mx.async_eval``) or waits for the device, so the loop's
work overlaps the launch instead of delaying the graph. That delays each hand-off by up to one
graph build (~1.5 ms for the 1B model on the H200), which no one sees between tokens but would
add to the time to first token: a step that carries a sequence's first token asks for its call
``at_once``, woken with a write that lets go of the GIL. Where none of this can be set up (no
libc ``write`` to call, a loop without ``add_reader``) it falls back to
``call_soon_threadsafe``.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import os
import weakref
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("triton_mlx.engine")

try:  # PyDLL: the call keeps the GIL, unlike CDLL's
    _write = ctypes.PyDLL(None).write
    _write.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
    _write.restype = ctypes.c_ssize_t
except (OSError, AttributeError, TypeError):  # no C library to call into (not Linux, macOS)
    _write = None

_handoffs: weakref.WeakKeyDictionary[Any, LoopHandoff] = weakref.WeakKeyDictionary()


class LoopHandoff:
    """Calls made on an event loop's thread, in the order other threads ask for them."""

    def __init__(self, loop: Any) -> None:
        # Weak: the registry's values must not keep their loops (its keys) alive.
        self._loop = weakref.ref(loop)
        self._calls: collections.deque[tuple[Callable[[Any], None], Any]] = collections.deque()
        self._fds: tuple[int, int] | None = None
        if _write is None:
            return
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        try:
            loop.add_reader(read_fd, self._run)
        except NotImplementedError:  # a loop that cannot watch pipes (Windows' proactor)
            os.close(read_fd)
            os.close(write_fd)
            return
        self._fds = (read_fd, write_fd)
        weakref.finalize(self, _close, read_fd, write_fd)

    @classmethod
    def for_running_loop(cls, loop: Any) -> LoopHandoff:
        """The loop's hand-off, made on first use; call it on the loop's own thread."""
        handoff = _handoffs.get(loop)
        if handoff is None:
            handoff = _handoffs[loop] = cls(loop)
        return handoff

    def call(self, fn: Callable[[Any], None], arg: Any, *, at_once: bool = False) -> None:
        """Have the loop call ``fn(arg)`` soon; from any thread. Nothing happens once the loop
        has closed (nobody is left to read the output).

        ``at_once``: wake the loop with a write that lets go of the GIL, as
        ``call_soon_threadsafe`` does, so it runs the call now rather than at the caller's next
        launch: for a sequence's first token, whose delay the user sees as time to first token,
        at the cost of waiting for the loop's work once. Either way calls run in order."""
        loop = self._loop()
        if loop is None or loop.is_closed():
            return
        if self._fds is None:
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(fn, arg)
            return
        self._calls.append((fn, arg))
        if at_once:
            with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending already
                os.write(self._fds[1], b"\0")
        else:
            _write(self._fds[1], b"\0", 1)  # -1 (EAGAIN) when full: a wake-up is pending

    def _run(self) -> None:
        """On the loop: empty the pipe, then make every queued call, oldest first."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._fds[0], 4096):
                pass
        calls = self._calls
        while calls:
            fn, arg = calls.popleft()
            try:
                fn(arg)
            except Exception:  # as the loop's own callbacks: logged, and the others still run
                logger.exception("a call handed to the event loop failed")


def _close(read_fd: int, write_fd: int) -> None:
    for fd in (read_fd, write_fd):
        with contextlib.suppress(OSError):
            os.close(fd)

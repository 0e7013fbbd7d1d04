"""What every format's parser shares: the buffer, the events, the calls, and text around markers.

A parser keeps the text it has not decided about in ``_buf`` and runs its state machine over it
after every chunk. Each step decides only from the text it holds, never from where a chunk
ended, so feeding the output whole, in two pieces or a character at a time assembles to the same
text and calls. Text is held back only while it could still be the start of a marker.
"""

from __future__ import annotations

import logging
import secrets
import string
from abc import ABC, abstractmethod
from collections.abc import Callable

from triton_mlx.serving.tool_calls.events import (
    CallArguments,
    CallStart,
    Event,
    TextDelta,
    ToolCall,
)
from triton_mlx.serving.tool_calls.json_reader import DONE, END, ERROR, MORE

log = logging.getLogger("triton_mlx.serving")

_ALPHANUMERIC = string.ascii_letters + string.digits


def random_id(length: int, prefix: str = "") -> str:
    """``prefix`` and ``length`` random letters and digits."""
    return prefix + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


def partial_suffix(text: str, markers: tuple[str, ...]) -> int:
    """The length of the longest end of ``text`` that is a proper beginning of a marker."""
    longest = min(len(text), max(len(m) for m in markers) - 1)
    for size in range(longest, 0, -1):
        tail = text[-size:]
        if any(m.startswith(tail) for m in markers):
            return size
    return 0


def could_become(text: str, markers: tuple[str, ...]) -> bool:
    """``text`` is a proper beginning of one of the markers."""
    return any(len(text) < len(m) and m.startswith(text) for m in markers)


class ToolCallParser(ABC):
    """Turns generated text, in chunks, into text and tool calls (one format per subclass)."""

    format = ""

    def __init__(self, tools: list[dict], new_id: Callable[[], str]) -> None:
        self._tools = tools or []
        self._new_id = new_id
        self._buf = ""
        self._events: list[Event] = []
        self._ids: list[str] = []
        self._names: list[str] = []
        self._arguments: list[str] = []
        self._malformed = False
        self._after_call = False  # whitespace right after a call is not content
        self._finished = False
        self._raw = ""  # a call's markup so far, while it may still go back as text
        self._started = False  # the current call is announced (CallStart given out)

    # -- public ---------------------------------------------------------------------------

    def feed(self, text: str) -> list[Event]:
        """The next chunk of generated text; returns what it made known."""
        if self._finished:
            raise RuntimeError("the output already finished")
        if text:
            self._buf += text
            self._run(final=False)
        return self._take_events()

    def finish(self) -> list[Event]:
        """The output ended: decide about everything still held."""
        if not self._finished:
            self._finished = True
            self._run(final=True)
            self._close()
        return self._take_events()

    @property
    def calls(self) -> list[ToolCall]:
        """The calls parsed so far, in order."""
        calls = zip(self._ids, self._names, self._arguments, strict=True)
        return [ToolCall(*call) for call in calls]

    @property
    def malformed(self) -> bool:
        """Some call markup could not be parsed."""
        return self._malformed

    # -- for subclasses -------------------------------------------------------------------

    @abstractmethod
    def _step(self, final: bool) -> bool:
        """Advance the state machine over ``_buf``; False when it needs more text."""

    @abstractmethod
    def _close(self) -> None:
        """The output ended in the current state (after ``_step`` ran with ``final``)."""

    def _run(self, final: bool) -> None:
        while self._step(final):
            pass

    def _take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def _text(self, text: str) -> None:
        if not text:
            return
        if self._events and isinstance(self._events[-1], TextDelta):
            text = self._events.pop().text + text
        self._events.append(TextDelta(text))

    def _start_call(self, name: str, call_id: str | None = None) -> None:
        index = len(self._ids)
        self._ids.append(call_id or self._new_id())
        self._names.append(name)
        self._arguments.append("")
        self._events.append(CallStart(index, self._ids[index], name))

    def _add_arguments(self, fragment: str) -> None:
        if not fragment:
            return
        index = len(self._arguments) - 1
        self._arguments[index] += fragment
        last = self._events[-1] if self._events else None
        if isinstance(last, CallArguments) and last.index == index:
            fragment = self._events.pop().fragment + fragment
        self._events.append(CallArguments(index, fragment))

    def _flag(self, reason: str, raw: str = "") -> None:
        """Some call markup could not be parsed: say so, and give its raw text back as text."""
        self._malformed = True
        shown = raw if len(raw) <= 200 else raw[:200] + "..."
        log.warning("%s tool call could not be parsed (%s): %r", self.format, reason, shown)
        self._text(raw)

    def _text_until(self, markers: tuple[str, ...], final: bool) -> str | None:
        """Give out text up to the first marker and consume the marker (returned); without
        one, give out all but a possible marker beginning and return None. Whitespace right
        after a call is dropped when another call or the end follows."""
        buf = self._buf
        if self._after_call:
            body = buf.lstrip()
            if any(body.startswith(m) for m in markers):
                buf = body
            elif not body or (not final and could_become(body, markers)):
                if final:
                    self._buf = ""
                return None
            else:
                self._after_call = False
        found, marker = len(buf), None
        for candidate in markers:
            at = buf.find(candidate, 0, found + len(candidate))
            if 0 <= at < found:
                found, marker = at, candidate
        if marker is not None:
            self._text(buf[:found])
            self._buf = buf[found + len(marker):]
            return marker
        keep = 0 if final else partial_suffix(buf, markers)
        self._text(buf[: len(buf) - keep])
        self._buf = buf[len(buf) - keep:]
        return None

    def _text_rest(self, final: bool) -> bool:
        """Everything left is content (whitespace right after a call is dropped at the end)."""
        if self._after_call:
            if not self._buf.strip():
                if final:
                    self._buf = ""
                return False
            self._after_call = False
        self._text(self._buf)
        self._buf = ""
        return False

    def _push_chars(self, reader) -> tuple[int, str]:
        """Push ``_buf`` into a JSON reader up to the end of its value or an error; returns the
        status and the text consumed (removed from ``_buf``; END and ERROR leave their
        character there)."""
        status = MORE
        used = 0
        for ch in self._buf:
            status = reader.push(ch)
            if status in (ERROR, END):
                break
            used += 1
            if status == DONE:
                break
        consumed, self._buf = self._buf[:used], self._buf[used:]
        return status, consumed

    def _push_call_text(self, reader) -> int:
        """``_push_chars``, keeping what it consumed in ``_raw`` while the call is not yet
        announced: only such a call can still be given back as text. Returns the status."""
        status, consumed = self._push_chars(reader)
        if not self._started:
            self._raw += consumed
        return status

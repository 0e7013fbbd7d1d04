"""The hermes format: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.

Hermes, Qwen2.5, Qwen3 and SmolLM3 answer so, and so does the server's own default tool prompt.
Calls may follow one another and text may come before, between and after them. ``arguments``
may be an object or a JSON string holding one. A call is announced as soon as its name is read;
its arguments stream out as the model writes them.
"""

from __future__ import annotations

from collections.abc import Callable

from triton_mlx.serving.tool_calls.base import ToolCallParser, could_become, partial_suffix
from triton_mlx.serving.tool_calls.json_reader import DONE, ERROR, CallObjectReader

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BOTH = (OPEN, CLOSE)


class HermesParser(ToolCallParser):
    format = "hermes"

    def __init__(self, tools: list[dict], new_id: Callable[[], str]) -> None:
        super().__init__(tools, new_id)
        self._state = "text"
        self._reader = CallObjectReader()
        self._raw = ""  # the markup of a call not yet announced, given back if it breaks
        self._started = False

    def _step(self, final: bool) -> bool:
        state = self._state
        if state == "text":
            if self._text_until((OPEN,), final) is None:
                return False
            self._begin()
            return True
        if state == "body":
            return self._body()
        if state == "close":
            return self._close_tag(final)
        if state == "junk":
            return self._junk()
        if state == "broken":
            return self._broken()
        return self._discard()

    def _begin(self) -> None:
        self._state = "body"
        self._reader = CallObjectReader()
        self._raw = OPEN
        self._started = False
        self._after_call = False

    def _end_call(self) -> None:
        self._state = "text"
        self._after_call = True
        self._started = False

    def _body(self) -> bool:
        if not self._buf:
            return False
        status = self._push_call_text(self._reader)
        self._announce()
        if status == DONE:
            if not self._started:
                self._state = "broken"  # a JSON object, but not a call: hold it to its end
            else:
                if self._reader.bad_arguments:
                    self._flag("arguments are not a JSON object")
                self._state = "close"
        elif status == ERROR:
            if self._started:
                self._flag("invalid JSON inside the call")
                self._state = "discard"
            else:
                self._state = "broken"
        return True

    def _announce(self) -> None:
        reader = self._reader
        if not self._started and reader.ready:
            self._start_call(reader.name)
            self._started = True
        if self._started:
            self._add_arguments(reader.take_arguments())

    def _close_tag(self, final: bool) -> bool:
        """After a call's object: its closing tag (or the next call's opening one)."""
        body = self._buf.lstrip()
        for tag in _BOTH:
            if body.startswith(tag):
                self._buf = body[len(tag):]
                self._end_call()
                if tag == OPEN:
                    self._begin()
                return True
        if not body and not final:
            return False
        if body and not final and could_become(body, _BOTH):
            return False
        self._state = "junk"  # held until a tag says what it was
        return True

    def _junk(self) -> bool:
        """Text after a call's object inside its tags: dropped when the closing tag comes; if
        the output ends without one, it is given back as text (malformed either way)."""
        close, opening = self._buf.find(CLOSE), self._buf.find(OPEN)
        if close < 0 and opening < 0:
            return False
        self._flag("text after the call's JSON")
        if opening >= 0 and (close < 0 or opening < close):
            self._buf = self._buf[opening + len(OPEN):]
            self._end_call()
            self._begin()
        else:
            self._buf = self._buf[close + len(CLOSE):]
            self._end_call()
        return True

    def _broken(self) -> bool:
        """Markup that is not a call: held to its closing tag, then given back as text."""
        close, opening = self._buf.find(CLOSE), self._buf.find(OPEN)
        if opening >= 0 and (close < 0 or opening < close):
            cut = opening  # a new call begins: the broken one ends here
        elif close >= 0:
            cut = close + len(CLOSE)
        else:
            keep = partial_suffix(self._buf, _BOTH)
            self._raw += self._buf[: len(self._buf) - keep]
            self._buf = self._buf[len(self._buf) - keep:]
            return False
        self._flag("not a JSON call object", self._raw + self._buf[:cut])
        self._buf = self._buf[cut:]
        self._state = "text"
        return True

    def _discard(self) -> bool:
        """The rest of a started call that broke: dropped up to its closing tag."""
        close, opening = self._buf.find(CLOSE), self._buf.find(OPEN)
        if opening >= 0 and (close < 0 or opening < close):
            self._buf = self._buf[opening:]
        elif close >= 0:
            self._buf = self._buf[close + len(CLOSE):]
        else:
            self._buf = self._buf[len(self._buf) - partial_suffix(self._buf, _BOTH):]
            return False
        self._end_call()
        return True

    def _close(self) -> None:
        state = self._state
        if state == "body":
            if self._started:
                self._add_arguments(self._reader.cut_short())
                self._flag("the output ended inside the call's arguments")
            else:
                self._flag("the output ended inside a call", self._raw + self._buf)
        elif state == "broken":
            self._flag("not a JSON call object", self._raw + self._buf)
        elif state == "junk":
            rest = self._buf.strip()
            if rest and not CLOSE.startswith(rest):
                self._flag("text after the call in an unclosed <tool_call>", self._buf)
        self._buf = ""

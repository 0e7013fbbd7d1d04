"""The pythonic format: the whole reply is a Python list of calls, ``[f(a=1, b="x"), g()]``.

Llama 3.2 and 4 (pythonic templates), ToolACE and some small models answer so, in Llama 4's
case between ``<|python_start|>`` and ``<|python_end|>``. Arguments are keyword arguments with
literal values (Python's or JSON's ``true``/``false``/``null``), read with ``ast`` and never
evaluated. The reply is taken for a call list only once it reads ``[name(``; anything else is
plain text. Each argument is added to the call's arguments JSON when its value is complete.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from triton_mlx.serving.tool_calls.base import ToolCallParser, could_become
from triton_mlx.serving.tool_calls.python_literals import (
    END,
    ERROR,
    LiteralReader,
    NotALiteral,
    literal_value,
)

START, STOP = "<|python_start|>", "<|python_end|>"
_NAME = r"[A-Za-z_][\w.]*"
_FIRST = re.compile(rf"\[\s*({_NAME})\s*\(")
_FIRST_SO_FAR = re.compile(rf"\[\s*(?:{_NAME}\s*)?")
_NEXT = re.compile(rf"({_NAME})\s*\(")
_NEXT_SO_FAR = re.compile(rf"(?:{_NAME}\s*)?")
_KEYWORD = re.compile(r"([A-Za-z_]\w*)\s*=(?!=)")
_KEYWORD_SO_FAR = re.compile(r"(?:[A-Za-z_]\w*\s*)?")
_MAX_HEAD = 256


class PythonicParser(ToolCallParser):
    format = "pythonic"

    def __init__(self, tools: list[dict], new_id: Callable[[], str]) -> None:
        super().__init__(tools, new_id)
        self._state = "start"
        self._tagged = False
        self._reader = LiteralReader()
        self._key = ""
        self._value = ""
        self._count = 0

    def _step(self, final: bool) -> bool:
        state = self._state
        if state == "text":
            return self._text_rest(final)
        if state == "discard":
            self._buf = ""
            return False
        if state == "value":
            return self._read_value()
        body = self._buf.lstrip()
        if not body and not final:
            return False
        if state == "start":
            return self._start(body, final)
        if state == "arguments":
            return self._argument(body, final)
        if state == "after_call":
            if body.startswith(","):
                self._buf, self._state = body[1:], "next"
            elif body.startswith("]"):
                self._buf, self._state = body[1:], "end"
            elif body:
                return self._broken("text after a call")
            else:  # the output ended after a whole call, without its ']'
                self._state = "text"
            return True
        if state == "next":
            return self._next(body, final)
        if body.startswith(STOP):  # state "end": after the list
            self._buf = body[len(STOP):]
        elif not final and could_become(body, (STOP,)):
            return False
        self._state = "text"
        return True

    def _start(self, body: str, final: bool) -> bool:
        if not self._tagged and body.startswith(START):
            self._buf, self._tagged = body[len(START):], True
            return True
        if not self._tagged and not final and could_become(body, (START,)):
            return False
        match = _FIRST.match(body)
        if match:
            return self._call(match.group(1), body[match.end():])
        if not final and len(body) < _MAX_HEAD and _FIRST_SO_FAR.fullmatch(body):
            return False
        if self._tagged:
            self._flag("no call list after the python tag", START)
        self._state = "text"
        return True

    def _call(self, name: str, rest: str) -> bool:
        self._start_call(name)
        self._buf, self._count, self._state = rest, 0, "arguments"
        return True

    def _next(self, body: str, final: bool) -> bool:
        match = _NEXT.match(body)
        if match:
            return self._call(match.group(1), body[match.end():])
        if not final and len(body) < _MAX_HEAD and _NEXT_SO_FAR.fullmatch(body):
            return False
        self._flag("no call after ','", self._buf)
        self._buf, self._state = "", "discard"
        return True

    def _argument(self, body: str, final: bool) -> bool:
        if body.startswith(")"):
            self._add_arguments("}" if self._count else "{}")
            self._buf, self._state, self._after_call = body[1:], "after_call", True
            return True
        match = _KEYWORD.match(body)
        if match:
            self._key = match.group(1)
            self._buf, self._state = body[match.end():], "value"
            self._reader, self._value = LiteralReader(), ""
            return True
        if not final and len(body) < _MAX_HEAD and _KEYWORD_SO_FAR.fullmatch(body):
            return False
        if not body:
            return False  # the output ended: the call stays as far as it got
        return self._broken("not a keyword argument")

    def _read_value(self) -> bool:
        used, status = 0, None
        for ch in self._buf:
            status = self._reader.push(ch)
            if status in (END, ERROR):
                break
            used += 1
        self._value += self._buf[:used]
        self._buf = self._buf[used:]
        if status == ERROR:
            return self._broken("not a Python literal")
        if status != END:
            return False
        try:
            value = literal_value(self._value)
        except NotALiteral as error:  # the list still reads: only this argument is lost
            self._flag(f"argument {self._key!r}: {error}")
        else:
            pair = json.dumps(self._key, ensure_ascii=False) + ": "
            pair += json.dumps(value, ensure_ascii=False)
            self._add_arguments(("{" if not self._count else ", ") + pair)
            self._count += 1
        if self._buf.startswith(","):
            self._buf = self._buf[1:]
        self._state = "arguments"
        return True

    def _broken(self, reason: str) -> bool:
        """A started call list went wrong: the calls so far stay, the rest is dropped."""
        self._flag(reason)
        self._buf, self._state = "", "discard"
        return True

    def _close(self) -> None:
        if self._state in ("arguments", "value"):
            self._flag("the output ended inside a call")
        self._buf = ""

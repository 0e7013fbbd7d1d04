"""The Llama 3.1/3.2 JSON format: the whole reply is ``{"name": ..., "parameters": {...}}``.

It may follow ``<|python_tag|>``; several calls are separated by ``;`` (or only whitespace).
``arguments`` is taken for ``parameters``. A reply that does not begin (after whitespace and the
tag) with ``{`` is plain text. Because a JSON answer can look like a call, an object is a call
only once it has both a name and parameters: it is announced when its parameters begin, and an
object that ends without them is given back as text.
"""

from __future__ import annotations

from collections.abc import Callable

from triton_mlx.serving.tool_calls.base import ToolCallParser, could_become
from triton_mlx.serving.tool_calls.json_reader import DONE, ERROR, CallObjectReader

TAG = "<|python_tag|>"


class Llama3JsonParser(ToolCallParser):
    format = "llama3_json"

    def __init__(self, tools: list[dict], new_id: Callable[[], str]) -> None:
        super().__init__(tools, new_id)
        self._state = "start"
        self._reader = CallObjectReader(require_arguments=True)
        self._raw = ""
        self._started = False

    def _step(self, final: bool) -> bool:
        state = self._state
        if state == "text":
            return self._text_rest(final)
        if state == "discard":
            self._buf = ""
            return False
        body = self._buf.lstrip()
        if state == "body":
            return self._body()
        if not body and not final:
            return False
        if state == "start":
            return self._start(body, final)
        if state == "tagged":
            if body.startswith("{"):
                self._raw += self._buf[: len(self._buf) - len(body)]
                return self._begin(body)
            self._flag("no JSON call after the python tag", self._raw)
            self._state = "text"
            return True
        if state == "next" and body.startswith("{"):
            return self._begin(body)
        if state == "separator":
            if body.startswith(";"):
                self._buf, self._state = body[1:], "next"
                return True
            if body.startswith("{"):
                return self._begin(body)
        if state == "next":  # a ';' that no call follows
            self._buf = ";" + self._buf if body else ""
        self._state = "text"
        return True

    def _start(self, body: str, final: bool) -> bool:
        if body.startswith("{"):
            return self._begin(body)
        if body.startswith(TAG):
            self._buf, self._raw, self._state = body[len(TAG):], TAG, "tagged"
            return True
        if not final and could_become(body, (TAG,)):
            return False
        self._state = "text"
        return True

    def _begin(self, body: str) -> bool:
        self._buf = body
        self._reader = CallObjectReader(require_arguments=True)
        self._started = False
        self._state = "body"
        return True

    def _body(self) -> bool:
        if not self._buf:
            return False
        status = self._push_call_text(self._reader)
        reader = self._reader
        if not self._started and reader.ready:
            self._start_call(reader.name)
            self._started = True
        if self._started:
            self._add_arguments(reader.take_arguments())
        if status == DONE:
            if not self._started:
                self._flag("a JSON object without name and parameters", self._raw)
                self._state = "text"
            else:
                if reader.bad_arguments:
                    self._flag("parameters are not a JSON object")
                self._state = "separator"
                self._after_call = True
            self._raw = ""
        elif status == ERROR:
            if self._started:
                self._flag("invalid JSON inside the call")
                self._state = "discard"
            else:
                self._flag("invalid JSON", self._raw)
                self._state = "text"
            self._raw = ""
        return True

    def _close(self) -> None:
        if self._state == "body":
            if self._started:
                self._add_arguments(self._reader.cut_short())
                self._flag("the output ended inside the call's parameters")
            else:
                self._flag("the output ended inside a call", self._raw + self._buf)
        self._buf = ""

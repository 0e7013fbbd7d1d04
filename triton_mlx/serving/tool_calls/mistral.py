"""The Mistral formats, all after the ``[TOOL_CALLS]`` marker (text may come before it).

- ``[TOOL_CALLS][{"name": "f", "arguments": {...}}, ...]`` (Mistral 7B v0.3, Nemo);
- ``[TOOL_CALLS]f[ARGS]{...}``, repeated for parallel calls (Mistral Small 3.2, Devstral,
  Magistral); also ``f{...}`` (the text vLLM sees once ``[ARGS]`` is skipped as special);
- ``[TOOL_CALLS]f[CALL_ID]abc123XYZ[ARGS]{...}``: the model's own id is the call's id.

Mistral's templates want tool-call ids of exactly 9 letters and digits, so the default ids here
are such (an ``"id"`` inside the JSON list form comes after the name and is not waited for).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from triton_mlx.serving.tool_calls.base import ToolCallParser, partial_suffix
from triton_mlx.serving.tool_calls.json_reader import (
    DONE,
    END,
    ERROR,
    ArgumentsReader,
    CallObjectReader,
)

MARKER, ARGS, CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"
_NAME = re.compile(r"\s*[\w.:-]+\s*")
_ID = re.compile(r"\s*[A-Za-z0-9_-]{1,64}\s*")
_MAX = 256


class MistralParser(ToolCallParser):
    format = "mistral"

    def __init__(self, tools: list[dict], new_id: Callable[[], str]) -> None:
        super().__init__(tools, new_id)
        self._state = "text"
        self._raw = ""
        self._name = ""
        self._reader: CallObjectReader | ArgumentsReader = ArgumentsReader()
        self._started = False

    def _step(self, final: bool) -> bool:
        state = self._state
        if state == "text":
            if self._text_until((MARKER,), final) is None:
                return False
            self._raw, self._state, self._after_call = MARKER, "marker", False
            return True
        if state in ("item", "arguments"):
            return self._read()
        if state == "discard":
            return self._discard(final)
        body = self._buf.lstrip()
        if not body and not final:
            return False
        if state == "marker":
            self._raw += self._buf[: len(self._buf) - len(body)]
            self._buf = body
            if body.startswith("["):
                self._raw += "["
                self._buf, self._state = body[1:], "list"
            else:
                self._state = "name"
            return True
        if state == "name":
            return self._header(final, _NAME, (ARGS, CALL_ID, "{"))
        if state == "call_id":
            return self._header(final, _ID, (ARGS,))
        if state == "list" and body.startswith("{"):
            self._buf, self._started, self._state = body, False, "item"
            self._reader = CallObjectReader()
            return True
        if state == "list_next" and not body:  # the output ended after a whole call
            self._state = "text"
            return True
        if state in ("list", "list_next") and body.startswith("]"):
            self._buf, self._state, self._after_call = body[1:], "text", True
            return True
        if state == "list_next" and body.startswith(","):
            self._raw, self._buf, self._state = ",", body[1:], "list_open"
            return True
        if state == "list_open" and body.startswith("{"):
            self._state = "list"
            return True
        self._broken("not a call list")
        return True

    def _header(self, final: bool, pattern: re.Pattern, ends: tuple[str, ...]) -> bool:
        """A name (or an id) up to the marker that ends it."""
        buf = self._buf
        cut = min([at for at in (buf.find(e) for e in ends) if at >= 0], default=-1)
        head = buf[: len(buf) - partial_suffix(buf, ends)] if cut < 0 else buf[:cut]
        if (not pattern.fullmatch(head) and (head.strip() or cut >= 0)) or len(head) > _MAX:
            self._broken("no function name" if self._state == "name" else "bad call id")
            return True
        if cut < 0:
            if final:
                self._broken("the output ended inside a call")
                return True
            return False
        end = next(e for e in ends if buf.startswith(e, cut))
        if self._state == "name":
            self._name = head.strip()
            self._raw += buf[: cut + len(end)]
            if end == CALL_ID:
                self._buf, self._state = buf[cut + len(end):], "call_id"
                return True
            self._start_call(self._name)
        else:
            self._start_call(self._name, head.strip())
        self._buf = buf[cut + len(end):] if end != "{" else buf[cut:]
        self._reader, self._started, self._state = ArgumentsReader(), True, "arguments"
        return True

    def _read(self) -> bool:
        if not self._buf:
            return False
        status = self._push_call_text(self._reader)
        reader = self._reader
        if isinstance(reader, CallObjectReader):
            if not self._started and reader.ready:
                self._start_call(reader.name)
                self._started = True
            if self._started:
                self._add_arguments(reader.take_arguments())
            bad = reader.bad_arguments
        else:
            self._add_arguments(reader.take())
            bad = reader.bad
        if status in (DONE, END) and self._started:
            if bad:
                self._flag("arguments are not a JSON object")
            self._raw = ""
            if self._state == "item":
                self._state = "list_next"
            else:
                self._state, self._after_call = "text", True
        elif status in (DONE, ERROR):
            if self._started:
                self._flag("invalid JSON inside the call")
                self._state = "discard"
            else:
                self._broken("not a JSON call object")
        return True

    def _broken(self, reason: str) -> None:
        """Markup that is not a call: given back as text, and the rest is text again."""
        self._flag(reason, self._raw)
        self._raw, self._state = "", "text"

    def _discard(self, final: bool) -> bool:
        """The rest of a broken call is dropped, up to the next ``[TOOL_CALLS]``."""
        at = self._buf.find(MARKER)
        if at < 0:
            keep = 0 if final else partial_suffix(self._buf, (MARKER,))
            self._buf = self._buf[len(self._buf) - keep:]
            return False
        self._buf, self._state = self._buf[at:], "text"
        return True

    def _close(self) -> None:
        state = self._state
        if state in ("item", "arguments") and self._started:
            self._add_arguments(self._reader.cut_short())
            self._flag("the output ended inside the call's arguments")
        elif state not in ("text", "discard"):
            self._flag("the output ended inside a call", self._raw + self._buf)
        self._buf = ""

"""Incremental JSON readers for the JSON call formats (hermes, llama3_json, mistral).

They take one character at a time, so what they decide never depends on where the model's
output was cut into chunks, and they can hand out a call's arguments text while it is still
arriving. They only find where values end (strings, escapes and bracket nesting); each finished
value is then checked with ``json.loads``.
"""

from __future__ import annotations

import json

MORE, DONE, END, ERROR = range(4)
"""``push`` results: consumed, need more; consumed, the value is complete; complete *before*
this character (not consumed: it belongs to what follows); not consumed: invalid here."""

WHITESPACE = " \t\r\n"
_PRIMITIVE = set("0123456789+-.eEtruefalsn")
_CLOSER = {"}": "{", "]": "["}


class ValueReader:
    """Finds the end of one JSON value (leading whitespace skipped)."""

    def __init__(self) -> None:
        self.kind: str | None = None  # '{', '[', '"' or 'p' (a number or a literal)
        self._stack: list[str] = []
        self._in_string = False
        self._escape = False

    def push(self, ch: str) -> tuple[int, str]:
        """Read ``ch``; returns the status and the text it adds to the value (a raw control
        character inside a string comes back escaped, so the value still parses)."""
        if self.kind is None:
            if ch in WHITESPACE:
                return MORE, ""
            if ch in "{[":
                self.kind = ch
                self._stack.append(ch)
            elif ch == '"':
                self.kind = '"'
                self._in_string = True
            elif ch in "-0123456789tfn":
                self.kind = "p"
            else:
                return ERROR, ""
            return MORE, ch
        if self.kind == "p":
            return (MORE, ch) if ch in _PRIMITIVE else (END, "")
        if self._in_string:
            if self._escape:
                self._escape = False
            elif ch == "\\":
                self._escape = True
            elif ch == '"':
                self._in_string = False
                return (MORE if self._stack else DONE), ch
            elif ch < " ":
                return MORE, json.dumps(ch)[1:-1]
            return MORE, ch
        if ch == '"':
            self._in_string = True
        elif ch in "{[":
            self._stack.append(ch)
        elif ch in _CLOSER:
            if self._stack[-1] != _CLOSER[ch]:
                return ERROR, ""
            self._stack.pop()
            if not self._stack:
                return DONE, ch
        return MORE, ch


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is out of range")
    return value


def loads(text: str) -> object:
    """``json.loads`` that refuses NaN, Infinity and numbers too large for a float (they
    would not survive being written back as JSON)."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite)


def object_text(text: str) -> str | None:
    """``text`` if it is the JSON text of an object, else None."""
    try:
        return text if isinstance(loads(text), dict) else None
    except ValueError:
        return None


class ArgumentsReader:
    """A call's arguments value. An object streams out as it arrives; a JSON string holding an
    object (some templates render arguments so) is decoded; ``null`` means ``{}``. Anything
    else is kept as received and marked ``bad``."""

    def __init__(self) -> None:
        self._value = ValueReader()
        self._held = ""  # a value that cannot stream: given out when complete
        self._given = ""  # all text given out (or pending), to check it at the end
        self._pending = ""
        self.bad = False
        self.complete = False

    def push(self, ch: str) -> int:
        status, piece = self._value.push(ch)
        if self._value.kind == "{":
            self._out(piece)
        else:
            self._held += piece
        if status in (DONE, END):
            self._finish()
        return status

    def _out(self, text: str) -> None:
        self._given += text
        self._pending += text

    def _finish(self) -> None:
        self.complete = True
        held, self._held = self._held, ""
        if self._value.kind == "{":
            self.bad = object_text(self._given) is None
        elif self._value.kind == '"' and object_text(_decoded(held)) is not None:
            self._out(_decoded(held))
        elif held == "null":
            self._out("{}")
        else:
            self.bad = True
            self._out(held)

    def take(self) -> str:
        """The arguments text that became known since the last call."""
        text, self._pending = self._pending, ""
        return text

    def cut_short(self) -> str:
        """The output ended inside the value: what was received, as it is."""
        self._out(self._held)
        self._held = ""
        return self.take()


def _decoded(string_literal: str) -> str:
    try:
        value = json.loads(string_literal)
    except ValueError:
        return ""
    return value if isinstance(value, str) else ""


_OPEN, _KEY_OR_END, _KEY, _COLON, _VALUE, _AFTER_VALUE, _NEXT_KEY = range(7)
ARGUMENT_KEYS = ("arguments", "parameters")


class CallObjectReader:
    """One ``{"name": ..., "arguments": {...}}`` object (``parameters`` is taken for
    ``arguments``; other keys are skipped). Without an arguments key the arguments are ``{}``,
    unless ``require_arguments``: then the object is not a call."""

    def __init__(self, require_arguments: bool = False) -> None:
        self._require = require_arguments
        self._state = _OPEN
        self._reader: ValueReader | None = None
        self._text = ""
        self._key = ""
        self.name: str | None = None
        self.arguments: ArgumentsReader | None = None
        self._default = ""

    @property
    def ready(self) -> bool:
        """The call can be announced: its name is known (and its arguments have begun, when
        they are required)."""
        return self.name is not None and (not self._require or self.arguments is not None)

    def take_arguments(self) -> str:
        text = self.arguments.take() if self.arguments else ""
        text, self._default = text + self._default, ""
        return text

    def cut_short(self) -> str:
        return self.arguments.cut_short() if self.arguments else ""

    @property
    def bad_arguments(self) -> bool:
        return self.arguments is not None and self.arguments.bad

    def push(self, ch: str) -> int:
        while True:
            status, again = self._push(ch)
            if not again:
                return status

    def _push(self, ch: str) -> tuple[int, bool]:
        state = self._state
        if state in (_OPEN, _KEY_OR_END, _COLON, _AFTER_VALUE, _NEXT_KEY) and ch in WHITESPACE:
            return MORE, False
        if state == _OPEN:
            return self._expect(ch, "{", _KEY_OR_END)
        if state in (_KEY_OR_END, _NEXT_KEY):
            if ch == "}" and state == _KEY_OR_END:
                return self._close()
            if ch != '"':
                return ERROR, False
            self._state, self._reader, self._text = _KEY, ValueReader(), ""
            state = _KEY
        if state == _KEY:
            status, piece = self._reader.push(ch)
            self._text += piece
            if status == DONE:
                self._key = _decoded(self._text)
                self._state = _COLON
            return status if status == ERROR else MORE, False
        if state == _COLON:
            if ch != ":":
                return ERROR, False
            self._state = _VALUE
            self._reader, self._text = None, ""
            return MORE, False
        if state == _VALUE:
            return self._value(ch)
        if ch == ",":
            self._state = _NEXT_KEY
            return MORE, False
        if ch == "}":
            return self._close()
        return ERROR, False

    def _expect(self, ch: str, wanted: str, then: int) -> tuple[int, bool]:
        if ch != wanted:
            return ERROR, False
        self._state = then
        return MORE, False

    def _value(self, ch: str) -> tuple[int, bool]:
        if self._key in ARGUMENT_KEYS:
            if self.arguments is None:
                if ch in WHITESPACE:
                    return MORE, False
                self.arguments = ArgumentsReader()
            elif self.arguments.complete:
                return ERROR, False  # a second arguments key
            status = self.arguments.push(ch)
        else:
            if self._reader is None:
                if self._key == "name" and self.name is not None:
                    return ERROR, False  # a second name
                self._reader = ValueReader()
            status, piece = self._reader.push(ch)
            self._text += piece
            if status in (DONE, END) and self._key == "name":
                name = _decoded(self._text) if self._reader.kind == '"' else ""
                if not name:
                    return ERROR, False
                self.name = name
        if status in (DONE, END):
            self._state = _AFTER_VALUE
        return (MORE, status == END) if status in (DONE, END) else (status, False)

    def _close(self) -> tuple[int, bool]:
        if self.arguments is None and not self._require:
            self._default = "{}"
        return DONE, False

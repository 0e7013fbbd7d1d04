"""The Qwen3-Coder format: XML-like calls whose parameter values are raw text.

``<tool_call>\\n<function=NAME>\\n<parameter=KEY>\\nVALUE\\n</parameter>\\n</function>\\n</tool_call>``.
A value is the text between its tags less exactly one leading and one trailing newline; it is
typed by the tool's JSON schema (integer, number, boolean, null, object and array parse as JSON,
falling back to the text; string or unknown stay text). The call is announced at its
``<function=NAME>``; each parameter is added to the arguments JSON when it completes. Like vLLM,
a missing ``</parameter>`` ends at the next parameter or ``</function>``, and a bare
``<function=...>`` without ``<tool_call>`` is a call too.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from triton_mlx.serving.tool_calls.base import ToolCallParser, could_become, partial_suffix
from triton_mlx.serving.tool_calls.json_reader import loads

OPEN, CLOSE = "<tool_call>", "</tool_call>"
FUNCTION, FUNCTION_END = "<function=", "</function>"
PARAMETER, PARAMETER_END = "<parameter=", "</parameter>"
_IN_CALL = (PARAMETER, FUNCTION_END, CLOSE)
_VALUE_ENDS = (PARAMETER_END, PARAMETER, FUNCTION_END)
_LONGEST_VALUE_END = max(len(m) for m in _VALUE_ENDS)
_MAX_NAME = 256
_JSON_TYPES = {"integer", "number", "boolean", "null", "object", "array"}


def parameter_schemas(tools: list[dict]) -> dict[str, dict]:
    """Each tool's ``properties`` by tool name (OpenAI tool definitions, or bare functions)."""
    found: dict[str, dict] = {}
    for tool in tools:
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            parameters = function.get("parameters")
            properties = parameters.get("properties") if isinstance(parameters, dict) else None
            found[function["name"]] = properties if isinstance(properties, dict) else {}
    return found


def _types(schema: object) -> list[str]:
    if not isinstance(schema, dict):
        return []
    kind = schema.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list):
        return [k for k in kind if isinstance(k, str)]
    types: list[str] = []
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key) or []:
            types += _types(option)
    return types


def typed_value(text: str, schema: object) -> object:
    """A parameter's raw text as the value its schema asks for."""
    if text.startswith("\n"):
        text = text[1:]
    if text.endswith("\n"):
        text = text[:-1]
    types = _types(schema)
    first = next((t for t in types if t != "null"), "null" if types else None)
    if first not in _JSON_TYPES:
        return None if text == "null" and "null" in types else text
    if first == "boolean" and text.strip() in ("True", "False"):
        return text.strip() == "True"
    try:
        return loads(text)
    except ValueError:
        return text


class Qwen3CoderParser(ToolCallParser):
    format = "qwen3_coder"

    def __init__(self, tools: list[dict], new_id: Callable[[], str]) -> None:
        super().__init__(tools, new_id)
        self._schemas = parameter_schemas(self._tools)
        self._state = "text_state"
        self._props: dict = {}
        self._raw = ""
        self._wrapped = False
        self._key = ""
        self._count = 0
        self._scanned = 0

    def _step(self, final: bool) -> bool:
        return getattr(self, "_" + self._state)(final)

    def _text_state(self, final: bool) -> bool:
        marker = self._text_until((OPEN, FUNCTION), final)
        if marker is None:
            return False
        self._raw, self._wrapped = marker, marker == OPEN
        self._state = "open" if self._wrapped else "name"
        self._after_call = False
        return True

    def _open(self, final: bool) -> bool:
        body = self._buf.lstrip()
        if body.startswith(FUNCTION):
            self._raw += self._buf[: len(self._buf) - len(body) + len(FUNCTION)]
            self._buf = body[len(FUNCTION):]
            self._state = "name"
            return True
        if not final and (not body or could_become(body, (FUNCTION,))):
            return False
        return self._broken_now("no <function=...> after <tool_call>")

    def _tag_value(self, final: bool) -> str | None:
        """The text before ``>`` (a name), once it is there and plausible."""
        end = self._buf.find(">")
        head = self._buf if end < 0 else self._buf[:end]
        if len(head) > _MAX_NAME or any(c in head for c in "<\n"):
            return ""
        if end < 0:
            return None if not final else ""
        self._buf = self._buf[end + 1:]
        return head.strip()

    def _name(self, final: bool) -> bool:
        before = self._buf
        name = self._tag_value(final)
        if name is None:
            return False
        if not name or any(c.isspace() for c in name):
            self._buf = before
            return self._broken_now("no function name")
        self._start_call(name)
        self._raw, self._count, self._state = "", 0, "params"
        self._props = self._schemas.get(name, {})
        return True

    def _params(self, final: bool) -> bool:
        body = self._buf.lstrip()
        for tag in _IN_CALL:
            if body.startswith(tag):
                self._buf = body[len(tag):]
                if tag == PARAMETER:
                    self._state = "key_state"
                else:
                    self._add_arguments("}" if self._count else "{}")
                    if tag == CLOSE:
                        self._end_call()
                    else:
                        self._state = "after"
                return True
        if not final and (not body or could_become(body, _IN_CALL)):
            return False
        if body:
            self._flag("text between parameters")
            self._state = "skip"
            return True
        return False

    def _skip(self, final: bool) -> bool:
        found = [at for at in (self._buf.find(tag) for tag in _IN_CALL) if at >= 0]
        if found:
            self._buf = self._buf[min(found):]
            self._state = "params"
            return True
        self._buf = self._buf[len(self._buf) - partial_suffix(self._buf, _IN_CALL):]
        return False

    def _key_state(self, final: bool) -> bool:
        key = self._tag_value(final)
        if key is None:
            return False
        if not key:
            self._flag("no parameter name")
            self._state = "skip"
            return True
        self._key, self._state, self._scanned = key, "value", 0
        return True

    def _value(self, final: bool) -> bool:
        buf = self._buf
        found, marker = -1, ""
        for candidate in _VALUE_ENDS:
            at = buf.find(candidate, self._scanned)
            if at >= 0 and (found < 0 or at < found):
                found, marker = at, candidate
        if found < 0:
            self._scanned = max(0, len(buf) - _LONGEST_VALUE_END + 1)
            return False
        value = typed_value(buf[:found], self._props.get(self._key))
        pair = json.dumps(self._key, ensure_ascii=False) + ": "
        pair += json.dumps(value, ensure_ascii=False)
        self._add_arguments(("{" if not self._count else ", ") + pair)
        self._count += 1
        self._buf = buf[found + len(marker):] if marker == PARAMETER_END else buf[found:]
        self._state = "params"
        return True

    def _after(self, final: bool) -> bool:
        """After ``</function>``: the ``</tool_call>`` that wraps it, if any."""
        body = self._buf.lstrip()
        if self._wrapped and body.startswith(CLOSE):
            self._buf = body[len(CLOSE):]
        elif self._wrapped and not final and (not body or could_become(body, (CLOSE,))):
            return False
        self._end_call()
        return True

    def _end_call(self) -> None:
        self._state = "text_state"
        self._after_call = True

    def _broken_now(self, reason: str) -> bool:
        """Markup that is not a call: inside ``<tool_call>`` it is held to the closing tag;
        a bare ``<function=`` is given back at once."""
        if not self._wrapped:
            self._flag(reason, self._raw)
            self._state = "text_state"
            return True
        self._reason = reason
        self._state = "broken"
        return True

    def _broken(self, final: bool) -> bool:
        close, opening = self._buf.find(CLOSE), self._buf.find(OPEN)
        if opening >= 0 and (close < 0 or opening < close):
            cut = opening
        elif close >= 0:
            cut = close + len(CLOSE)
        else:
            keep = partial_suffix(self._buf, (OPEN, CLOSE))
            self._raw += self._buf[: len(self._buf) - keep]
            self._buf = self._buf[len(self._buf) - keep:]
            return False
        self._flag(self._reason, self._raw + self._buf[:cut])
        self._buf = self._buf[cut:]
        self._state = "text_state"
        return True

    def _close(self) -> None:
        state = self._state
        if state in ("open", "name", "broken"):
            self._flag("the output ended inside a call", self._raw + self._buf)
        elif state in ("params", "key_state", "value", "skip"):
            self._flag("the output ended inside the call")
        self._buf = ""

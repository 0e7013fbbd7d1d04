"""Chat messages and tools as OpenAI sends them, checked and translated for the serving layer.

Messages keep OpenAI's shape (which chat templates read too): an assistant turn may carry
``tool_calls`` (with ``content`` null), a ``tool`` turn carries ``tool_call_id`` and the result.
Tools become :class:`~triton_mlx.serving.tools.ToolRequest`; every schema is compiled here, so
one the grammar engine cannot enforce is a 400 naming it, before anything runs.
"""

from __future__ import annotations

from typing import Any

from triton_mlx.serving.errors import invalid
from triton_mlx.serving.tools import Tool, ToolRequest, function_tool, read_function_tools

_ROLES = {"system", "developer", "user", "assistant", "tool"}


def parse_tools(data: dict[str, Any]) -> ToolRequest | None:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls``; None when no tools are sent."""
    return read_function_tools(data, _tool, nested=True, parallel_needs_tools=True)


def _tool(value: Any, where: str) -> Tool:
    if not isinstance(value, dict) or value.get("type") != "function":
        raise invalid(f"{where} must be an object with type 'function' (the only tool type "
                      "served)", "tools")
    _only(value, {"type", "function"}, where, "tools")
    function = value.get("function")
    if not isinstance(function, dict):
        raise invalid(f"{where}.function must be an object", "tools")
    _only(function, {"name", "description", "parameters", "strict"}, f"{where}.function",
          "tools")
    return function_tool(f"{where}.function", function.get("name"),
                         function.get("description"), function.get("parameters"),
                         function.get("strict"))


def parse_messages(value: Any) -> list[dict[str, Any]]:
    """OpenAI chat messages, checked, with ``developer`` read as ``system``."""
    if not isinstance(value, list) or not value:
        raise invalid("messages must be a non-empty array", "messages")
    return [_message(m, f"messages[{i}]") for i, m in enumerate(value)]


def _message(message: Any, where: str) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise invalid(f"{where} must be an object", where)
    role = message.get("role")
    if not isinstance(role, str) or role not in _ROLES:  # a list or object is unhashable
        raise invalid(f"{where}.role must be one of {sorted(_ROLES)}", f"{where}.role")
    if message.get("function_call") is not None:
        raise invalid(f"{where}.function_call: the deprecated functions API is not supported; "
                      "use tool_calls", where)
    calls = message.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise invalid(f"{where}.tool_calls must be an array", where)
    if calls and role != "assistant":
        raise invalid(f"{where}.tool_calls is only allowed on assistant messages", where)
    entry: dict[str, Any] = {"role": "system" if role == "developer" else role}
    content = message.get("content")
    if content is None and (role == "assistant"):
        entry["content"] = None if calls else ""
    else:
        entry["content"] = _content(content, where)
    name = message.get("name")
    if name is not None:
        if not isinstance(name, str):
            raise invalid(f"{where}.name must be a string", f"{where}.name")
        entry["name"] = name
    if calls:
        entry["tool_calls"] = _calls(calls, where)
    call_id = message.get("tool_call_id")
    if call_id is not None and not isinstance(call_id, str):  # on any role, as documented
        raise invalid(f"{where}.tool_call_id must be a string", f"{where}.tool_call_id")
    if role == "tool":
        if not isinstance(call_id, str) or not call_id:
            raise invalid(f"{where}.tool_call_id is required on tool messages",
                          f"{where}.tool_call_id")
        entry["tool_call_id"] = call_id
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if value is not None and not isinstance(value, str):
            raise invalid(f"{where}.{key} must be a string", where)
        if value is not None and role == "assistant":  # earlier thinking, for templates
            entry["reasoning_content"] = value
    return entry


def _calls(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise invalid(f"{where}.tool_calls must be an array", where)
    calls = []
    for j, call in enumerate(value):
        at = f"{where}.tool_calls[{j}]"
        if not isinstance(call, dict) or call.get("type", "function") != "function":
            raise invalid(f"{at} must be a function call", where)
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid(f"{at}.function.name must be a string", where)
        arguments = function.get("arguments", "{}")
        if not isinstance(arguments, str):
            raise invalid(f"{at}.function.arguments must be a JSON string", where)
        call_id = call.get("id")
        if call_id is not None and not isinstance(call_id, str):
            raise invalid(f"{at}.id must be a string", where)
        calls.append({"id": call_id, "type": "function",
                      "function": {"name": function["name"], "arguments": arguments}})
    return calls


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise invalid(
                    f"{where}.content[{j}]: only text parts are supported, got {kind!r}",
                    f"{where}.content",
                )
            if not isinstance(part.get("text"), str):
                raise invalid(f"{where}.content[{j}].text must be a string", f"{where}.content")
            texts.append(part["text"])
        return "".join(texts)
    raise invalid(f"{where}.content must be a string or an array of text parts", where)


def _only(value: dict, allowed: set[str], where: str, param: str) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise invalid(f"{where}: unrecognized field {unknown[0]!r}", param)

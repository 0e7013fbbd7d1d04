"""The Responses ``input`` and ``tools``, checked and translated into the serving layer's
neutral chat: OpenAI-chat-like messages (an assistant turn with ``tool_calls``, a ``tool`` turn
with the result) and a :class:`ToolRequest`.

Input items: ``message`` (``type`` may be left out; ``input_text`` or ``output_text`` parts,
``developer`` read as ``system``), ``function_call`` (merged into the assistant turn before
it), ``function_call_output`` (a ``tool`` turn) and ``reasoning`` (its text becomes the next
assistant turn's ``reasoning_content``, for templates that render earlier thinking). Images,
files, audio and built-in tools' items are a 400 naming ``input``.
"""

from __future__ import annotations

from typing import Any

from triton_mlx.serving.errors import invalid
from triton_mlx.serving.tools import Tool, ToolRequest, function_tool, read_function_tools

_ROLES = {"user", "system", "developer", "assistant"}
_TEXT_PARTS = {"input_text", "output_text"}


def read_input(value: Any) -> list[dict[str, Any]]:
    """``input`` (a string or a non-empty array of items) as neutral chat messages."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise invalid("input must be a string or a non-empty array of input items", "input")
    messages: list[dict[str, Any]] = []
    reasoning: list[str] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid(f"{where} must be an object", "input")
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            _call(item, where, _assistant_turn(messages))
        elif kind == "function_call_output":
            messages.append(_call_output(item, where))
        elif kind == "reasoning":
            reasoning.append(_reasoning(item, where))
            continue
        else:
            raise invalid(f"{where}.type {kind!r} is not supported; this server takes "
                          "message, function_call, function_call_output and reasoning items",
                          "input")
        if reasoning and messages[-1]["role"] == "assistant":
            messages[-1]["reasoning_content"] = "\n".join(reasoning)
        reasoning = []
    return messages


def _assistant_turn(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``tool_calls`` of the assistant turn that a function call belongs to."""
    last = messages[-1] if messages else None
    if last is None or last["role"] != "assistant" or "tool_call_id" in last:
        last = {"role": "assistant", "content": None}
        messages.append(last)
    return last.setdefault("tool_calls", [])


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    _only(item, {"type", "role", "content", "id", "status", "phase"}, where)
    role = item.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        raise invalid(f"{where}.role must be one of {sorted(_ROLES)}", "input")
    return {"role": "system" if role == "developer" else role,
            "content": _content(item.get("content"), where)}


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise invalid(f"{where}.content must be a string or an array of text parts", "input")
    texts = []
    for j, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        if kind not in _TEXT_PARTS:
            raise invalid(f"{where}.content[{j}]: only input_text and output_text parts are "
                          f"supported, got {kind!r}", "input")
        if not isinstance(part.get("text"), str):
            raise invalid(f"{where}.content[{j}].text must be a string", "input")
        texts.append(part["text"])
    return "".join(texts)


def _call(item: dict[str, Any], where: str, calls: list[dict[str, Any]]) -> None:
    _only(item, {"type", "call_id", "name", "arguments", "id", "status"}, where)
    for key in ("call_id", "name", "arguments"):
        if not isinstance(item.get(key), str):
            raise invalid(f"{where}.{key} must be a string", "input")
    calls.append({"id": item["call_id"], "type": "function",
                  "function": {"name": item["name"], "arguments": item["arguments"]}})


def _call_output(item: dict[str, Any], where: str) -> dict[str, Any]:
    _only(item, {"type", "call_id", "output", "id", "status"}, where)
    if not isinstance(item.get("call_id"), str) or not item["call_id"]:
        raise invalid(f"{where}.call_id must be a non-empty string", "input")
    output = item.get("output")
    text = output if isinstance(output, str) else _content(output, f"{where}.output")
    return {"role": "tool", "tool_call_id": item["call_id"], "content": text}


def _reasoning(item: dict[str, Any], where: str) -> str:
    """A reasoning item's text: its ``content`` (as this server returns it) or summary."""
    _only(item, {"type", "id", "summary", "content", "encrypted_content", "status"}, where)
    texts = []
    for key, part_type in (("content", "reasoning_text"), ("summary", "summary_text")):
        parts = item.get(key) or []
        if not isinstance(parts, list) or not all(
                isinstance(p, dict) and p.get("type") == part_type
                and isinstance(p.get("text"), str) for p in parts):
            raise invalid(f"{where}.{key} must be an array of {part_type} parts", "input")
        texts += [p["text"] for p in parts]
        if texts:
            break
    return "".join(texts)


def read_tools(data: dict[str, Any]) -> ToolRequest | None:
    """``tools`` (function tools only), ``tool_choice`` and ``parallel_tool_calls``."""
    return read_function_tools(data, _tool, nested=False)


def _tool(value: Any, where: str) -> Tool:
    if not isinstance(value, dict):
        raise invalid(f"{where} must be an object", "tools")
    if value.get("type") != "function":
        raise invalid(f"{where}: tools of type {value.get('type')!r} (built-in tools) are not "
                      "supported; only function tools are", "tools")
    _only(value, {"type", "name", "description", "parameters", "strict"}, where, "tools")
    return function_tool(where, value.get("name"), value.get("description"),
                         value.get("parameters"), value.get("strict"))


def _only(value: dict, allowed: set[str], where: str, param: str = "input") -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise invalid(f"{where}: unrecognized field {unknown[0]!r}", param)

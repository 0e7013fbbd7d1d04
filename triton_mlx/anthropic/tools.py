"""Anthropic's ``tools`` and ``tool_choice`` as the serving layer's :class:`ToolRequest`.

Client tools only (``{"name", "description", "input_schema"}``, ``type`` absent or
``"custom"``); each ``input_schema`` is compiled by the grammar engine here, so one it cannot
enforce is a 400 before anything runs. Anthropic's server tools (web search, code execution,
``bash_*``, ``text_editor_*``...) run on Anthropic's side: a 400 naming them.

``tool_choice``: ``auto`` is the model's choice, ``any`` requires a call to some tool
(``required``), ``tool`` requires that one tool, ``none`` leaves the tools out of the prompt;
all but ``none`` are held by the grammar. ``disable_parallel_tool_use: true`` allows one call.
"""

from __future__ import annotations

from typing import Any

from triton_mlx.anthropic.content import check_cache_control
from triton_mlx.serving.errors import invalid
from triton_mlx.serving.tools import Tool, ToolRequest, function_tool, read_tool_array

_CHOICES = {"auto": "auto", "any": "required", "tool": "function", "none": "none"}


def parse_tools(data: dict[str, Any]) -> ToolRequest | None:
    """``tools`` and ``tool_choice``; None when no tools are sent."""
    raw, choice = data.get("tools"), data.get("tool_choice")
    kind, name, parallel = _choice(choice)
    if raw is None or raw == []:
        if kind not in ("auto", "none"):
            raise invalid(f"tool_choice: {choice['type']!r} requires tools", "tool_choice")
        return None
    tools = read_tool_array(raw, _tool)
    if name is not None and name not in {t.name for t in tools}:
        raise invalid(f"tool_choice: names the tool {name!r}, which is not in tools",
                      "tool_choice")
    return ToolRequest(tools, kind, name, parallel)


def _tool(value: Any, where: str) -> Tool:
    if not isinstance(value, dict):
        raise invalid(f"{where}: must be an object", "tools")
    kind = value.get("type")
    if kind not in (None, "custom"):
        raise invalid(f"{where}: the tool type {kind!r} is one of Anthropic's server tools, "
                      "which this server does not run; send client tools (name, "
                      "input_schema)", "tools")
    unknown = sorted(set(value) - {"type", "name", "description", "input_schema",
                                   "cache_control", "strict"})
    if unknown:
        raise invalid(f"{where}: unrecognized field {unknown[0]!r}", "tools")
    check_cache_control(value, where)
    schema = value.get("input_schema")
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise invalid(f"{where}.input_schema: must be a JSON schema of type 'object'", "tools")
    return function_tool(where, value.get("name"), value.get("description"), schema,
                         value.get("strict"), name_length=128, schema_field="input_schema")


def _choice(value: Any) -> tuple[Any, str | None, bool]:
    """(ToolRequest choice, the named tool, parallel calls allowed)."""
    if value is None:
        return "auto", None, True
    if not isinstance(value, dict) or not isinstance(value.get("type"), str) \
            or value["type"] not in _CHOICES:
        raise invalid("tool_choice: must be an object with type 'auto', 'any', 'tool' or "
                      "'none'", "tool_choice")
    kind = value["type"]
    allowed = {"type", "disable_parallel_tool_use"} | ({"name"} if kind == "tool" else set())
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise invalid(f"tool_choice: unrecognized field {unknown[0]!r}", "tool_choice")
    disable = value.get("disable_parallel_tool_use")
    if disable is not None and not isinstance(disable, bool):
        raise invalid("tool_choice.disable_parallel_tool_use: must be a boolean",
                      "tool_choice")
    name = None
    if kind == "tool":
        name = value.get("name")
        if not isinstance(name, str) or not name:
            raise invalid("tool_choice.name: required with type 'tool'", "tool_choice")
    return _CHOICES[kind], name, not disable

"""Tools in the prompt: what a request offers the model, and how its chat reaches the template.

Front-ends translate their protocol's tool definitions and tool-call history into the shapes
here (OpenAI's, which transformers' chat templates read too): :class:`Tool` and
:class:`ToolRequest` for what is offered, and messages where an assistant turn carries
``tool_calls`` (arguments as an object, as templates expect) and a ``tool`` turn carries the
result. :func:`chat_for_template` then gives the template what it can render:

- a template that reads ``tools`` gets them as they are (its model was trained on that format);
- any other template gets the **default tool format**: the tool schemas and instructions in the
  system turn, earlier calls written into the assistant's text as
  ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` and results as a user turn wrapped
  in ``<tool_response>``, so tools work on every chat model (the calls parse as the ``hermes``
  format).

``tool_choice: "none"`` leaves the tools out of the prompt (vLLM's
``--exclude-tools-when-tool-choice-none``): the model is asked for text, and gets no reason to
write a call we would not parse.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from triton_mlx.serving.errors import invalid
from triton_mlx.serving.structured import check_schema
from triton_mlx.serving.tool_calls.detect import uses_tools

logger = logging.getLogger("triton_mlx.serving")

DEFAULT_FORMAT = "default"
"""The tool format of models whose chat template has no tool support (calls as hermes')."""

ToolChoice = Literal["auto", "none", "required", "function"]

DEFAULT_SYSTEM_PROMPT = """\
You may call one or more functions to help with the user's request. The functions, as JSON \
schemas, are:
<tools>
{tools}
</tools>
To call a function, reply with a JSON object holding its name and arguments inside \
<tool_call></tool_call> tags, one per call:
<tool_call>
{{"name": "<function name>", "arguments": {{<arguments as a JSON object>}}}}
</tool_call>
A function's result comes back inside <tool_response></tool_response> tags."""


@dataclass(frozen=True)
class Tool:
    """One function the model may call."""

    name: str
    parameters: dict[str, Any]
    """A JSON schema for the arguments object."""
    description: str | None = None
    strict: bool = False

    def definition(self) -> dict[str, Any]:
        """OpenAI's tool object, the shape chat templates read from ``tools``."""
        function: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            function["description"] = self.description
        function["parameters"] = self.parameters
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolRequest:
    """The tools one request offers and what it asks of them."""

    tools: tuple[Tool, ...]
    choice: ToolChoice = "auto"
    function: str | None = None
    """The one function a named ``tool_choice`` requires."""
    parallel: bool = True
    """More than one call allowed (``parallel_tool_calls``)."""

    @property
    def calls_expected(self) -> bool:
        """Calls are to be parsed from the output (any choice but ``none``)."""
        return self.choice != "none" and bool(self.tools)

    def callable_tools(self) -> tuple[Tool, ...]:
        """The tools the grammar lets the model call: the named one, or all."""
        if self.choice == "function":
            return tuple(t for t in self.tools if t.name == self.function)
        return self.tools


@dataclass
class TemplateChat:
    """What a chat template receives for one request."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


def template_reads_tools(template_source: str | None) -> bool:
    """Whether a chat template's code reads the ``tools`` variable (so has tool support)."""
    return bool(template_source) and uses_tools(template_source)


def chat_for_template(
    messages: list[dict[str, Any]], tools: ToolRequest | None, *, native: bool
) -> TemplateChat:
    """The messages (and tools) as the model's template should see them: as they are when the
    template has tool support (``native``), else in the default tool format."""
    offered = tools is not None and tools.choice != "none" and bool(tools.tools)
    if native:
        definitions = [t.definition() for t in tools.tools] if offered and tools else None
        return TemplateChat(_arguments_as_objects(messages), definitions)
    converted = _default_format_history(messages)
    if offered and tools:
        converted = _with_tool_system_prompt(converted, tools.tools)
    return TemplateChat(converted)


def format_default_call(name: str, arguments: Any) -> str:
    """One call as the default format writes it."""
    call = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>\n{call}\n</tool_call>"


def _arguments_as_objects(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Assistant ``tool_calls`` with their arguments parsed: OpenAI sends them as JSON text,
    and templates (as transformers documents them) expect an object. vLLM does the same."""
    result = []
    for message in messages:
        calls = message.get("tool_calls")
        if calls:
            message = {**message, "tool_calls": [_parsed_call(c) for c in calls]}
        result.append(message)
    return result


def _parsed_call(call: dict[str, Any]) -> dict[str, Any]:
    function = dict(call.get("function") or {})
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            function["arguments"] = json.loads(arguments)
        except ValueError:
            pass  # a template may still print it as text
    return {**call, "function": function}


def _default_format_history(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Calls written into the assistant's text; results (consecutive ones merged) as one
    user turn each."""
    result: list[dict[str, Any]] = []
    for message in _arguments_as_objects(messages):
        role = message.get("role")
        if role == "assistant" and message.get("tool_calls"):
            parts = [message["content"]] if message.get("content") else []
            parts += [format_default_call(c["function"].get("name"),
                                          c["function"].get("arguments"))
                      for c in message["tool_calls"]]
            result.append({"role": "assistant", "content": "\n".join(parts)})
        elif role == "tool":
            response = f"<tool_response>\n{message.get('content') or ''}\n</tool_response>"
            previous = result[-1] if result else None
            if previous is not None and previous.get("_tool_results"):
                previous["content"] += "\n" + response
            else:
                result.append({"role": "user", "content": response, "_tool_results": True})
        else:
            result.append({k: v for k, v in message.items() if k != "tool_calls"})
    for message in result:
        message.pop("_tool_results", None)
    return result


def _with_tool_system_prompt(messages: list[dict[str, Any]],
                             tools: tuple[Tool, ...]) -> list[dict[str, Any]]:
    listing = "\n".join(json.dumps(t.definition(), ensure_ascii=False) for t in tools)
    instructions = DEFAULT_SYSTEM_PROMPT.format(tools=listing)
    if messages and messages[0].get("role") == "system":
        first = messages[0]
        content = first.get("content") or ""
        return [{**first, "content": f"{content}\n\n{instructions}" if content
                 else instructions}, *messages[1:]]
    return [{"role": "system", "content": instructions}, *messages]


# --- reading a protocol's tools (every front-end's shapes hold the same fields) ----------

MAX_TOOLS = 128
"""Tools one request may offer."""


def read_tool_array(raw: Any, read_one: Callable[[Any, str], Tool]) -> tuple[Tool, ...]:
    """A request's ``tools`` array, each entry read by the protocol's ``read_one(value,
    where)``: at most :data:`MAX_TOOLS`, names unique; errors name ``tools``."""
    if not isinstance(raw, list):
        raise invalid("tools must be an array of tool objects", "tools")
    if len(raw) > MAX_TOOLS:
        raise invalid(f"tools may hold at most {MAX_TOOLS} tools", "tools")
    tools = tuple(read_one(t, f"tools[{i}]") for i, t in enumerate(raw))
    names = [t.name for t in tools]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise invalid(f"tools: the name {duplicate!r} appears more than once", "tools")
    return tools


def function_tool(where: str, name: Any, description: Any, parameters: Any, strict: Any = None,
                  *, name_length: int = 64, schema_field: str = "parameters") -> Tool:
    """One function tool from its fields as a protocol sent them (``where`` locates it in the
    request, e.g. ``tools[2].function``): a name of letters, digits, ``_`` and ``-``, an
    optional description, a JSON schema for the arguments (absent: no arguments) that the
    grammar engine compiles, and ``strict``. Errors name ``tools``.

    A ``strict`` tool's schema must compile whole. Any other tool's arguments are held to its
    schema as far as the grammar engine implements it: keywords it lacks (``propertyNames``,
    which Claude Code's tools use, ...) are not enforced, and a warning says which. That is
    what non-strict tools promise in OpenAI's and Anthropic's APIs too."""
    if not isinstance(name, str) or not re.fullmatch(rf"[A-Za-z0-9_-]{{1,{name_length}}}", name):
        raise invalid(f"{where}.name must be 1-{name_length} letters, digits, '_' or '-'",
                      "tools")
    if description is not None and not isinstance(description, str):
        raise invalid(f"{where}.description must be a string", "tools")
    if strict is not None and not isinstance(strict, bool):
        raise invalid(f"{where}.strict must be a boolean", "tools")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    skipped = check_schema(parameters, f"{where}.{schema_field}", "tools", lenient=not strict)
    if skipped:
        logger.warning("tool %r: not enforced by the grammar: %s", name, "; ".join(skipped))
    return Tool(name, parameters, description, bool(strict))


def read_function_tools(data: dict[str, Any], read_one: Callable[[Any, str], Tool], *,
                        nested: bool, parallel_needs_tools: bool = False) -> ToolRequest | None:
    """OpenAI's ``tools``, ``tool_choice`` and ``parallel_tool_calls``; None when no tools are
    sent. Chat completions and Responses differ only in nesting: ``read_one`` reads a tool, and
    ``nested`` says a named choice is ``{"function": {"name"}}`` (chat) rather than
    ``{"name"}`` (Responses). ``parallel_needs_tools``: that flag alone is a 400."""
    raw, choice = data.get("tools"), data.get("tool_choice")
    parallel = data.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise invalid("parallel_tool_calls must be a boolean", "parallel_tool_calls")
    if raw is None or raw == []:
        if choice not in (None, "none", "auto"):
            raise invalid("tool_choice requires tools", "tool_choice")
        if parallel is not None and parallel_needs_tools:
            raise invalid("parallel_tool_calls is only allowed with tools",
                          "parallel_tool_calls")
        return None
    tools = read_tool_array(raw, read_one)
    kind, function = _function_choice(choice, {t.name for t in tools}, nested)
    return ToolRequest(tools, kind, function, True if parallel is None else parallel)


def _function_choice(value: Any, names: set[str], nested: bool) -> tuple[ToolChoice, str | None]:
    if value is None:
        return "auto", None
    if value in ("auto", "none", "required"):
        return value, None
    field = "tool_choice.function.name" if nested else "tool_choice.name"
    shape = "'function': {'name': ...}" if nested else "'name': ..."
    if isinstance(value, dict) and value.get("type") == "function":
        holder = value.get("function") if nested else value
        name = holder.get("name") if isinstance(holder, dict) else None
        if not isinstance(name, str):
            raise invalid(f"{field} must be a string", "tool_choice")
        if name not in names:
            raise invalid(f"tool_choice names the function {name!r}, which is not in tools",
                          "tool_choice")
        return "function", name
    raise invalid("tool_choice must be 'auto', 'none', 'required' or "
                  f"{{'type': 'function', {shape}}}", "tool_choice")

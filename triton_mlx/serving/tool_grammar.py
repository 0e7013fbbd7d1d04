"""The grammar that keeps a chat's output to what its request allows: tool calls, a format,
and a reasoning block before either.

Every tool call is enforced in the model's own call format (the format its parser reads), so a
call's name is one of the offered functions and its arguments validate against that function's
schema:

- ``required``: the output is calls only (one when ``parallel_tool_calls`` is false); a named
  function: one call to it;
- ``auto``: free text, where the call marker (``<tool_call>``, ``[TOOL_CALLS]``) is a trigger: once
  the model writes it, the rest of the call is held to the grammar (llguidance's lazy lexemes, as
  its structural tags build them). Formats without a marker (Llama's JSON, pythonic) choose at the
  first character: a reply that starts like a call is a call;
- with a ``response_format`` too, the text alternative is that format.

Reasoning models think first: a ``<think>...</think>`` block (already open when the prompt
opened it) precedes what the grammar holds, and is free text.

The grammars are llguidance's: Lark with ``%json`` schemas, and sub-grammars referenced by name.
Markers that are special tokens of the model's vocabulary are written as token references.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from triton_mlx.serving.tools import Tool, ToolRequest

_TEXT = "TAG_TEXT: /(.|\\n)*/"


class ToolGrammarError(ValueError):
    """The request's tools cannot be enforced in this model's call format."""


def chat_grammar(
    *,
    tools: ToolRequest | None,
    tool_format: str | None,
    text_grammar: str | None,
    reasoning: tuple[str, str, bool] | None,
    token_id: Callable[[str], int | None],
    native_mistral_args: bool = False,
) -> str | None:
    """The whole grammar for one chat request, or None when nothing is constrained.

    ``text_grammar`` is the response format's grammar (llguidance's serialized form);
    ``reasoning`` is (open tag, close tag, already open in the prompt) for reasoning models;
    ``token_id(marker)`` is the id of the special token a marker is, or None (plain text).
    """
    calls = tools is not None and tools.calls_expected
    if not calls and text_grammar is None:
        return None
    side: list[dict[str, Any]] = []
    if text_grammar is not None:
        side.append({**_first_grammar(text_grammar), "name": "text_format"})
    lines = ["%llguidance {}"]
    body = "@text_format"
    if calls:
        assert tools is not None and tool_format is not None
        # a named function is called once (as vLLM and OpenAI do)
        parallel = tools.parallel and tools.choice != "function"
        spec = _FORMATS[tool_format](tools.callable_tools(), token_id, parallel,
                                     native_mistral_args)
        lines += spec.rules
        if tools.choice in ("required", "function"):
            body = "calls"
        elif text_grammar is not None:
            body = "@text_format | calls"
        elif spec.trigger is not None:
            lines.append(f"call_trig[lazy]: TAG_TEXT {spec.trigger}")
            lines.append("tagged: call_trig call_rest")
            lines.append(_TEXT)
            body = "tagged* TAG_TEXT" if parallel else "TAG_TEXT | tagged"
        else:
            lines.append(f"PLAIN: /{spec.plain_text}/")
            body = "PLAIN | calls"
    lines.insert(1, f"answer: {body}")
    lines.insert(1, _reasoning_start(reasoning, token_id, lines))
    return json.dumps({"grammars": [{"lark_grammar": "\n".join(lines)}, *side]})


def _reasoning_start(reasoning: tuple[str, str, bool] | None,
                     token_id: Callable[[str], int | None], lines: list[str]) -> str:
    if reasoning is None:
        return "start: answer"
    open_tag, close_tag, inside = reasoning
    lines.append(f"think_end[lazy]: /(.|\\n)*/ {_literal(close_tag, token_id)}")
    lines.append("SPACE: /[ \\t\\r\\n]*/")
    if inside:
        return "start: think_end SPACE answer"
    # Required, not optional: text that may start either way lets a call marker inside the
    # reasoning end the reasoning (a lazy lexeme wins), so a reasoning model is held to think
    # first; a prompt that closed the block already (thinking turned off) has no reasoning.
    return f"start: SPACE {_literal(open_tag, token_id)} think_end SPACE answer"


def _first_grammar(grammar: str) -> dict[str, Any]:
    """llguidance's serialized grammar (JSON with ``grammars``) or bare Lark, as one entry."""
    if grammar.lstrip().startswith("{"):
        entries = json.loads(grammar)["grammars"]
        if len(entries) != 1:
            raise ToolGrammarError("a response format of several grammars cannot be combined "
                                   "with tools")
        return {k: v for k, v in entries[0].items() if k != "name" and v is not None}
    return {"lark_grammar": grammar}


def _literal(text: str, token_id: Callable[[str], int | None]) -> str:
    """A marker as the grammar matches it: the special token it is, or its text."""
    special = token_id(text)
    return f"<[{special}]>" if special is not None else json.dumps(text)


class _Spec:
    """One format's rules. ``calls`` is the calls of one reply (one, or several when parallel
    calls are allowed); formats with a ``trigger`` also define ``call_rest``, one call after its
    trigger; the others define ``plain_text``, the regex of a reply that is not a call."""

    def __init__(self, rules: list[str], trigger: str | None = None,
                 plain_text: str = "") -> None:
        self.rules = rules
        self.trigger = trigger
        self.plain_text = plain_text


Special = Callable[[str], int | None]


def _alternatives(name: str, tools: tuple[Tool, ...],
                  build: Callable[[int, Tool], str]) -> list[str]:
    rules = [f"{name}: {' | '.join(f'{name}_{i}' for i in range(len(tools)))}"]
    rules += [f"{name}_{i}: {build(i, tool)}" for i, tool in enumerate(tools)]
    return rules


def _repeated(one: str, separator: str, parallel: bool) -> str:
    return f"{one} ({json.dumps(separator)} {one})*" if parallel else one


def _schema(value: Any, lenient: bool = False) -> str:
    """``%json`` for a schema; ``lenient`` (a tool that is not ``strict``): keywords the
    grammar engine does not implement are not enforced, the rest is (``serving.tools``)."""
    schema = value if isinstance(value, dict) else {"type": "object"}
    if lenient:
        schema = {**schema, "x-guidance": {**schema.get("x-guidance", {}), "lenient": True}}
    return "%json " + json.dumps(schema)


def _lenient(tools: tuple[Tool, ...]) -> bool:
    return not all(t.strict for t in tools)


def _hermes(tools: tuple[Tool, ...], token_id: Special, parallel: bool,
            _mistral_args: bool) -> _Spec:
    """``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``, one per call."""
    trigger = _literal("<tool_call>", token_id)
    end = _literal("</tool_call>", token_id)

    def rest(_: int, tool: Tool) -> str:
        head = json.dumps('\n{"name": ' + json.dumps(tool.name) + ', "arguments": ')
        return f'{head} {_schema(tool.parameters, not tool.strict)} "}}\\n" {end}'

    return _Spec([f"calls: {_repeated('call', chr(10), parallel)}",
                  f"call: {trigger} call_rest", *_alternatives("call_rest", tools, rest)],
                 trigger)


def _qwen3_coder(tools: tuple[Tool, ...], token_id: Special, parallel: bool,
                 _mistral_args: bool) -> _Spec:
    """``<tool_call>\\n<function=NAME>\\n<parameter=KEY>\\nvalue\\n</parameter>\\n...``:
    string values are raw text, others JSON; parameters in the schema's order."""
    trigger = _literal("<tool_call>", token_id)
    end = _literal("</tool_call>", token_id)
    rules = ['value_text[lazy]: /(.|\\n)*\\n<\\/parameter>\\n/',
             'param_any: "<parameter=" /[^>\\n]+/ ">\\n" value_text']

    def rest(i: int, tool: Tool) -> str:
        properties = (tool.parameters or {}).get("properties")
        if not isinstance(properties, dict):  # a free-form object: any parameters
            params = "param_any*"
        else:
            required = set((tool.parameters or {}).get("required") or [])
            parts = []
            for j, (key, schema) in enumerate(properties.items()):
                rule = f"p_{i}_{j}"
                opening = json.dumps(f"<parameter={key}>\n")
                if isinstance(schema, dict) and schema.get("type") == "string":
                    rules.append(f"{rule}: {opening} value_text")
                else:
                    rules.append(f'{rule}: {opening} {_schema(schema, not tool.strict)} '
                                 '"\\n</parameter>\\n"')
                parts.append(rule if key in required else f"{rule}?")
            params = " ".join(parts)
        name = json.dumps(f"\n<function={tool.name}>\n")
        return f'{name} {params} "</function>\\n" {end}'

    call_rules = _alternatives("call_rest", tools, rest)
    return _Spec([f"calls: {_repeated('call', chr(10), parallel)}",
                  f"call: {trigger} call_rest", *call_rules, *rules], trigger)


def _call_object_schema(tools: tuple[Tool, ...], arguments_key: str) -> dict[str, Any]:
    options = [{"type": "object",
                "properties": {"name": {"const": t.name},
                               arguments_key: t.parameters or {"type": "object"}},
                "required": ["name", arguments_key], "additionalProperties": False}
               for t in tools]
    return options[0] if len(options) == 1 else {"anyOf": options}


def _llama3_json(tools: tuple[Tool, ...], _token_id: Special, parallel: bool,
                 _mistral_args: bool) -> _Spec:
    """The whole reply is ``{"name": ..., "parameters": {...}}`` (several joined by "; ")."""
    schema = _call_object_schema(tools, "parameters")
    return _Spec([f"calls: {_repeated('call', '; ', parallel)}",
                  f"call: {_schema(schema, _lenient(tools))}"],
                 plain_text="([ \\t\\r\\n]*[^{ \\t\\r\\n](.|\\n)*)?")


def _mistral(tools: tuple[Tool, ...], token_id: Special, parallel: bool,
             native_args: bool) -> _Spec:
    """``[TOOL_CALLS][{...}, ...]``, or ``[TOOL_CALLS]NAME[ARGS]{...}`` per call when the
    model's template writes that newer form."""
    trigger = _literal("[TOOL_CALLS]", token_id)
    if native_args:
        args = _literal("[ARGS]", token_id)

        def rest(_: int, tool: Tool) -> str:
            return f"{json.dumps(tool.name)} {args} {_schema(tool.parameters, not tool.strict)}"

        return _Spec([f"calls: {_repeated('call', '', parallel)}",
                      f"call: {trigger} call_rest", *_alternatives("call_rest", tools, rest)],
                     trigger)
    schema: dict[str, Any] = {"type": "array", "items": _call_object_schema(tools, "arguments"),
                              "minItems": 1}
    if not parallel:
        schema["maxItems"] = 1
    return _Spec(["calls: call", f"call: {trigger} call_rest",
                  f"call_rest: {_schema(schema, _lenient(tools))}"], trigger)


def _pythonic(tools: tuple[Tool, ...], _token_id: Special, parallel: bool,
              _mistral_args: bool) -> _Spec:
    """``[name(key=value, ...), ...]`` as the whole reply; values as JSON literals (strings,
    numbers, lists and objects read the same in Python; the parser also takes true/false)."""
    rules = []

    def one(i: int, tool: Tool) -> str:
        properties = (tool.parameters or {}).get("properties") or {}
        required = set((tool.parameters or {}).get("required") or [])
        args = []
        for j, (key, schema) in enumerate(properties.items()):
            rules.append(f"a_{i}_{j}: {json.dumps(key + '=')} "
                         f"{_schema(schema, not tool.strict)}")
            args.append((f"a_{i}_{j}", key in required))
        return f"{json.dumps(tool.name + '(')} {_keyword_arguments(args)} \")\""

    call_rules = _alternatives("call", tools, one)
    return _Spec([f'calls: "[" {_repeated("call", ", ", parallel)} "]"', *call_rules, *rules],
                 plain_text="([ \\t\\r\\n]*[^\\[ \\t\\r\\n](.|\\n)*)?")


def _keyword_arguments(args: list[tuple[str, bool]]) -> str:
    """Keyword arguments in schema order, optional ones optional, separated by ", "."""
    alternatives = []
    for start, (rule, _) in enumerate(args):  # args[start] is the first one present
        if any(needed for _, needed in args[:start]):
            break
        tail = " ".join(f'(", " {r})' + ("" if needed else "?") for r, needed in args[start + 1:])
        alternatives.append(f"{rule} {tail}".strip())
    if not any(needed for _, needed in args):
        alternatives.append('""')
    return "(" + " | ".join(f"({a})" for a in alternatives) + ")"


_FORMATS: dict[str, Callable[[tuple[Tool, ...], Special, bool, bool], _Spec]] = {
    "hermes": _hermes,
    "default": _hermes,
    "qwen3_coder": _qwen3_coder,
    "llama3_json": _llama3_json,
    "mistral": _mistral,
    "pythonic": _pythonic,
}

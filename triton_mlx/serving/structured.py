"""Structured output: what a request asks the text to be, as one llguidance grammar.

Three spellings reach here: OpenAI's ``response_format`` (``text``, ``json_object``,
``json_schema`` with or without ``strict``: both are enforced), and vLLM's
``structured_outputs`` (``json``, ``regex``, ``choice`` or ``grammar``: Lark or llama.cpp's
GBNF), which the OpenAI routes and Triton's ``sampling_parameters`` both take. Each becomes an
llguidance grammar that the engine enforces token by token. A grammar llguidance cannot
compile, or compiles only by ignoring part of it (an unknown ``format``, an unsupported
keyword), is a 400 naming the parameter with llguidance's reason: a constraint is never
relaxed quietly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any

import llguidance

from triton_mlx.serving.errors import invalid

STRUCTURED_OUTPUT_KINDS = ("json", "regex", "choice", "grammar")


def response_format_grammar(value: Any, param: str = "response_format") -> str | None:
    """The grammar for OpenAI's ``response_format`` (None for plain text)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise invalid(f"{param} must be an object with a type", param)
    kind = value["type"]
    if kind == "text":
        _only(value, {"type"}, param)
        return None
    if kind == "json_object":
        _only(value, {"type"}, param)
        return _compiled(llguidance.LLMatcher.grammar_from_json_schema, {"type": "object"}, param)
    if kind == "json_schema":
        _only(value, {"type", "json_schema"}, param)
        spec = value.get("json_schema")
        if not isinstance(spec, dict):
            raise invalid(f"{param}.json_schema must be an object", param)
        _only(spec, {"name", "description", "schema", "strict"}, f"{param}.json_schema", param)
        if not isinstance(spec.get("name"), str) or not spec["name"]:
            raise invalid(f"{param}.json_schema.name is required (a non-empty string)", param)
        for key, kinds in (("description", str), ("strict", bool)):
            if spec.get(key) is not None and not isinstance(spec[key], kinds):
                raise invalid(f"{param}.json_schema.{key} has the wrong type", param)
        schema = spec.get("schema", {})  # OpenAI: no schema means any JSON
        return _schema_grammar(schema, param)
    raise invalid(f"{param}.type must be 'text', 'json_object' or 'json_schema', got "
                  f"{kind!r}", param)


def structured_outputs_grammar(value: Any, param: str = "structured_outputs") -> str | None:
    """The grammar for vLLM's ``structured_outputs``: exactly one of json, regex, choice or
    grammar. On Triton the object may arrive as JSON text."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise invalid(f"{param} must be an object (or its JSON text)", param) from None
    if not isinstance(value, dict):
        raise invalid(f"{param} must be an object", param)
    _only(value, set(STRUCTURED_OUTPUT_KINDS), param)
    given = list(value)
    if len(given) != 1 or value[given[0]] is None:
        raise invalid(f"{param} needs exactly one of {', '.join(STRUCTURED_OUTPUT_KINDS)}",
                      param)
    kind, spec = given[0], value[given[0]]
    if kind == "json":
        if isinstance(spec, str):
            try:
                spec = json.loads(spec)
            except (ValueError, RecursionError):
                raise invalid(f"{param}.json is not a JSON schema", param) from None
        return _schema_grammar(spec, param)
    if kind == "choice":
        if not isinstance(spec, list) or not spec or not all(isinstance(c, str) and c
                                                             for c in spec):
            raise invalid(f"{param}.choice must be a non-empty list of non-empty strings",
                          param)
        lark = "start: " + " | ".join(json.dumps(c) for c in spec)
        return _compiled(llguidance.LLMatcher.grammar_from_lark, lark, param)
    if not isinstance(spec, str) or not spec:
        raise invalid(f"{param}.{kind} must be a non-empty string", param)
    if kind == "regex":
        return _compiled(llguidance.LLMatcher.grammar_from_regex, spec, param)
    return _compiled(partial(llguidance.grammar_from, "grammar"), spec, param)  # Lark or GBNF


def _schema_grammar(schema: Any, param: str) -> str:
    if isinstance(schema, bool) or not isinstance(schema, dict):
        raise invalid(f"{param}: the JSON schema must be an object", param)
    return _compiled(llguidance.LLMatcher.grammar_from_json_schema, schema, param)


def check_schema(schema: Any, where: str, param: str, *, lenient: bool = False) -> list[str]:
    """A 400 naming ``param`` unless ``schema`` (found at ``where``) compiles whole. With
    ``lenient``, keywords llguidance does not implement are allowed (not enforced): their
    warnings are returned, for the caller to log; anything else still fails."""
    if isinstance(schema, bool) or not isinstance(schema, dict):
        raise invalid(f"{where} must be a JSON schema object", param)
    if not lenient:
        _compiled(llguidance.LLMatcher.grammar_from_json_schema, schema, param, where)
        return []
    relaxed = {**schema, "x-guidance": {**schema.get("x-guidance", {}), "lenient": True}}
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(relaxed)
        failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    except Exception as exc:  # noqa: BLE001 - a third-party compiler on client input
        raise invalid(f"{where}: the schema cannot be compiled: {exc}", param) from None
    if failed:
        raise invalid(f"{where}: the schema cannot be compiled: {'; '.join(messages)}", param)
    return messages


def _compiled(build: Callable[[Any], str], spec: Any, param: str,
              where: str | None = None) -> str:
    """The grammar ``build`` makes of ``spec`` if llguidance compiles it whole; a 400 with
    its reason otherwise. The spec is the client's: whatever the compiler raises on it (a
    GBNF it cannot convert, text that is not UTF-8) is the client's error too."""
    try:
        grammar = build(spec)
        failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    except Exception as exc:  # noqa: BLE001 - a third-party compiler on client input
        raise invalid(f"{where or param}: the constraint cannot be enforced as given: {exc}",
                      param) from None
    if failed or messages:
        reason = "; ".join(messages) or "the grammar does not compile"
        raise invalid(f"{where or param}: the constraint cannot be enforced as given: {reason}",
                      param)
    return grammar


def _only(value: dict, allowed: set[str], where: str, param: str | None = None) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise invalid(f"{where}: unrecognized field {unknown[0]!r}", param or where)

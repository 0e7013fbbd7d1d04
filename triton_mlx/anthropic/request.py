"""Validation of a ``POST /v1/messages`` (or ``count_tokens``) body into plain parameters.

Every field is checked, and a failure is a 400 that names it; a field we do not implement is
refused, never accepted and ignored. Sampling goes through the serving layer's parameter table
(``temperature`` within Anthropic's 0-1, ``top_p``, ``top_k``, ``max_tokens`` as the
completion budget, ``stop_sequences`` as stop strings).

Decisions where Anthropic's API is silent for us (the model decides some; see
:func:`template_kwargs`):

- ``max_tokens`` is required, as Anthropic requires it (not on ``count_tokens``).
- ``thinking``: ``{"type": "enabled", "budget_tokens": n}`` (n >= 1024 and below
  ``max_tokens``, Anthropic's rules) on a reasoning model; on any other model a 400 naming
  ``thinking``. ``{"type": "disabled"}`` is accepted everywhere: on a reasoning model whose
  template reads ``enable_thinking`` it turns thinking off, on a reasoning model that cannot
  turn it off it is a 400, elsewhere it changes nothing. Without ``thinking`` a reasoning model
  reasons as its template makes it, and its reasoning comes back as ``thinking`` blocks, never
  mixed into the text. ``budget_tokens`` is not a separate cap: reasoning and answer share
  ``max_tokens``, which is a hard limit (Anthropic calls the budget a target, too).
- ``thinking: {"type": "adaptive"}`` (Claude Code's default: the model decides) is accepted
  everywhere: a reasoning model reasons as its template makes it, any other does not.
- ``output_config.effort`` becomes the ``reasoning_effort`` template variable when the model's
  chat template reads it. On any other model, Anthropic's default ``high`` (which Claude Code
  always sends) is accepted and changes nothing; another value is a 400 naming it.
- ``context_management``: edits that change nothing (``clear_thinking`` keeping all) are
  accepted; any other edit is a 400.
- ``output_config.format`` (``json_schema``) is compiled by the grammar engine and enforced on
  every token of the text; a schema it cannot compile is a 400.
- ``cache_control`` (top level, and on blocks: ``content.py``) is accepted: the prefix cache
  reuses prompts without marks.
- ``metadata.user_id`` is accepted (a string, at most 256 characters) and changes nothing
  about the output: Anthropic's semantics too. It is not logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from triton_mlx.anthropic.content import check_cache_control, parse_messages, parse_system
from triton_mlx.anthropic.tools import parse_tools
from triton_mlx.repository.served import ChatModel
from triton_mlx.serving.errors import RequestError, invalid
from triton_mlx.serving.parameters import CHAT, MAX_STOP_STRINGS, Dialect, GenerationParams
from triton_mlx.serving.parameters import read_parameters as read_table
from triton_mlx.serving.structured import response_format_grammar
from triton_mlx.serving.tools import ToolRequest

EFFORTS = ("low", "medium", "high", "max")
MIN_THINKING_BUDGET = 1024
_COMMON = {"model", "messages", "system", "tools", "tool_choice", "thinking", "output_config",
           "context_management"}
DEFAULT_EFFORT = "high"
"""Anthropic's default effort: sent by Claude Code on every request; on a model whose template
has no ``reasoning_effort`` it asks for nothing that model does not already do."""
_MESSAGES = _COMMON | {"max_tokens", "stop_sequences", "stream", "metadata", "temperature",
                       "top_p", "top_k", "cache_control"}
_DIALECT = Dialect(CHAT)


@dataclass
class MessagesParams:
    """A validated Messages request (or ``count_tokens`` request, without generation)."""

    model: str
    messages: list[dict[str, Any]]
    generation: GenerationParams
    stream: bool = False
    tools: ToolRequest | None = None
    thinking: str | None = None
    """None (not sent), "enabled", "adaptive" or "disabled"."""
    effort: str | None = None
    template_kwargs: dict[str, Any] = field(default_factory=dict)


def parse_request(body: Any, *, count_only: bool = False) -> MessagesParams:
    """Check every field of a Messages body; ``count_only`` for ``count_tokens``."""
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    allowed = _COMMON if count_only else _MESSAGES
    for key in body:
        if key not in allowed:
            raise invalid(f"{key}: unrecognized request field", key)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model: required, a non-empty string", "model")
    messages = parse_messages(body.get("messages"))
    system = parse_system(body.get("system"))
    if system is not None:
        messages = [{"role": "system", "content": system}, *messages]
    generation = GenerationParams() if count_only else _generation(body)
    thinking = _thinking(body.get("thinking"), generation.max_tokens)
    _context_management(body.get("context_management"))
    grammar, effort = _output_config(body.get("output_config"))
    generation.grammar = grammar
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid("stream: must be a boolean", "stream")
    _metadata(body.get("metadata"))
    check_cache_control(body, "request")
    return MessagesParams(model, messages, generation, bool(stream), parse_tools(body),
                          thinking, effort)


def _generation(body: dict[str, Any]) -> GenerationParams:
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise invalid("max_tokens: required", "max_tokens")
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool) and not (
            0 <= temperature <= 1):
        raise invalid(f"temperature: must be between 0 and 1, got {temperature}",
                      "temperature")
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise invalid("stop_sequences: must be an array of non-empty strings",
                          "stop_sequences")
        if len(stops) > MAX_STOP_STRINGS:
            raise invalid(f"stop_sequences: at most {MAX_STOP_STRINGS} strings",
                          "stop_sequences")
    values = {k: body.get(k) for k in ("max_tokens", "temperature", "top_p", "top_k")}
    try:
        return read_table({**values, "stop": stops}, _DIALECT)
    except RequestError as exc:
        if exc.param == "stop":
            raise invalid("stop_sequences: " + exc.message, "stop_sequences") from None
        raise


def _thinking(value: Any, max_tokens: int | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in ("enabled", "disabled",
                                                                 "adaptive"):
        raise invalid("thinking: must be {\"type\": \"enabled\", \"budget_tokens\": n}, "
                      "{\"type\": \"adaptive\"} or {\"type\": \"disabled\"}", "thinking")
    if value["type"] in ("disabled", "adaptive"):
        if set(value) != {"type"}:
            raise invalid(f"thinking: {value['type']!r} takes no other field", "thinking")
        return value["type"]
    unknown = sorted(set(value) - {"type", "budget_tokens"})
    if unknown:
        raise invalid(f"thinking: unrecognized field {unknown[0]!r}", "thinking")
    budget = value.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < MIN_THINKING_BUDGET:
        raise invalid(f"thinking.budget_tokens: must be an integer >= {MIN_THINKING_BUDGET}",
                      "thinking")
    if max_tokens is not None and budget >= max_tokens:
        raise invalid("thinking.budget_tokens: must be less than max_tokens", "thinking")
    return "enabled"


def _output_config(value: Any) -> tuple[str | None, str | None]:
    """(the grammar of ``format``, ``effort``)."""
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise invalid("output_config: must be an object", "output_config")
    unknown = sorted(set(value) - {"format", "effort"})
    if unknown:
        raise invalid(f"output_config: unrecognized field {unknown[0]!r}", "output_config")
    effort = value.get("effort")
    if effort is not None and effort not in EFFORTS:
        raise invalid(f"output_config.effort: must be one of {', '.join(EFFORTS)}",
                      "output_config")
    fmt = value.get("format")
    if fmt is None:
        return None, effort
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise invalid("output_config.format: must be {\"type\": \"json_schema\", \"schema\": "
                      "{...}}", "output_config")
    unknown = sorted(set(fmt) - {"type", "schema"})
    if unknown:
        raise invalid(f"output_config.format: unrecognized field {unknown[0]!r}",
                      "output_config")
    if not isinstance(fmt.get("schema"), dict):
        raise invalid("output_config.format.schema: required, a JSON schema object",
                      "output_config")
    grammar = response_format_grammar(
        {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"]}},
        "output_config")
    return grammar, effort


def _context_management(value: Any) -> None:
    """Server-side context edits. Claude Code sends ``clear_thinking`` keeping all thinking,
    which edits nothing: accepted. An edit that would change the prompt (clearing thinking or
    tool results) is not implemented: a 400 naming it."""
    if value is None:
        return
    edits = value.get("edits") if isinstance(value, dict) and set(value) <= {"edits"} else None
    if not isinstance(edits, list):
        raise invalid("context_management: must be {\"edits\": [...]}", "context_management")
    for i, edit in enumerate(edits):
        no_op = (isinstance(edit, dict) and str(edit.get("type", "")).startswith("clear_thinking")
                 and edit.get("keep") == "all" and set(edit) <= {"type", "keep"})
        if not no_op:
            raise invalid(f"context_management.edits[{i}]: only clear_thinking with keep "
                          "'all' (which edits nothing) is supported", "context_management")


def _metadata(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise invalid("metadata: must be an object", "metadata")
    unknown = sorted(set(value) - {"user_id"})
    if unknown:
        raise invalid(f"metadata: unrecognized field {unknown[0]!r}", "metadata")
    user = value.get("user_id")
    if user is not None and (not isinstance(user, str) or len(user) > 256):
        raise invalid("metadata.user_id: must be a string of at most 256 characters",
                      "metadata")


def template_kwargs(model: ChatModel, params: MessagesParams) -> dict[str, Any]:
    """The chat-template variables ``thinking`` and ``effort`` ask of ``model``, or a 400."""
    source = model.prompts.template_source(with_tools=params.tools is not None) or ""
    kwargs: dict[str, Any] = {}
    reasoning = model.reasoning is not None
    if params.thinking == "enabled" and not reasoning:
        raise invalid(f"thinking: model '{model.name}' is not a reasoning model; send no "
                      "thinking, or {\"type\": \"disabled\"}", "thinking")
    if params.thinking in ("enabled", "disabled") and reasoning and "enable_thinking" in source:
        kwargs["enable_thinking"] = params.thinking == "enabled"
    elif params.thinking == "disabled" and reasoning:
        raise invalid(f"thinking: model '{model.name}' always reasons (its chat template "
                      "cannot turn thinking off)", "thinking")
    if params.effort is not None:
        if "reasoning_effort" not in source:
            if params.effort == DEFAULT_EFFORT:
                return kwargs
            raise invalid(f"output_config.effort: the chat template of model '{model.name}' "
                          "does not use 'reasoning_effort'", "output_config")
        kwargs["reasoning_effort"] = params.effort
    return kwargs

"""A ``POST /v1/responses`` body, checked field by field and translated for the serving layer.

Every field OpenAI defines is either served, accepted at the value that changes nothing here,
or a 400 naming it (never accepted and ignored); unknown fields are a 400 too. The generation
parameters (``temperature``, ``top_p``, ``max_output_tokens``) go through the serving layer's
parameter table, with the chat route's ranges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from triton_mlx.responses_api.input_items import read_input, read_tools
from triton_mlx.serving.errors import RequestError, invalid
from triton_mlx.serving.parameters import CHAT, Dialect, GenerationParams, read_parameters
from triton_mlx.serving.structured import response_format_grammar
from triton_mlx.serving.tools import ToolRequest

REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
INCLUDE = ("reasoning.encrypted_content",)
"""``include`` values accepted. Reasoning is returned in clear (``reasoning_text`` content),
which a client sends back as it is: nothing is encrypted, so this asks for nothing more."""
MAX_METADATA = 16

_SERVED = {"model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls",
           "text", "max_output_tokens", "temperature", "top_p", "stream", "reasoning", "store",
           "previous_response_id", "include", "metadata", "user", "safety_identifier",
           "prompt_cache_key", "truncation", "service_tier", "background", "top_logprobs",
           "stream_options", "client_metadata"}
# Accepted at these values only: each changes nothing on this server.
_DEFAULT_ONLY: dict[str, tuple[Any, ...]] = {
    "truncation": ("disabled",),
    "service_tier": ("auto", "default"),
    "background": (False,),
    "top_logprobs": (0,),
}
# OpenAI fields this server does not implement (any value but null is a 400 naming them).
_UNSUPPORTED = {"conversation": "conversations", "prompt": "prompt templates",
                "max_tool_calls": "a limit on built-in tool calls"}
_CHAT = Dialect(CHAT)


@dataclass
class ResponsesParams:
    """A validated Responses request."""

    model: str
    input: list[dict[str, Any]]
    """The request's own input as neutral chat messages (without ``instructions``)."""
    generation: GenerationParams
    instructions: str | None = None
    tools: ToolRequest | None = None
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    text_format: dict[str, Any] = field(default_factory=lambda: {"type": "text"})
    reasoning: dict[str, Any] = field(default_factory=lambda: {"effort": None, "summary": None})
    metadata: dict[str, str] = field(default_factory=dict)
    echo: dict[str, Any] = field(default_factory=dict)
    """Request fields the response repeats as they were sent (tools, tool_choice, ...)."""

    @property
    def template_kwargs(self) -> dict[str, Any]:
        effort = self.reasoning.get("effort")
        return {"reasoning_effort": effort} if effort is not None else {}


def parse_request(body: Any) -> ResponsesParams:
    """The request, or a :class:`RequestError` naming the first field at fault."""
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    for key in body:
        if key not in _SERVED and key not in _UNSUPPORTED:
            raise invalid(f"unrecognized request argument supplied: {key}", key)
    for key, what in _UNSUPPORTED.items():
        if body.get(key) is not None:
            raise invalid(f"{key}: {what} are not supported by this server", key)
    for key, allowed in _DEFAULT_ONLY.items():
        value = body.get(key)
        if value is not None and (value not in allowed or isinstance(value, bool) != isinstance(
                allowed[0], bool)):
            raise invalid(f"{key}={value!r} is not supported by this server (only "
                          f"{' or '.join(repr(a) for a in allowed)})", key)
    if body.get("stream_options") is not None:
        raise invalid("stream_options is not supported by this server", "stream_options")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model is required and must be a non-empty string", "model")
    if "input" not in body:
        raise invalid("input is required", "input")
    params = ResponsesParams(model, read_input(body["input"]), _generation(body))
    params.instructions = _string(body, "instructions")
    params.tools = read_tools(body)
    params.stream = _bool(body, "stream", False)
    params.store = _bool(body, "store", True)
    params.previous_response_id = _string(body, "previous_response_id", non_empty=True)
    for key in ("user", "safety_identifier", "prompt_cache_key"):
        _string(body, key)  # identifiers; the prefix cache needs no key to find a prompt
    _include(body.get("include"))
    params.text_format, grammar = _text(body.get("text"))
    params.generation.grammar = grammar
    params.reasoning = _reasoning(body.get("reasoning"))
    params.metadata = _metadata(body.get("metadata"))
    _client_metadata(body.get("client_metadata"))
    params.echo = {"tools": body.get("tools") or [], "tool_choice": body.get("tool_choice")
                   or "auto", "parallel_tool_calls": body.get("parallel_tool_calls", True)
                   is not False, "user": body.get("user"),
                   "prompt_cache_key": body.get("prompt_cache_key")}
    return params


def renamed(error: RequestError) -> RequestError:
    """A serving-layer error about ``max_tokens`` in this API's words (``max_output_tokens``)."""
    if error.param != "max_tokens":
        return error
    return RequestError(error.status, error.message.replace("max_tokens", "max_output_tokens"),
                        param="max_output_tokens", code=error.code, headers=error.headers)


def _generation(body: dict[str, Any]) -> GenerationParams:
    values = {k: body.get(k) for k in ("temperature", "top_p")}
    values["max_tokens"] = body.get("max_output_tokens")
    try:
        return read_parameters(values, _CHAT)
    except RequestError as exc:
        raise renamed(exc) from None


def _string(body: dict[str, Any], key: str, *, non_empty: bool = False) -> str | None:
    value = body.get(key)
    if value is not None and (not isinstance(value, str) or (non_empty and not value)):
        raise invalid(f"{key} must be a {'non-empty ' if non_empty else ''}string", key)
    return value


def _bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"{key} must be a boolean", key)
    return value


def _include(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid("include must be an array of strings", "include")
    for item in value:
        if item not in INCLUDE:
            raise invalid(f"include: {item!r} is not supported by this server (only "
                          f"{', '.join(INCLUDE)})", "include")


def _text(value: Any) -> tuple[dict[str, Any], str | None]:
    """``text``: its ``format`` (text, json_object, json_schema) and its grammar."""
    if value is None:
        return {"type": "text"}, None
    if not isinstance(value, dict):
        raise invalid("text must be an object", "text")
    unknown = sorted(set(value) - {"format", "verbosity"})
    if unknown:
        raise invalid(f"text: unrecognized field {unknown[0]!r}", "text")
    if value.get("verbosity") not in (None, "medium"):
        raise invalid("text.verbosity: only 'medium' is supported (the model's own length)",
                      "text.verbosity")
    fmt = value.get("format")
    if fmt is None:
        return {"type": "text"}, None
    if not isinstance(fmt, dict) or not isinstance(fmt.get("type"), str):
        raise invalid("text.format must be an object with a type", "text.format")
    if fmt["type"] != "json_schema":
        return fmt, response_format_grammar(fmt, "text.format")
    # Responses spell json_schema flat: {"type", "name", "schema", "strict", "description"}.
    spec = {k: v for k, v in fmt.items() if k != "type"}
    return fmt, response_format_grammar({"type": "json_schema", "json_schema": spec},
                                        "text.format")


def _reasoning(value: Any) -> dict[str, Any]:
    if value is None:
        return {"effort": None, "summary": None}
    if not isinstance(value, dict):
        raise invalid("reasoning must be an object", "reasoning")
    unknown = sorted(set(value) - {"effort", "summary", "generate_summary"})
    if unknown:
        raise invalid(f"reasoning: unrecognized field {unknown[0]!r}", "reasoning")
    effort = value.get("effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        raise invalid(f"reasoning.effort must be one of {', '.join(REASONING_EFFORTS)}",
                      "reasoning.effort")
    for key in ("summary", "generate_summary"):
        if value.get(key) not in (None, "auto"):  # auto: as the server does (none here)
            raise invalid(f"reasoning.{key}: reasoning summaries are not generated by this "
                          "server; the reasoning comes whole, as reasoning_text content",
                          f"reasoning.{key}")
    return {"effort": effort, "summary": None}


def _client_metadata(value: Any) -> None:
    """Codex CLI's ``client_metadata`` (turn and session ids, as strings): identifiers that
    change nothing about the response, checked for shape only and not logged."""
    if value is None:
        return
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise invalid("client_metadata must be an object of string values", "client_metadata")


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if (not isinstance(value, dict) or len(value) > MAX_METADATA
            or not all(isinstance(v, str) and len(k) <= 64 and len(v) <= 512
                       for k, v in value.items())):
        raise invalid(f"metadata must be an object of at most {MAX_METADATA} string values "
                      "(keys up to 64 characters, values up to 512)", "metadata")
    return dict(value)

"""Validation of OpenAI request bodies into plain parameters.

Every parameter is checked for type and range, and a failure names it. A parameter we do not
implement is refused with a 400 that names it, never accepted and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from triton_mlx.openai.chat_messages import parse_messages, parse_tools
from triton_mlx.serving.errors import RequestError, invalid
from triton_mlx.serving.parameters import (
    CHAT,
    COMPLETIONS,
    MAX_LOGPROBS,
    Dialect,
    GenerationParams,
    names_for,
    read_parameters,
)
from triton_mlx.serving.structured import response_format_grammar
from triton_mlx.serving.tools import ToolRequest

MAX_PROMPTS = 64

# Request fields that shape the exchange rather than the generation (the generation
# parameters come from the serving layer's table).
_CHAT_FIELDS = {"model", "messages", "stream", "stream_options", "user", "max_completion_tokens",
                "logprobs", "top_logprobs", "response_format", "tools", "tool_choice",
                "parallel_tool_calls", "chat_template_kwargs", "reasoning_effort"}
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
_COMPLETION_FIELDS = {"model", "prompt", "stream", "stream_options", "user", "logprobs", "echo",
                      "suffix"}
_CHAT = Dialect(CHAT)
_COMPLETIONS = Dialect(COMPLETIONS)


@dataclass
class ChatParams:
    """A validated chat completion request."""

    model: str
    messages: list[dict[str, Any]]
    generation: GenerationParams
    stream: bool = False
    include_usage: bool = False
    tools: ToolRequest | None = None
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra chat-template variables (``chat_template_kwargs``, ``reasoning_effort``)."""


@dataclass
class CompletionParams:
    """A validated text completion request."""

    model: str
    prompts: list[str | list[int]]
    generation: GenerationParams
    stream: bool = False
    include_usage: bool = False
    echo: bool = False


def parse_chat(body: Any) -> ChatParams:
    data = _object(body)
    _reject_unknown(data, _CHAT_FIELDS | set(names_for(CHAT)))
    _require_unsupported(data, chat=True)
    model, messages = _model(data), parse_messages(data.get("messages"))
    generation = read_parameters(data, _CHAT)
    max_completion = _int(data, "max_completion_tokens", minimum=1)
    if max_completion is not None:
        if generation.max_tokens is not None and generation.max_tokens != max_completion:
            raise invalid(
                "max_tokens and max_completion_tokens disagree; send only max_completion_tokens",
                "max_completion_tokens",
            )
        generation = read_parameters({**data, "max_tokens": max_completion}, _CHAT)
    top = _int(data, "top_logprobs", minimum=0, maximum=MAX_LOGPROBS)
    if _bool(data, "logprobs"):
        generation.logprobs = top or 0
    elif top is not None:
        raise invalid("top_logprobs requires logprobs to be true", "top_logprobs")
    response_format = response_format_grammar(data.get("response_format"))
    if response_format is not None:
        if generation.grammar is not None:
            raise invalid("send response_format or structured_outputs, not both",
                          "response_format")
        generation.grammar = response_format
    stream, include_usage = _streaming(data)
    return ChatParams(model, messages, generation, stream, include_usage, parse_tools(data),
                      _template_kwargs(data))


def _template_kwargs(data: dict[str, Any]) -> dict[str, Any]:
    """vLLM's ``chat_template_kwargs`` (e.g. ``{"enable_thinking": false}``) and OpenAI's
    ``reasoning_effort``, as template variables."""
    kwargs = data.get("chat_template_kwargs")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise invalid("chat_template_kwargs must be an object", "chat_template_kwargs")
    effort = data.get("reasoning_effort")
    if effort is not None:
        if effort not in REASONING_EFFORTS:
            raise invalid(f"reasoning_effort must be one of {', '.join(REASONING_EFFORTS)}",
                          "reasoning_effort")
        kwargs = {**kwargs, "reasoning_effort": effort}
    return kwargs


def parse_completion(body: Any) -> CompletionParams:
    data = _object(body)
    _reject_unknown(data, _COMPLETION_FIELDS | set(names_for(COMPLETIONS)))
    _require_unsupported(data, chat=False)
    model, prompts = _model(data), _prompts(data.get("prompt"))
    generation = read_parameters(data, _COMPLETIONS)
    generation.logprobs = _int(data, "logprobs", minimum=0, maximum=MAX_LOGPROBS)
    echo = _bool(data, "echo")
    if echo and generation.logprobs is not None:
        raise invalid("echo: log probabilities of the prompt are not supported yet; "
                      "use echo or logprobs", "echo")
    stream, include_usage = _streaming(data)
    return CompletionParams(model, prompts, generation, stream, include_usage, echo)


def _streaming(data: dict[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage); ``user`` is checked here too, being the other plain field."""
    stream = _bool(data, "stream")
    include_usage = _stream_options(data.get("stream_options"), stream)
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid("user must be a string", "user")
    return stream, include_usage


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    return body


def _reject_unknown(data: dict[str, Any], allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            raise invalid(f"unrecognized request argument supplied: {key}", key)


def _require_unsupported(data: dict[str, Any], *, chat: bool) -> None:
    """Accept the OpenAI parameters we do not implement only at their no-op values."""
    def unsupported(name: str, what: str) -> RequestError:
        return invalid(f"{name}: {what} is not supported by this server yet", name)

    if not chat and data.get("suffix") is not None:
        raise unsupported("suffix", "insertion with a suffix")


def _model(data: dict[str, Any]) -> str:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model is required and must be a non-empty string", "model")
    return model


def _int(
    data: dict[str, Any], name: str, *, minimum: int, maximum: int | None = None
) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{name} must be an integer", name)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise invalid(f"{name} must be {bound}, got {value}", name)
    return value


def _bool(data: dict[str, Any], name: str) -> bool:
    value = data.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(f"{name} must be a boolean", name)
    return value


def _stream_options(value: Any, stream: bool) -> bool:
    if value is None:
        return False
    if not stream:
        raise invalid("stream_options is only allowed when stream is true", "stream_options")
    if not isinstance(value, dict):
        raise invalid("stream_options must be an object", "stream_options")
    unknown = set(value) - {"include_usage"}
    if unknown:
        raise invalid(f"unrecognized stream_options key: {sorted(unknown)[0]}", "stream_options")
    include = value.get("include_usage", False)
    if not isinstance(include, bool):
        raise invalid("stream_options.include_usage must be a boolean", "stream_options")
    return include


def _prompts(value: Any) -> list[str | list[int]]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(p, str) for p in value):
            prompts: list[str | list[int]] = list(value)
        elif all(_is_token(t) for t in value):
            prompts = [list(value)]
        elif all(isinstance(p, list) and p and all(_is_token(t) for t in p) for p in value):
            prompts = [list(p) for p in value]
        else:
            prompts = []
        if prompts:
            if len(prompts) > MAX_PROMPTS:
                raise invalid(f"prompt may hold at most {MAX_PROMPTS} prompts", "prompt")
            return prompts
    raise invalid(
        "prompt must be a string, a non-empty array of strings, an array of token ids, "
        "or an array of arrays of token ids",
        "prompt",
    )


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0

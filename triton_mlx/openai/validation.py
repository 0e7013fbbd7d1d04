"""Validation of OpenAI request bodies into plain parameters.

Every parameter is checked for type and range, and a failure names it. A parameter we do not
implement is refused with a 400 that names it, never accepted and ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from triton_mlx.openai.errors import OpenAIError, invalid

MAX_STOP_STRINGS = 16
MAX_PROMPTS = 64
MAX_CHOICES = 64
MAX_LOGPROBS = 20

# Parameters shared by /v1/chat/completions and /v1/completions.
_COMMON = {
    "model", "temperature", "top_p", "top_k", "min_p", "max_tokens", "stop", "stream",
    "stream_options", "frequency_penalty", "presence_penalty", "repetition_penalty", "seed",
    "logit_bias", "user", "n",
}
_CHAT_ONLY = {"messages", "max_completion_tokens", "logprobs", "top_logprobs",
              "response_format", "tools", "tool_choice", "parallel_tool_calls"}
_COMPLETION_ONLY = {"prompt", "logprobs", "echo", "best_of", "suffix"}


@dataclass
class GenerationParams:
    """Validated sampling and length parameters, before model-specific defaults."""

    model: str
    temperature: float | None = None
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    logit_bias: dict[int, float] = field(default_factory=dict)
    n: int = 1
    logprobs: int | None = None  # None: none; k: each token's logprob and k alternatives


@dataclass
class ChatParams(GenerationParams):
    messages: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CompletionParams(GenerationParams):
    prompts: list[str | list[int]] = field(default_factory=list)
    echo: bool = False


def parse_chat(body: Any) -> ChatParams:
    data = _object(body)
    _reject_unknown(data, _COMMON | _CHAT_ONLY)
    _require_unsupported(data, chat=True)
    params = ChatParams(model=_model(data), messages=_messages(data.get("messages")))
    _fill_common(params, data)
    max_tokens = _int(data, "max_tokens", minimum=1)
    max_completion = _int(data, "max_completion_tokens", minimum=1)
    if max_tokens is not None and max_completion is not None and max_tokens != max_completion:
        raise invalid(
            "max_tokens and max_completion_tokens disagree; send only max_completion_tokens",
            "max_completion_tokens",
        )
    params.max_tokens = max_completion if max_completion is not None else max_tokens
    top = _int(data, "top_logprobs", minimum=0, maximum=MAX_LOGPROBS)
    if _bool(data, "logprobs"):
        params.logprobs = top or 0
    elif top is not None:
        raise invalid("top_logprobs requires logprobs to be true", "top_logprobs")
    return params


def parse_completion(body: Any) -> CompletionParams:
    data = _object(body)
    _reject_unknown(data, _COMMON | _COMPLETION_ONLY)
    _require_unsupported(data, chat=False)
    params = CompletionParams(model=_model(data), prompts=_prompts(data.get("prompt")))
    _fill_common(params, data)
    params.max_tokens = _int(data, "max_tokens", minimum=1)
    params.logprobs = _int(data, "logprobs", minimum=0, maximum=MAX_LOGPROBS)
    params.echo = _bool(data, "echo")
    if params.echo and params.logprobs is not None:
        raise invalid("echo: log probabilities of the prompt are not supported yet; "
                      "use echo or logprobs", "echo")
    return params


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
    def unsupported(name: str, what: str) -> OpenAIError:
        return invalid(f"{name}: {what} is not supported by this server yet", name)

    fmt = data.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise unsupported("response_format", "structured output (only {\"type\": \"text\"})")
    if data.get("tools") not in (None, []) or data.get("tool_choice") not in (None, "none"):
        raise unsupported("tools", "tool calling")
    if data.get("parallel_tool_calls") is not None and not data.get("tools"):
        raise invalid("parallel_tool_calls is only allowed with tools", "parallel_tool_calls")
    if not chat:
        if data.get("best_of") not in (None, 1) or data.get("best_of") is True:
            raise unsupported("best_of", "best-of sampling")
        if data.get("suffix") is not None:
            raise unsupported("suffix", "insertion with a suffix")


def _model(data: dict[str, Any]) -> str:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model is required and must be a non-empty string", "model")
    return model


def _fill_common(params: GenerationParams, data: dict[str, Any]) -> None:
    params.temperature = _number(data, "temperature", 0.0, 2.0)
    top_p = _number(data, "top_p", 0.0, 1.0)
    params.top_p = 1.0 if top_p is None else top_p
    top_k = _int(data, "top_k", minimum=-1)
    params.top_k = 0 if top_k in (None, -1) else top_k
    params.min_p = _number(data, "min_p", 0.0, 1.0) or 0.0
    params.frequency_penalty = _number(data, "frequency_penalty", -2.0, 2.0) or 0.0
    params.presence_penalty = _number(data, "presence_penalty", -2.0, 2.0) or 0.0
    repetition = _number(data, "repetition_penalty", 0.0, 10.0)
    if repetition is not None and repetition <= 0:
        raise invalid("repetition_penalty must be > 0", "repetition_penalty")
    params.repetition_penalty = 1.0 if repetition is None else repetition
    params.seed = _int(data, "seed", minimum=-(2**63), maximum=2**64 - 1)
    params.stop = _stop(data.get("stop"))
    params.stream = _bool(data, "stream")
    params.include_usage = _stream_options(data.get("stream_options"), params.stream)
    params.logit_bias = _logit_bias(data.get("logit_bias"))
    params.n = _int(data, "n", minimum=1, maximum=MAX_CHOICES) or 1
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid("user must be a string", "user")


def _number(data: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or (
        isinstance(value, float) and not math.isfinite(value)  # an int may exceed a float
    ):
        raise invalid(f"{name} must be a number", name)
    if not low <= value <= high:
        raise invalid(f"{name} must be between {low:g} and {high:g}, got {value}", name)
    return float(value)


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


def _stop(value: Any) -> list[str]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise invalid("stop must be a string or a list of strings", "stop")
    if len(stops) > MAX_STOP_STRINGS:
        raise invalid(f"stop may hold at most {MAX_STOP_STRINGS} strings", "stop")
    if any(s == "" for s in stops):
        raise invalid("stop strings must not be empty", "stop")
    return stops


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


def _logit_bias(value: Any) -> dict[int, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid("logit_bias must be an object mapping token ids to numbers", "logit_bias")
    bias: dict[int, float] = {}
    for key, weight in value.items():
        try:
            token = int(key)
        except ValueError:
            raise invalid(f"logit_bias key {key!r} is not a token id", "logit_bias") from None
        if token < 0 or not (key.isascii() and key.isdigit()):  # not " 5", "+5", "1_0"
            raise invalid(f"logit_bias key {key!r} is not a token id", "logit_bias")
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise invalid("logit_bias values must be numbers", "logit_bias")
        if not -100 <= weight <= 100:
            raise invalid("logit_bias values must be between -100 and 100", "logit_bias")
        bias[token] = float(weight)
    return bias


_ROLES = {"system", "developer", "user", "assistant", "tool"}


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise invalid("messages must be a non-empty array", "messages")
    messages = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(f"{where} must be an object", where)
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLES:  # a list or object is unhashable
            raise invalid(f"{where}.role must be one of {sorted(_ROLES)}", f"{where}.role")
        if message.get("tool_calls") not in (None, []) or message.get("function_call") is not None:
            raise invalid(f"{where}: tool calls are not supported by this server yet", where)
        content = _content(message.get("content"), where, role)
        name = message.get("name")
        if name is not None and not isinstance(name, str):
            raise invalid(f"{where}.name must be a string", f"{where}.name")
        entry = {"role": "system" if role == "developer" else role, "content": content}
        if name is not None:
            entry["name"] = name
        messages.append(entry)
    return messages


def _content(value: Any, where: str, role: str) -> str:
    if isinstance(value, str):
        return value
    if value is None and role == "assistant":
        return ""
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

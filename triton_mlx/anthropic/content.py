"""Anthropic's ``system`` and ``messages`` (content blocks) as the serving layer's neutral chat.

The neutral shape is OpenAI's chat (``serving/tools.py``): an assistant turn's ``tool_use``
blocks become its ``tool_calls`` (arguments as the object sent), and each ``tool_result``
block of a user turn becomes a ``tool`` message, in order, before the turn's text. Earlier
``thinking`` blocks are kept as the assistant's ``reasoning_content`` (templates that render
past reasoning read it; the others drop it, as they do on the chat route).

Decisions where Anthropic's API is silent for us:

- ``cache_control`` is accepted on every block that takes it (``{"type": "ephemeral"}`` with
  an optional ``ttl``) and changes nothing: the engine's prefix cache reuses any prompt prefix
  it has seen, marked or not; what it reused is ``usage.cache_read_input_tokens``.
- ``tool_result`` with ``is_error: true`` reaches the model as its content prefixed with
  ``"Error: "`` (chat templates have no field for it); its content may be a string or text
  blocks.
- ``image``, ``document``, ``search_result``, ``redacted_thinking``, ``server_tool_use`` and
  any other block type are a 400 naming the block: the served models read text only.
- ``citations`` on a text block must be null or absent (we produce none and read none).
"""

from __future__ import annotations

import json
from typing import Any

from triton_mlx.serving.errors import invalid

CACHE_CONTROL_TYPES = ("ephemeral",)
CACHE_TTLS = ("5m", "1h")


def parse_system(value: Any) -> str | None:
    """``system``: a string or an array of text blocks, joined; None when absent."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise invalid("system must be a string or an array of text blocks", "system")
    return "".join(_text_block(b, f"system[{i}]") for i, b in enumerate(value))


def parse_messages(value: Any) -> list[dict[str, Any]]:
    """``messages`` as neutral chat messages (``tool`` messages for tool results)."""
    if not isinstance(value, list) or not value:
        raise invalid("messages: must be a non-empty array", "messages")
    result: list[dict[str, Any]] = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(f"{where}: must be an object", "messages")
        _only(message, {"role", "content"}, where)
        role = message.get("role")
        if role == "system":  # Claude Code sends reminders so, between turns: a system turn
            content = message.get("content")
            if not isinstance(content, str):
                content = parse_system(content) if isinstance(content, list) else None
            if content is None:
                raise invalid(f"{where}.content: must be a string or text blocks", "messages")
            result.append({"role": "system", "content": content})
            continue
        if role not in ("user", "assistant"):
            raise invalid(f"{where}.role: must be 'user', 'assistant' or 'system'", "messages")
        blocks = _blocks(message.get("content"), f"{where}.content")
        result += _assistant(blocks, where) if role == "assistant" else _user(blocks, where)
    return result


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise invalid(f"{where}: must be a string or an array of content blocks", "messages")
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise invalid(f"{where}[{j}]: must be a content block with a type", "messages")
    return content


def _user(blocks: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    results, texts = [], []
    for j, block in enumerate(blocks):
        at = f"{where}.content[{j}]"
        if block["type"] == "tool_result":
            results.append(_tool_result(block, at))
        elif block["type"] == "text":
            texts.append(_text_block(block, at))
        else:
            _unsupported(block, at, "user")
    messages = results
    if texts or not results:
        messages = [*messages, {"role": "user", "content": "".join(texts)}]
    return messages


def _assistant(blocks: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    texts, calls, thinking = [], [], []
    for j, block in enumerate(blocks):
        at = f"{where}.content[{j}]"
        kind = block["type"]
        if kind == "text":
            texts.append(_text_block(block, at))
        elif kind == "tool_use":
            calls.append(_tool_use(block, at))
        elif kind == "thinking":
            _only(block, {"type", "thinking", "signature"}, at)
            if not isinstance(block.get("thinking"), str):
                raise invalid(f"{at}.thinking: must be a string", "messages")
            if not isinstance(block.get("signature", ""), str):
                raise invalid(f"{at}.signature: must be a string", "messages")
            thinking.append(block["thinking"])
        else:
            _unsupported(block, at, "assistant")
    entry: dict[str, Any] = {"role": "assistant",
                             "content": "".join(texts) if texts or not calls else None}
    if calls:
        entry["tool_calls"] = calls
    if thinking:
        entry["reasoning_content"] = "".join(thinking)
    return [entry]


def _text_block(block: Any, where: str) -> str:
    if not isinstance(block, dict) or block.get("type") != "text":
        kind = block.get("type") if isinstance(block, dict) else type(block).__name__
        raise invalid(f"{where}: expected a text block, got {kind!r}", _param(where))
    _only(block, {"type", "text", "cache_control", "citations"}, where)
    if not isinstance(block.get("text"), str):
        raise invalid(f"{where}.text: must be a string", _param(where))
    if block.get("citations") not in (None, []):
        raise invalid(f"{where}.citations: citations are not supported by this server",
                      _param(where))
    check_cache_control(block, where)
    return block["text"]


def _tool_use(block: dict[str, Any], where: str) -> dict[str, Any]:
    _only(block, {"type", "id", "name", "input", "cache_control"}, where)
    check_cache_control(block, where)
    for key in ("id", "name"):
        if not isinstance(block.get(key), str) or not block[key]:
            raise invalid(f"{where}.{key}: must be a non-empty string", "messages")
    if not isinstance(block.get("input"), dict):
        raise invalid(f"{where}.input: must be an object", "messages")
    return {"id": block["id"], "type": "function",
            "function": {"name": block["name"], "arguments": block["input"]}}


def _tool_result(block: dict[str, Any], where: str) -> dict[str, Any]:
    _only(block, {"type", "tool_use_id", "content", "is_error", "cache_control"}, where)
    check_cache_control(block, where)
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise invalid(f"{where}.tool_use_id: must be a non-empty string", "messages")
    content = block.get("content", "")
    if isinstance(content, list):
        content = "".join(_text_block(b, f"{where}.content[{k}]") for k, b in enumerate(content))
    elif not isinstance(content, str):
        raise invalid(f"{where}.content: must be a string or an array of text blocks",
                      "messages")
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise invalid(f"{where}.is_error: must be a boolean", "messages")
    if is_error:
        content = f"Error: {content}"
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def _unsupported(block: dict[str, Any], where: str, role: str) -> None:
    kind = block["type"]
    if kind in ("image", "document", "search_result", "redacted_thinking",
                "server_tool_use", "web_search_tool_result", "container_upload"):
        raise invalid(f"{where}: {kind} blocks are not supported by this server (the served "
                      "models read text)", "messages")
    allowed = ("text", "tool_result") if role == "user" else ("text", "tool_use", "thinking")
    raise invalid(f"{where}: a {role} message takes {', '.join(allowed)} blocks, got "
                  f"{json.dumps(kind)}", "messages")


def check_cache_control(block: dict[str, Any], where: str) -> None:
    """``cache_control``: accepted when well-formed (the prefix cache needs no marks)."""
    value = block.get("cache_control")
    if value is None:
        return
    if not isinstance(value, dict) or value.get("type") not in CACHE_CONTROL_TYPES:
        raise invalid(f"{where}.cache_control: must be {{\"type\": \"ephemeral\"}}",
                      _param(where))
    _only(value, {"type", "ttl"}, f"{where}.cache_control")
    if value.get("ttl") is not None and value["ttl"] not in CACHE_TTLS:
        raise invalid(f"{where}.cache_control.ttl: must be one of {', '.join(CACHE_TTLS)}",
                      _param(where))


def _only(value: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise invalid(f"{where}: unrecognized field {unknown[0]!r}", _param(where))


def _param(where: str) -> str:
    """The top-level parameter a path like ``messages[0].content[1]`` is in."""
    return where.split("[", 1)[0].split(".", 1)[0]

"""Anthropic's answer: content blocks built from the serving layer's chat deltas, the message
body, and the stream's events.

One :class:`Blocks` reads a choice's :class:`ChatDelta` items into Anthropic's content blocks,
opening a new block whenever the kind changes (``thinking``, ``text``, one ``tool_use`` per
call) and returning the stream events that say so: ``content_block_start``, its
``content_block_delta`` items (``thinking_delta``, ``text_delta``, ``input_json_delta``) and
``content_block_stop``. The non-streaming answer is the same blocks, whole, so both shapes
always agree.

Decisions: a ``thinking`` block's ``signature`` is empty (Anthropic signs its own reasoning so
it can be sent back unaltered; ours needs no signature and earlier thinking blocks are
accepted without one). ``usage.input_tokens`` counts the prompt tokens not read from the
prefix cache and ``cache_read_input_tokens`` those that were, so their sum is the prompt, as
Anthropic counts; ``cache_creation_input_tokens`` is 0 (writing the cache costs nothing here).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from triton_mlx.serving.chat import ChatDelta
from triton_mlx.serving.generation import Usage
from triton_mlx.serving.tool_calls.events import CallArguments, CallStart

_STOP_REASONS = {"length": "max_tokens", "tool_calls": "tool_use"}


def message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


class Blocks:
    """One choice's content blocks, built delta by delta."""

    def __init__(self) -> None:
        self.content: list[dict[str, Any]] = []
        self._open: str | None = None
        self._arguments: dict[int, list[str]] = {}
        self._call_block: dict[int, int] = {}

    def feed(self, delta: ChatDelta) -> list[dict[str, Any]]:
        """The stream events for ``delta``, its text added to the blocks."""
        events: list[dict[str, Any]] = []
        if delta.reasoning:
            events += self._text("thinking", delta.reasoning)
        if delta.content:
            events += self._text("text", delta.content)
        for call in delta.calls:
            if isinstance(call, CallStart):
                events += self.close()
                self._call_block[call.index] = len(self.content)
                self._arguments[call.index] = []
                events += self._start({"type": "tool_use", "id": call.id, "name": call.name,
                                       "input": {}}, "tool_use")
            elif isinstance(call, CallArguments) and call.fragment:
                self._arguments.setdefault(call.index, []).append(call.fragment)
                index = self._call_block.get(call.index, len(self.content) - 1)
                events.append(_delta(index, {"type": "input_json_delta",
                                             "partial_json": call.fragment}))
        return events

    def close(self) -> list[dict[str, Any]]:
        """The ``content_block_stop`` of the open block, if one is open."""
        if self._open is None:
            return []
        self._open = None
        index = len(self.content) - 1
        block = self.content[index]
        if block["type"] == "tool_use":
            call = next(c for c, b in self._call_block.items() if b == index)
            block["input"] = _arguments("".join(self._arguments.get(call, [])))
        return [{"type": "content_block_stop", "index": index}]

    def _text(self, kind: str, text: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if self._open != kind:
            events += self.close()
            empty = {"type": "thinking", "thinking": "", "signature": ""} if kind == "thinking" \
                else {"type": "text", "text": ""}
            events += self._start(empty, kind)
        index = len(self.content) - 1
        self.content[index][kind] += text
        events.append(_delta(index, {"type": f"{kind}_delta", kind: text}))
        return events

    def _start(self, block: dict[str, Any], kind: str) -> list[dict[str, Any]]:
        self._open = kind
        self.content.append(dict(block))
        return [{"type": "content_block_start", "index": len(self.content) - 1,
                 "content_block": block}]


def _delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def _arguments(text: str) -> dict[str, Any]:
    """A call's input object; the parser hands over complete JSON objects only."""
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def stop_reason(finish: ChatDelta | None) -> tuple[str | None, str | None]:
    """(``stop_reason``, ``stop_sequence``) for a choice's last delta."""
    if finish is None or finish.finish_reason is None:
        return None, None
    if finish.finish_reason == "stop" and finish.stop_string is not None:
        return "stop_sequence", finish.stop_string
    return _STOP_REASONS.get(finish.finish_reason, "end_turn"), None


def usage(value: Usage) -> dict[str, int]:
    return {"input_tokens": value.prompt_tokens - value.cached_tokens,
            "output_tokens": value.completion_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": value.cached_tokens}


def message(id: str, model: str, content: list[dict[str, Any]], finish: ChatDelta | None,
            used: Usage) -> dict[str, Any]:
    """The message object: the whole answer, or (no content, no finish) ``message_start``'s."""
    reason, sequence = stop_reason(finish)
    return {"id": id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": reason, "stop_sequence": sequence,
            "usage": usage(used)}


def message_delta(finish: ChatDelta | None, used: Usage) -> dict[str, Any]:
    reason, sequence = stop_reason(finish)
    return {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": usage(used)}

"""Output items and stream events of one response, built from the chat deltas.

:class:`OutputBuilder` reads :class:`ChatDelta` items as they come and keeps the response's
``output`` in order: a ``reasoning`` item (its text as ``reasoning_text`` content), a
``message`` with one ``output_text`` part, ``function_call`` items; a new item starts whenever
the kind of output changes. Each call returns the stream events it caused (without their
``sequence_number``, which the stream adds); a non-streamed response uses the same builder and
drops them.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from triton_mlx.serving.chat import ChatDelta
from triton_mlx.serving.generation import Usage
from triton_mlx.serving.tool_calls import CallArguments, CallStart

Event = dict[str, Any]


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class OutputBuilder:
    """One response's output items, grown delta by delta."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None
        self._calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None

    @property
    def text(self) -> str:
        return "".join(i["content"][0]["text"] for i in self.items if i["type"] == "message")

    @property
    def reasoning(self) -> str:
        return "".join(i["content"][0]["text"] for i in self.items
                       if i["type"] == "reasoning" and i["content"])

    def feed(self, delta: ChatDelta) -> list[Event]:
        events: list[Event] = []
        if delta.reasoning:
            events += self._reasoning(delta.reasoning)
        if delta.content:
            events += self._text(delta.content)
        for call in delta.calls:
            events += self._call(call)
        if delta.finish_reason is not None:
            self.finish_reason = delta.finish_reason
            events += self._close()
        return events

    def _start(self, item: dict[str, Any]) -> list[Event]:
        events = self._close()
        self.items.append(item)
        self._open = item
        added = {**item, "status": "in_progress"}
        if item["type"] == "message":
            added["content"] = []
        elif item["type"] == "function_call":
            added["arguments"] = ""
        elif item["type"] == "reasoning":
            added["content"] = []
        events.append({"type": "response.output_item.added", "output_index": self._index,
                       "item": added})
        return events

    @property
    def _index(self) -> int:
        return len(self.items) - 1

    def _where(self) -> dict[str, Any]:
        assert self._open is not None
        return {"item_id": self._open["id"], "output_index": self._index}

    def _reasoning(self, text: str) -> list[Event]:
        events: list[Event] = []
        if self._open is None or self._open["type"] != "reasoning":
            events += self._start({"id": new_id("rs"), "type": "reasoning", "summary": [],
                                   "content": [{"type": "reasoning_text", "text": ""}],
                                   "status": "completed"})
            events.append({"type": "response.content_part.added", **self._where(),
                           "content_index": 0, "part": {"type": "reasoning_text", "text": ""}})
        assert self._open is not None
        self._open["content"][0]["text"] += text
        events.append({"type": "response.reasoning_text.delta", **self._where(),
                       "content_index": 0, "delta": text})
        return events

    def _text(self, text: str) -> list[Event]:
        events: list[Event] = []
        if self._open is None or self._open["type"] != "message":
            events += self._start({"id": new_id("msg"), "type": "message", "role": "assistant",
                                   "status": "completed",
                                   "content": [{"type": "output_text", "text": "",
                                                "annotations": [], "logprobs": []}]})
            events.append({"type": "response.content_part.added", **self._where(),
                           "content_index": 0, "part": {"type": "output_text", "text": "",
                                                        "annotations": [], "logprobs": []}})
        assert self._open is not None
        self._open["content"][0]["text"] += text
        events.append({"type": "response.output_text.delta", **self._where(),
                       "content_index": 0, "delta": text, "logprobs": []})
        return events

    def _call(self, event: CallStart | CallArguments) -> list[Event]:
        if isinstance(event, CallStart):
            item = {"id": new_id("fc"), "type": "function_call", "call_id": event.id,
                    "name": event.name, "arguments": "", "status": "completed"}
            self._calls[event.index] = item
            return self._start(item)
        item = self._calls[event.index]
        item["arguments"] += event.fragment
        index = self.items.index(item)
        return [{"type": "response.function_call_arguments.delta", "item_id": item["id"],
                 "output_index": index, "delta": event.fragment}]

    def _close(self) -> list[Event]:
        """The events that end the open item (none when no item is open)."""
        item, self._open = self._open, None
        if item is None:
            return []
        where = {"item_id": item["id"], "output_index": self.items.index(item)}
        if self.finish_reason == "length" and item["type"] != "reasoning":
            item["status"] = "incomplete"
        events: list[Event] = []
        if item["type"] == "message":
            part = item["content"][0]
            events += [{"type": "response.output_text.done", **where, "content_index": 0,
                        "text": part["text"], "logprobs": []},
                       {"type": "response.content_part.done", **where, "content_index": 0,
                        "part": part}]
        elif item["type"] == "reasoning":
            part = item["content"][0]
            events += [{"type": "response.reasoning_text.done", **where, "content_index": 0,
                        "text": part["text"]},
                       {"type": "response.content_part.done", **where, "content_index": 0,
                        "part": part}]
        else:
            events.append({"type": "response.function_call_arguments.done", **where,
                           "name": item["name"], "arguments": item["arguments"]})
        events.append({"type": "response.output_item.done",
                       "output_index": where["output_index"], "item": item})
        return events

    def conversation(self) -> list[dict[str, Any]]:
        """The output as neutral chat messages: one assistant turn, with its calls."""
        calls = [{"id": i["call_id"], "type": "function",
                  "function": {"name": i["name"], "arguments": i["arguments"]}}
                 for i in self.items if i["type"] == "function_call"]
        turn: dict[str, Any] = {"role": "assistant", "content": self.text or (None if calls
                                                                              else "")}
        if calls:
            turn["tool_calls"] = calls
        if self.reasoning:
            turn["reasoning_content"] = self.reasoning
        return [turn]


def usage(counts: Usage, reasoning_tokens: int) -> dict[str, Any]:
    return {"input_tokens": counts.prompt_tokens,
            "input_tokens_details": {"cached_tokens": counts.cached_tokens},
            "output_tokens": counts.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
            "total_tokens": counts.total_tokens}


def response_body(*, response_id: str, model: str, created_at: int, status: str,
                  echo: dict[str, Any], output: list[dict[str, Any]] | None = None,
                  usage_: dict[str, Any] | None = None,
                  error: dict[str, Any] | None = None) -> dict[str, Any]:
    """The response object; ``echo`` holds the request fields it repeats."""
    return {
        "id": response_id, "object": "response", "created_at": created_at, "status": status,
        "completed_at": int(time.time()) if status in ("completed", "incomplete") else None,
        "error": error,
        "incomplete_details": ({"reason": "max_output_tokens"} if status == "incomplete"
                               else None),
        "model": model, "output": output or [], "usage": usage_, **echo,
    }

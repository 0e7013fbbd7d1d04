"""Building OpenAI response bodies and stream chunks for chat and text completions."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from triton_mlx.engine.types import TokenLogprob
from triton_mlx.serving.generation import Usage
from triton_mlx.serving.prompts import token_text
from triton_mlx.serving.tool_calls import CallArguments, CallStart, ToolCall


def usage(counts: Usage) -> dict:
    return {
        "prompt_tokens": counts.prompt_tokens,
        "completion_tokens": counts.completion_tokens,
        "total_tokens": counts.total_tokens,
        "prompt_tokens_details": {"cached_tokens": counts.cached_tokens},
    }


@dataclass
class CompletionShape:
    """The ids, names and shapes that differ between chat and text completions."""

    chat: bool
    model: str
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        if not self.id:
            self.id = ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex

    def _envelope(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def body(
        self,
        texts: list[str],
        finish_reasons: list[str | None],
        usage_: dict,
        logprobs: list[dict | None],
        messages: list[dict] | None = None,
    ) -> dict:
        """The whole non-streaming response; chat takes each choice's ``messages``
        (:func:`chat_message`)."""
        rows = enumerate(zip(texts, finish_reasons, logprobs, strict=True))
        if self.chat:
            choices = [
                {
                    "index": i,
                    "message": (messages[i] if messages is not None
                                else {"role": "assistant", "content": text}),
                    "logprobs": lp,
                    "finish_reason": reason,
                }
                for i, (text, reason, lp) in rows
            ]
            body = self._envelope("chat.completion")
        else:
            choices = [
                {"index": i, "text": text, "logprobs": lp, "finish_reason": reason}
                for i, (text, reason, lp) in rows
            ]
            body = self._envelope("text_completion")
        body["choices"] = choices
        body["usage"] = usage_
        return body

    def chunk(
        self,
        index: int,
        text: str | None,
        finish_reason: str | None,
        *,
        role: bool = False,
        with_usage_field: bool = False,
        logprobs: dict | None = None,
        fields: dict | None = None,
    ) -> dict:
        """One streaming chunk for choice ``index``; chat deltas may carry more ``fields``
        (reasoning, tool calls)."""
        if self.chat:
            delta: dict = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            delta.update(fields or {})
            choice = {"index": index, "delta": delta, "logprobs": logprobs,
                      "finish_reason": finish_reason}
            chunk = self._envelope("chat.completion.chunk")
        else:
            choice = {"index": index, "text": text or "", "logprobs": logprobs,
                      "finish_reason": finish_reason}
            chunk = self._envelope("text_completion")
        chunk["choices"] = [choice]
        if with_usage_field:
            chunk["usage"] = None
        return chunk

    def usage_chunk(self, usage_: dict) -> dict:
        """The last chunk when ``stream_options.include_usage`` is set: no choices, the usage."""
        chunk = self._envelope("chat.completion.chunk" if self.chat else "text_completion")
        chunk["choices"] = []
        chunk["usage"] = usage_
        return chunk


def chat_message(content: str, reasoning: str | None, calls: Sequence[ToolCall]) -> dict:
    """The assistant message of one chat choice: ``content`` null when the reply is only tool
    calls (as OpenAI sends it); the reasoning under both names clients read (vLLM's
    ``reasoning_content`` and its newer ``reasoning``) for reasoning models."""
    message: dict = {"role": "assistant", "content": content if content or not calls else None}
    if reasoning is not None:
        message["reasoning_content"] = message["reasoning"] = reasoning
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ]
    return message


def reasoning_fields(text: str) -> dict:
    return {"reasoning_content": text, "reasoning": text} if text else {}


def call_fields(events: Sequence[CallStart | CallArguments]) -> dict:
    """A chunk's ``tool_calls`` delta: a call's first delta has its id, type and name (and
    empty arguments), then argument fragments, as OpenAI streams them."""
    deltas: list[dict] = []
    for event in events:
        if isinstance(event, CallStart):
            deltas.append({"index": event.index, "id": event.id, "type": "function",
                           "function": {"name": event.name, "arguments": ""}})
        elif deltas and deltas[-1]["index"] == event.index:
            deltas[-1]["function"]["arguments"] += event.fragment
        else:
            deltas.append({"index": event.index, "function": {"arguments": event.fragment}})
    return {"tool_calls": deltas} if deltas else {}


TokenNamer = Callable[[int], bytes]


def chat_logprobs(entries: Sequence[TokenLogprob], token_bytes: TokenNamer) -> dict:
    """Chat's ``logprobs``: ``{"content": [{token, logprob, bytes, top_logprobs}]}``."""

    def item(token: int, logprob: float) -> dict:
        raw = token_bytes(token)
        return {"token": token_text(raw), "logprob": logprob, "bytes": list(raw)}

    return {
        "content": [
            {**item(e.token, e.logprob), "top_logprobs": [item(t, lp) for t, lp in e.top]}
            for e in entries
        ]
    }


def completion_logprobs(
    entries: Sequence[TokenLogprob], token_bytes: TokenNamer, offset: int
) -> dict:
    """Completions' legacy ``logprobs``: parallel lists, offsets counted from ``offset``."""
    tokens, offsets = [], []
    for entry in entries:
        offsets.append(offset)
        text = token_text(token_bytes(entry.token))
        tokens.append(text)
        offset += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [
            {token_text(token_bytes(t)): lp for t, lp in e.top} for e in entries
        ],
        "text_offset": offsets,
    }

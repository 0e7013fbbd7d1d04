"""Building OpenAI response bodies and stream chunks for chat and text completions."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from triton_mlx.engine.types import TokenLogprob
from triton_mlx.serving.generation import Usage
from triton_mlx.serving.prompts import token_text


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
    ) -> dict:
        """The whole non-streaming response."""
        rows = enumerate(zip(texts, finish_reasons, logprobs, strict=True))
        if self.chat:
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
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
    ) -> dict:
        """One streaming chunk for choice ``index``."""
        if self.chat:
            delta: dict = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
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

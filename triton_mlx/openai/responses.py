"""Building OpenAI response bodies and stream chunks for chat and text completions."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
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

    def body(self, texts: list[str], finish_reasons: list[str | None], usage_: dict) -> dict:
        """The whole non-streaming response."""
        if self.chat:
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": reason,
                }
                for i, (text, reason) in enumerate(zip(texts, finish_reasons, strict=True))
            ]
            body = self._envelope("chat.completion")
        else:
            choices = [
                {"index": i, "text": text, "logprobs": None, "finish_reason": reason}
                for i, (text, reason) in enumerate(zip(texts, finish_reasons, strict=True))
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
    ) -> dict:
        """One streaming chunk for choice ``index``."""
        if self.chat:
            delta: dict = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            choice = {"index": index, "delta": delta, "logprobs": None,
                      "finish_reason": finish_reason}
            chunk = self._envelope("chat.completion.chunk")
        else:
            choice = {"index": index, "text": text or "", "logprobs": None,
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

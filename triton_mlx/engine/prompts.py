"""Turning chat messages and prompt text into token ids.

Chat templates are rendered with our own sandboxed Jinja2 environment, configured the way
Hugging Face renders them (trim_blocks, lstrip_blocks, ``raise_exception``, ``tojson``), so a
model's own template and a ``--chat-template`` file behave the same. Nothing here touches MLX:
front-ends call it on the event loop.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment


class PromptError(ValueError):
    """The prompt cannot be built (no template, or the template refused the messages)."""


def _raise_exception(message: str) -> None:
    raise PromptError(message)


def _make_environment() -> jinja2.Environment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = lambda value, indent=None, ensure_ascii=False, sort_keys=False: (
        json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)
    )
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


class PromptBuilder:
    """Encodes prompts for one model with its tokenizer and chat template."""

    def __init__(self, tokenizer: Any, chat_template: str | None) -> None:
        self._tokenizer = tokenizer
        self.chat_template_source = chat_template
        self._template = _make_environment().from_string(chat_template) if chat_template else None
        self._special = {
            name: getattr(tokenizer, name, None) or ""
            for name in ("bos_token", "eos_token", "unk_token", "pad_token")
        }

    @property
    def has_chat_template(self) -> bool:
        return self._template is not None

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        """The prompt text for ``messages``, ending with the assistant's turn opening."""
        if self._template is None:
            raise PromptError(
                "this model has no chat template; use /v1/completions, or start the server "
                "with --chat-template FILE"
            )
        try:
            return self._template.render(
                messages=messages, add_generation_prompt=True, **self._special
            )
        except PromptError:
            raise
        except jinja2.TemplateError as exc:
            raise PromptError(f"the chat template failed to render: {exc}") from exc

    def chat(self, messages: list[dict[str, Any]]) -> list[int]:
        """Token ids for a chat; the template already places any BOS token."""
        return self._tokenizer.encode(self.render_chat(messages), add_special_tokens=False)

    def completion(self, text: str) -> list[int]:
        """Token ids for a raw prompt, with the tokenizer's own special tokens (e.g. BOS)."""
        return self._tokenizer.encode(text, add_special_tokens=True)

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

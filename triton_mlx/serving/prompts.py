"""Turning chat messages and prompt text into token ids.

Chat templates are rendered with our own sandboxed Jinja2 environment, configured the way
Hugging Face renders them (trim_blocks, lstrip_blocks, ``raise_exception``, ``tojson``), so a
model's own template and a ``--chat-template`` file behave the same. Nothing here touches MLX:
front-ends call it on the event loop.
"""

from __future__ import annotations

import json
import re
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
        self.token_bytes = TokenBytes(tokenizer)
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

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=False)

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte <-> printable-character table used by byte-level BPE vocabularies."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


_BYTE_DECODER = {char: byte for byte, char in _bytes_to_unicode().items()}
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class TokenBytes:
    """The raw bytes of single tokens, for logprobs (a token may hold part of a character)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        decoder = getattr(backend, "decoder", None)
        self._byte_level = "ByteLevel" in type(decoder).__name__ or "ByteLevel" in repr(decoder)
        self._cache: dict[int, bytes] = {}

    def __call__(self, token_id: int) -> bytes:
        cached = self._cache.get(token_id)
        if cached is None:
            cached = self._cache[token_id] = self._lookup(token_id)
        return cached

    def _lookup(self, token_id: int) -> bytes:
        piece = self._tokenizer.convert_ids_to_tokens(token_id)
        if piece is None:
            return b""
        if self._tokenizer.convert_tokens_to_ids(piece) in self._special_ids():
            return piece.encode()
        if self._byte_level and all(ch in _BYTE_DECODER for ch in piece):
            return bytes(_BYTE_DECODER[ch] for ch in piece)
        fallback = _BYTE_FALLBACK.fullmatch(piece)
        if fallback:  # SentencePiece byte fallback
            return bytes([int(fallback.group(1), 16)])
        return piece.replace("\u2581", " ").encode()  # SentencePiece's word-start marker

    def _special_ids(self) -> set[int]:
        return set(getattr(self._tokenizer, "all_special_ids", ()))


def token_text(raw: bytes) -> str:
    """How OpenAI shows a token: its text, or ``bytes:\\xNN...`` when not valid UTF-8 alone."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)

"""Turning chat messages and prompt text into token ids.

Chat templates render exactly as transformers' ``apply_chat_template`` renders them, without
importing transformers: our own sandboxed Jinja2 environment is configured the same way (the
same options, filters, globals and ``{% generation %}`` tag), and the template sees the same
variables (the messages as transformers normalizes them, ``tools``, ``documents``,
``add_generation_prompt``, the special tokens, extra keyword arguments). So a model's own
template and a ``--chat-template`` file behave as they do everywhere else. Nothing here touches
MLX: front-ends call it on the event loop.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment


class PromptError(ValueError):
    """The prompt cannot be built from this request (no template, or the template or the
    messages failed); front-ends answer 400 naming ``messages``."""


class ChatTemplateError(ValueError):
    """A chat template does not compile; the model cannot serve chat with it."""


# -- The Jinja environment, as transformers' ``_compile_jinja_template`` builds it ----------------


class _GenerationTag(Extension):
    """``{% generation %}...{% endgeneration %}`` marks the assistant's part of a chat (transformers
    uses it for training masks); rendering outputs the body unchanged."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> nodes.CallBlock:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: jinja2.runtime.Macro) -> str:
        return caller()


class _TemplateDict:
    """The ``dict`` global: builds dicts, but gives no access to the ``dict`` type itself."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """``namespace()`` that refuses underscore names, which could reach Python internals."""

    def __init__(*args: Any, **kwargs: Any) -> None:
        # Jinja's own signature trick, so that ``namespace(self=...)`` still works
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: object) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"chat templates cannot store underscore-prefixed attributes, got {name!r}"
            )


def _raise_exception(message: str) -> None:
    raise PromptError(f"the chat template refused the messages: {message}")


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """Jinja's own ``tojson`` escapes HTML characters; chat templates expect plain JSON."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(format_: str) -> str:
    return datetime.now().strftime(format_)


def _make_environment() -> jinja2.Environment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True,
        extensions=[_GenerationTag, "jinja2.ext.loopcontrols"],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env


# -- What the template sees, as transformers' ``apply_chat_template`` prepares it -----------------

_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
_RESERVED = {"messages", "tools", "documents", "add_generation_prompt"}
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "
_ONLY = ""  # the name a model's one, unnamed, chat template is kept under


def _plain(value: Any) -> Any:
    """``value`` rebuilt from plain JSON types, as transformers rebuilds everything the template
    sees, so the sandbox never meets an object with methods of its own; also a fresh copy, so
    tagging the final message leaves the caller's messages alone. (Requests arrive as JSON, so
    the numpy, dataclass and pydantic objects transformers also flattens never reach here.)"""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    return f"<{type(value).__name__}>"


def _template_messages(messages: Any) -> list[dict]:
    """The messages as a template sees them: keys whose value is None dropped (templates handle
    a missing ``content`` better than ``None``), and the reasoning copied under every name
    templates read it by."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise PromptError("messages must be a non-empty list")
    chat = []
    for message in messages:
        if not isinstance(message, Mapping):
            raise PromptError(f"each message must be an object, got {message!r}")
        message = _plain({key: value for key, value in message.items() if value is not None})
        reasoning = next((message[key] for key in _REASONING_FIELDS if key in message), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        chat.append(message)
    return chat


def _list_of_objects(name: str, items: list[dict] | None) -> list[dict] | None:
    if items is None:
        return None
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, Mapping) for i in items):
        raise PromptError(f"{name} must be a list of objects")
    return _plain(list(items))


def _tag_final_message(chat: list[dict], source: str) -> str:
    """Mark the end of the final message's text, so the prompt can be cut right after it (the
    model continues that message); returns the text being continued."""
    content = chat[-1].get("content")
    if content is None:
        raise PromptError("continue_final_message: the final message has no content to continue")
    if "content" not in source:
        raise PromptError("continue_final_message: this chat template does not read 'content'")
    if isinstance(content, str):
        chat[-1]["content"] = content + _CONTINUE_TAG
        return content
    for block in reversed(content if isinstance(content, list) else []):
        if isinstance(block, dict) and isinstance(block.get("text"), str):
            text = block["text"]
            block["text"] = text + _CONTINUE_TAG
            return text
    raise PromptError("continue_final_message: the final message has no text to continue")


def _cut_after_final_message(rendered: str, final_text: str) -> str:
    marker = _CONTINUE_TAG.strip()
    if final_text.strip() not in rendered or marker not in rendered:
        raise PromptError("continue_final_message: the chat template dropped part of the final "
                          "message, so it cannot be continued")
    at = rendered.rindex(marker)
    if rendered[at:at + len(_CONTINUE_TAG)] == _CONTINUE_TAG:
        return rendered[:at]
    return rendered[:at].rstrip()  # the template trimmed the message's trailing space


# -- The builder ----------------------------------------------------------------------------------


class PromptBuilder:
    """Encodes prompts for one model with its tokenizer and chat template.

    ``tokenizer`` is mlx-lm's ``TokenizerWrapper`` or the Hugging Face tokenizer inside it (the
    wrapper forwards what is read here). ``chat_template`` is the template text, or named
    templates as a tokenizer may hold them: ``tool_use`` serves requests with tools and
    ``default`` the others, as transformers chooses. Every template compiles here, so a broken one
    fails the model's load (``ChatTemplateError``) rather than its requests.
    """

    def __init__(self, tokenizer: Any, chat_template: str | Mapping[str, str] | None) -> None:
        self._tokenizer = tokenizer
        named = dict(chat_template) if isinstance(chat_template, Mapping) else None
        if named is None and chat_template:
            named = {_ONLY: chat_template}
        self._sources: dict[str, str] = named or {}
        environment = _make_environment()
        self._templates = {
            name: _compile(environment, name, source) for name, source in self._sources.items()
        }
        self.chat_template_source = self._sources.get(_ONLY, self._sources.get("default"))
        self.token_bytes = TokenBytes(tokenizer)
        self._special_tokens = _plain(dict(getattr(tokenizer, "special_tokens_map", None) or {}))
        self._special_ids: dict[str, int] | None = None

    @property
    def tokenizer(self) -> Any:
        """The tokenizer (for what it carries besides encoding: a response template)."""
        return self._tokenizer

    @property
    def has_chat_template(self) -> bool:
        return bool(self._templates)

    def render_chat(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict] | None = None,
        documents: list[dict] | None = None,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        template_kwargs: dict[str, Any] | None = None,
    ) -> str:
        """The prompt text for ``messages``: by default ending with the assistant's turn opening;
        with ``continue_final_message``, ending inside the final message so the model goes on
        with it. ``template_kwargs`` are extra template variables (e.g. ``enable_thinking``)."""
        name = self._choose(tools)
        if continue_final_message and add_generation_prompt:
            raise PromptError("continue_final_message and add_generation_prompt cannot both be set")
        chat = _template_messages(messages)
        variables = dict(template_kwargs or {})
        if reserved := sorted(_RESERVED & variables.keys()):
            raise PromptError(f"template variables cannot be named {', '.join(reserved)}")
        variables = {**self._special_tokens, **_plain(variables)}
        final_text = _tag_final_message(chat, self._sources[name]) if continue_final_message else ""
        try:
            rendered = self._templates[name].render(
                messages=chat, tools=_list_of_objects("tools", tools),
                documents=_list_of_objects("documents", documents),
                add_generation_prompt=add_generation_prompt, **variables,
            )
        except PromptError:
            raise
        except Exception as exc:  # the template is code: whatever it raises, these messages fail
            raise PromptError(
                f"the chat template failed on these messages: {type(exc).__name__}: {exc}"
            ) from exc
        if continue_final_message:
            return _cut_after_final_message(rendered, final_text)
        return rendered

    def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict] | None = None,
        documents: list[dict] | None = None,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        template_kwargs: dict[str, Any] | None = None,
    ) -> list[int]:
        """Token ids for a chat (arguments as ``render_chat``); the template places any BOS."""
        text = self.render_chat(
            messages, tools=tools, documents=documents,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message, template_kwargs=template_kwargs,
        )
        return self.encode_rendered(text)

    def encode_rendered(self, text: str) -> list[int]:
        """Token ids of a rendered chat (its template placed any BOS)."""
        return self._tokenizer.encode(text, add_special_tokens=False)

    def template_source(self, *, with_tools: bool = False) -> str | None:
        """The source of the template a request (with tools or not) renders with."""
        if not self._templates:
            return None
        return self._sources[self._choose([] if with_tools else None)]

    def special_token_id(self, text: str) -> int | None:
        """The id of the special token ``text`` is (decoding skips those), else None."""
        if self._special_ids is None:
            added = getattr(self._tokenizer, "added_tokens_decoder", None) or {}
            self._special_ids = {getattr(t, "content", str(t)): i for i, t in added.items()
                                 if getattr(t, "special", False)}
        return self._special_ids.get(text)

    def completion(self, text: str) -> list[int]:
        """Token ids for a raw prompt, with the tokenizer's own special tokens (e.g. BOS)."""
        return self._tokenizer.encode(text, add_special_tokens=True)

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=False)

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def _choose(self, tools: list[dict] | None) -> str:
        """Which template serves this request, as transformers' ``get_chat_template`` picks."""
        if not self._templates:
            raise PromptError(
                "this model has no chat template; use /v1/completions, or start the server "
                "with --chat-template FILE"
            )
        if _ONLY in self._templates:
            return _ONLY
        if tools is not None and "tool_use" in self._templates:
            return "tool_use"
        if "default" in self._templates:
            return "default"
        raise PromptError(f"this model's chat templates ({', '.join(sorted(self._templates))}) "
                          "include no default one")


def _compile(environment: jinja2.Environment, name: str, source: str) -> jinja2.Template:
    try:
        return environment.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        which = "chat template" if name == _ONLY else f"chat template {name!r}"
        raise ChatTemplateError(
            f"the {which} does not compile (line {exc.lineno}): {exc.message}"
        ) from None


# -- Token bytes, for logprobs --------------------------------------------------------------------


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

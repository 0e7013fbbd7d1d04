"""Tool calls in generated text: a streaming parser per output format.

A model writes its tool calls as text in its family's format; ``make_parser`` gives the parser
that turns that text, arriving in arbitrary chunks, into plain text (``TextDelta``) and calls
(``CallStart``, then ``CallArguments`` fragments) as soon as each is known, and ``detect_format``
says which format a chat template asks for. Pure Python on the standard library.
"""

from __future__ import annotations

from collections.abc import Callable

from triton_mlx.serving.tool_calls.base import ToolCallParser, random_id
from triton_mlx.serving.tool_calls.detect import detect_format
from triton_mlx.serving.tool_calls.events import (
    CallArguments,
    CallEvent,
    CallStart,
    Event,
    TextDelta,
    ToolCall,
)
from triton_mlx.serving.tool_calls.hermes import HermesParser
from triton_mlx.serving.tool_calls.llama3_json import Llama3JsonParser
from triton_mlx.serving.tool_calls.mistral import MistralParser
from triton_mlx.serving.tool_calls.pythonic import PythonicParser
from triton_mlx.serving.tool_calls.qwen3_coder import Qwen3CoderParser

__all__ = [
    "FORMATS",
    "CallArguments",
    "CallEvent",
    "CallStart",
    "Event",
    "TextDelta",
    "ToolCall",
    "ToolCallParser",
    "detect_format",
    "make_parser",
    "new_call_id",
]

_PARSERS: dict[str, type[ToolCallParser]] = {
    "hermes": HermesParser,
    "qwen3_coder": Qwen3CoderParser,
    "llama3_json": Llama3JsonParser,
    "mistral": MistralParser,
    "pythonic": PythonicParser,
}
FORMATS: tuple[str, ...] = tuple(_PARSERS)


def new_call_id() -> str:
    """An OpenAI-style call id: ``call_`` and 24 letters or digits."""
    return random_id(24, "call_")


def _mistral_id() -> str:
    return random_id(9)  # Mistral's templates refuse any other tool-call id


def make_parser(
    format: str, tools: list[dict], new_id: Callable[[], str] | None = None
) -> ToolCallParser:
    """A fresh parser for one output in ``format`` (one of FORMATS). ``tools`` are the
    request's OpenAI tool definitions (Qwen3-Coder types its parameters by them); ``new_id``
    makes call ids."""
    parser = _PARSERS.get(format)
    if parser is None:
        raise ValueError(f"unknown tool-call format {format!r}; known: {', '.join(FORMATS)}")
    if new_id is None:
        new_id = _mistral_id if format == "mistral" else new_call_id
    return parser(tools, new_id)

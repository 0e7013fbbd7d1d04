"""What a tool-call parser hands the front-end: text, and calls as they become known.

A stream of events, not a final answer, because clients want the text and the arguments while
the model is still writing them: ``CallStart`` as soon as a call's name is known, then
``CallArguments`` fragments whose concatenation is the call's JSON arguments text.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TextDelta:
    """User-visible content (never call markup, except a broken call returned as text)."""

    text: str


@dataclass(frozen=True)
class CallStart:
    """Call ``index`` begins: its id and name are known."""

    index: int
    id: str
    name: str


@dataclass(frozen=True)
class CallArguments:
    """More of call ``index``'s arguments JSON text."""

    index: int
    fragment: str


CallEvent = CallStart | CallArguments
Event = TextDelta | CallStart | CallArguments


@dataclass(frozen=True)
class ToolCall:
    """One parsed call; ``arguments`` is the JSON text of an object."""

    id: str
    name: str
    arguments: str

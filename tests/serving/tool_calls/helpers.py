"""Feeding a parser every way: whole, split in two at every position, a character at a time
(and, for good measure, cut into several pieces at a few seeded random places).

A model's text reaches the parser in chunks of any size, so the assembled result (text, calls,
``malformed``) must not depend on where the chunks were cut. ``parse_every_way`` checks that for
one text and returns the common result; ``run`` also checks the events a parser hands out
against its final ``calls``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from triton_mlx.serving.tool_calls import (
    CallArguments,
    CallStart,
    TextDelta,
    make_parser,
)

WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    }
]


@dataclass(frozen=True)
class Result:
    text: str
    calls: list[tuple[str, object]]  # (name, arguments parsed as JSON, or the raw text)
    malformed: bool
    ids: list[str]


def _arguments(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return ("unparsed", text)


def run(format: str, chunks: list[str], tools: list[dict] | None = None, new_id=None):
    """Feed ``chunks`` then finish; check the events against the final calls; return the
    assembled result and the events."""
    parser = make_parser(format, WEATHER_TOOLS if tools is None else tools, new_id)
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
    events += parser.finish()
    calls = parser.calls
    starts = [e for e in events if isinstance(e, CallStart)]
    assert [s.index for s in starts] == list(range(len(calls)))
    assert [(s.id, s.name) for s in starts] == [(c.id, c.name) for c in calls]
    fragments = [""] * len(calls)
    started = 0
    for event in events:
        if isinstance(event, CallStart):
            started += 1
        elif isinstance(event, CallArguments):
            assert event.index == started - 1, "arguments only for the latest call"
            assert event.fragment
            fragments[event.index] += event.fragment
        else:
            assert isinstance(event, TextDelta) and event.text
    assert fragments == [c.arguments for c in calls]
    if not parser.malformed:
        for call in calls:
            assert isinstance(json.loads(call.arguments), dict)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    result = Result(
        text,
        [(c.name, _arguments(c.arguments)) for c in calls],
        parser.malformed,
        [c.id for c in calls],
    )
    return result, events


def _comparable(result: Result) -> tuple:
    return result.text, result.calls, result.malformed


def parse_every_way(format: str, text: str, tools: list[dict] | None = None) -> Result:
    """The result of ``text``, checked to be the same however it is cut into chunks."""
    whole, _ = run(format, [text], tools)
    expected = _comparable(whole)
    by_char, _ = run(format, list(text), tools)
    assert _comparable(by_char) == expected, "fed a character at a time"
    for cut in range(1, len(text)):
        split, _ = run(format, [text[:cut], text[cut:]], tools)
        assert _comparable(split) == expected, f"split at {cut}: {text[:cut]!r}"
    shuffle = random.Random(text)  # a few many-piece cuts too, the same on every run
    for _ in range(10):
        cuts = sorted(shuffle.sample(range(1, len(text)), min(len(text) - 1, 6)))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert _comparable(run(format, chunks, tools)[0]) == expected, f"chunks {chunks!r}"
    return whole

"""One chat choice read back: reasoning first, then answer text and tool calls, the same
whether the engine's text arrives whole or a character at a time; ``stop`` becomes
``tool_calls`` when the reply made calls."""

from __future__ import annotations

import json

import pytest

from triton_mlx.serving.chat import ChatPlan
from triton_mlx.serving.generation import ChoiceDelta
from triton_mlx.serving.reasoning import ReasoningTags
from triton_mlx.serving.tool_calls import CallArguments, CallStart
from triton_mlx.serving.tools import Tool, ToolRequest

WEATHER = Tool("get_weather", {"type": "object", "properties": {"city": {"type": "string"}}})
REPLY = ("<think>\nThe user wants Paris weather; call the tool.\n</think>\n\n"
         "Let me check.\n<tool_call>\n"
         '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>')


def read(plan: ChatPlan, pieces: list[str], finish: str = "stop"):
    reader = plan.reader()
    deltas = [reader.read(ChoiceDelta(0, piece)) for piece in pieces[:-1]]
    deltas.append(reader.read(ChoiceDelta(0, pieces[-1], finish)))
    content = "".join(d.content for d in deltas)
    reasoning = "".join(d.reasoning for d in deltas)
    starts = [e for d in deltas for e in d.calls if isinstance(e, CallStart)]
    arguments = "".join(e.fragment for d in deltas for e in d.calls
                        if isinstance(e, CallArguments))
    return content, reasoning, [(s.name, s.id) for s in starts], arguments, deltas[-1], reader


@pytest.mark.parametrize("split", ["whole", "characters"])
def test_reasoning_then_a_call(split):
    plan = ChatPlan(tokens=[], grammar=None, tools=ToolRequest((WEATHER,)),
                    tool_format="default", reasoning=ReasoningTags())
    pieces = [REPLY] if split == "whole" else list(REPLY)
    content, reasoning, starts, arguments, last, reader = read(plan, pieces)
    assert reasoning == "The user wants Paris weather; call the tool.\n"
    assert content.strip() == "Let me check."
    assert [name for name, _ in starts] == ["get_weather"]
    assert json.loads(arguments) == {"city": "Paris"}
    assert last.finish_reason == "tool_calls"
    assert [c.name for c in reader.calls] == ["get_weather"]
    assert reader.calls[0].id == starts[0][1]


def test_a_reply_cut_by_max_tokens_stays_length():
    plan = ChatPlan(tokens=[], grammar=None, tools=ToolRequest((WEATHER,)),
                    tool_format="hermes")
    cut = REPLY.split("</think>\n\n")[1][:-20]
    *_, last, reader = read(plan, [cut], finish="length")
    assert last.finish_reason == "length"


def test_without_tools_or_reasoning_the_text_is_content():
    plan = ChatPlan(tokens=[], grammar=None)
    content, reasoning, starts, _, last, _ = read(plan, list(REPLY))
    assert content == REPLY and reasoning == "" and starts == []
    assert last.finish_reason == "stop"


def test_tool_choice_none_parses_nothing():
    plan = ChatPlan(tokens=[], grammar=None, tools=ToolRequest((WEATHER,), "none"),
                    tool_format="hermes")
    content, _, starts, _, last, _ = read(plan, [REPLY])
    assert starts == [] and content == REPLY and last.finish_reason == "stop"

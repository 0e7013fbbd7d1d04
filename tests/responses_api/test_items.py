"""Input items into the neutral chat, and chat deltas into output items and events: the
translation both ways, without a server (the reasoning path has no reasoning model here)."""

from __future__ import annotations

import pytest

from triton_mlx.responses_api.input_items import read_input
from triton_mlx.responses_api.output import OutputBuilder
from triton_mlx.serving.chat import ChatDelta
from triton_mlx.serving.errors import RequestError
from triton_mlx.serving.tool_calls import CallArguments, CallStart


def test_a_codex_history_becomes_chat_turns():
    messages = read_input([
        {"type": "message", "role": "developer", "content": "rules"},
        {"role": "user", "content": [{"type": "input_text", "text": "list "},
                                     {"type": "input_text", "text": "files"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": None,
         "content": [{"type": "reasoning_text", "text": "I should run ls."}]},
        {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": '{"a":1}'},
        {"type": "function_call", "call_id": "c2", "name": "shell", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "a.txt"},
        {"type": "function_call_output", "call_id": "c2", "output": [
            {"type": "input_text", "text": "b.txt"}]},
        {"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": "Two files.", "annotations": []}]},
    ])
    assert messages == [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "list files"},
        {"role": "assistant", "content": None, "reasoning_content": "I should run ls.",
         "tool_calls": [
             {"id": "c1", "type": "function", "function": {"name": "shell",
                                                          "arguments": '{"a":1}'}},
             {"id": "c2", "type": "function", "function": {"name": "shell",
                                                          "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "a.txt"},
        {"role": "tool", "tool_call_id": "c2", "content": "b.txt"},
        {"role": "assistant", "content": "Two files."},
    ]


@pytest.mark.parametrize("item", [
    {"type": "input_image", "image_url": "x"},
    {"type": "web_search_call", "id": "ws_1"},
    {"type": "message", "role": "tool", "content": "x"},
    {"type": "function_call", "call_id": "c", "name": "f", "arguments": {}},
    {"type": "function_call_output", "call_id": "", "output": "x"},
    {"type": "message", "role": "user", "content": "x", "extra": 1},
])
def test_what_cannot_be_read_is_a_400_naming_input(item):
    with pytest.raises(RequestError) as info:
        read_input([item])
    assert info.value.status == 400 and info.value.param == "input"


def test_reasoning_text_and_calls_become_items_with_their_events():
    builder = OutputBuilder()
    events = builder.feed(ChatDelta(0, reasoning="Think"))
    events += builder.feed(ChatDelta(0, reasoning="ing."))
    events += builder.feed(ChatDelta(0, content="Calling."))
    events += builder.feed(ChatDelta(0, calls=(CallStart(0, "call_1", "f"),
                                               CallArguments(0, '{"x":'))))
    events += builder.feed(ChatDelta(0, calls=(CallArguments(0, " 1}"),),
                                     finish_reason="tool_calls"))
    assert [i["type"] for i in builder.items] == ["reasoning", "message", "function_call"]
    reasoning, message, call = builder.items
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Thinking."}]
    assert message["content"][0]["text"] == "Calling."
    assert call["call_id"] == "call_1" and call["arguments"] == '{"x": 1}'
    kinds = [e["type"] for e in events]
    assert kinds == [
        "response.output_item.added", "response.content_part.added",
        "response.reasoning_text.delta", "response.reasoning_text.delta",
        "response.reasoning_text.done", "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    assert [e["output_index"] for e in events if e["type"].endswith("item.added")] == [0, 1, 2]
    assert builder.conversation() == [{
        "role": "assistant", "content": "Calling.", "reasoning_content": "Thinking.",
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "f", "arguments": '{"x": 1}'}}]}]


def test_a_length_cut_leaves_the_message_incomplete():
    builder = OutputBuilder()
    builder.feed(ChatDelta(0, content="Once upon"))
    events = builder.feed(ChatDelta(0, content=" a", finish_reason="length"))
    assert builder.items[0]["status"] == "incomplete"
    assert events[-1]["item"]["status"] == "incomplete"
    assert events[-3]["type"] == "response.output_text.done"
    assert events[-3]["text"] == "Once upon a"

"""The hermes format (Hermes, Qwen2.5, Qwen3, SmolLM3, and the server's default tool prompt).

Outputs marked "vLLM" are taken from vLLM's tests/tool_parsers/test_hermes_tool_parser.py
(github.com/vllm-project/vllm); the Qwen-style layouts follow how the Qwen2.5/Qwen3 templates in
tests/serving/templates render calls (``\\n<tool_call>\\n{...}\\n</tool_call>``).
"""

from __future__ import annotations

import logging
import re

import pytest

from tests.serving.tool_calls.helpers import parse_every_way, run
from triton_mlx.serving.tool_calls import (
    FORMATS,
    CallArguments,
    CallStart,
    TextDelta,
    make_parser,
)


def test_plain_text_passes_through():
    # vLLM: test_hermes_parser_streaming_just_forward_text
    text = "This is some prior text that has nothing to do with tool calling."
    result = parse_every_way("hermes", text)
    assert (result.text, result.calls, result.malformed) == (text, [], False)


def test_one_call():
    # vLLM: test_hermes_parser_streaming_failure_case_bug_19056
    text = '<tool_call>\n{"name": "final_answer", "arguments": {"trigger": true}}\n</tool_call>'
    result = parse_every_way("hermes", text)
    assert result.calls == [("final_answer", {"trigger": True})]
    assert (result.text, result.malformed) == ("", False)


def test_call_split_over_lines():
    # vLLM: test_hermes_parser_streaming, with the line breaks the model may put in
    text = (
        '<tool_call>\n{"name": "get_current_temperature",\n"arguments": {"location":\n'
        '"San Francisco, California, United States", "unit": "celsius"}}\n</tool_call>'
    )
    result = parse_every_way("hermes", text)
    assert result.calls == [
        (
            "get_current_temperature",
            {"location": "San Francisco, California, United States", "unit": "celsius"},
        )
    ]


def test_text_before_a_call():
    # vLLM: test_hermes_streaming_content_then_tool_call_with_stream_interval
    text = (
        "Sure, let me check the weather."
        '<tool_call>{"name": "get_weather", "arguments": {"city": "NYC"}}</tool_call>'
    )
    result = parse_every_way("hermes", text)
    assert result.text == "Sure, let me check the weather."
    assert result.calls == [("get_weather", {"city": "NYC"})]


def test_parallel_calls():
    # vLLM: test_hermes_streaming_multiple_tool_calls_with_stream_interval
    text = (
        '<tool_call>{"name": "search", "arguments": {"q": "cats"}}</tool_call>'
        '<tool_call>{"name": "search", "arguments": {"q": "dogs"}}</tool_call>'
    )
    result = parse_every_way("hermes", text)
    assert result.calls == [("search", {"q": "cats"}), ("search", {"q": "dogs"})]
    assert result.text == ""


def test_parallel_calls_qwen_layout_and_text_between():
    text = (
        "I'll check both cities.\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        "Also:\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Tokyo", "days": 3}}\n</tool_call>\n'
    )
    result = parse_every_way("hermes", text)
    assert result.calls == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Tokyo", "days": 3}),
    ]
    # whitespace around calls is not content; text between them is
    assert result.text == "I'll check both cities.\n\nAlso:\n"
    assert len(set(result.ids)) == 2


def test_arguments_as_a_json_string():
    # vLLM: test_hermes_parser_non_streaming_serialized_arguments (Granite 4 writes them so)
    text = (
        "<tool_call>\n"
        '{"name": "get_db_config", "arguments": "{\\"param\\": \\"max_connections\\"}"}\n'
        "</tool_call>"
    )
    result = parse_every_way("hermes", text)
    assert result.calls == [("get_db_config", {"param": "max_connections"})]
    assert not result.malformed


def test_arguments_as_a_bare_string_are_malformed():
    # vLLM: test_hermes_parser_non_streaming_bare_string_arguments
    text = '<tool_call>\n{"name": "do_thing", "arguments": "hello"}\n</tool_call>'
    result = parse_every_way("hermes", text)
    assert result.calls == [("do_thing", "hello")]  # kept as received
    assert result.malformed and result.text == ""


def test_nested_unicode_and_escaped_quotes():
    text = (
        "<tool_call>\n"
        '{"name": "create_event", "arguments": {"title": "Réunion \\"équipe\\" 東京 🎉", '
        '"attendees": [{"name": "Zoë", "tags": ["a", "b"]}, {"name": "O\'Brien"}], '
        '"meta": {"nested": {"deep": [1, 2.5, null, false, {}]}}, '
        '"code": "print(\\"hi\\")\\nx = {\'a\': [1]}  # </tool_call> in a string"}}\n'
        "</tool_call>"
    )
    result = parse_every_way("hermes", text)
    assert result.calls == [
        (
            "create_event",
            {
                "title": 'Réunion "équipe" 東京 🎉',
                "attendees": [{"name": "Zoë", "tags": ["a", "b"]}, {"name": "O'Brien"}],
                "meta": {"nested": {"deep": [1, 2.5, None, False, {}]}},
                "code": "print(\"hi\")\nx = {'a': [1]}  # </tool_call> in a string",
            },
        )
    ]
    assert not result.malformed


def test_raw_newline_inside_a_string_is_escaped():
    text = '<tool_call>{"name": "write", "arguments": {"text": "line 1\nline 2"}}</tool_call>'
    result = parse_every_way("hermes", text)
    assert result.calls == [("write", {"text": "line 1\nline 2"})]
    assert not result.malformed


def test_arguments_before_name_and_unknown_keys():
    text = (
        '<tool_call>{"arguments": {"city": "Paris"}, "type": "function", '
        '"name": "get_weather"}</tool_call>'
    )
    result = parse_every_way("hermes", text)
    assert result.calls == [("get_weather", {"city": "Paris"})]


def test_missing_arguments_mean_none():
    result = parse_every_way("hermes", '<tool_call>{"name": "get_time"}</tool_call>')
    assert result.calls == [("get_time", {})]
    assert not result.malformed


def test_unknown_function_is_still_a_call():
    text = '<tool_call>{"name": "launch_rocket", "arguments": {"to": "Mars"}}</tool_call>'
    result = parse_every_way("hermes", text)
    assert result.calls == [("launch_rocket", {"to": "Mars"})]


def test_no_closing_tag_at_the_end():
    # vLLM: test_hermes_parser_non_streaming_tool_call_until_eos
    text = '<tool_call>\n{"name": "final_answer", "arguments": {"trigger": true}}'
    result = parse_every_way("hermes", text)
    assert result.calls == [("final_answer", {"trigger": True})]
    assert (result.text, result.malformed) == ("", False)


def test_text_after_an_unclosed_call():
    text = '<tool_call>{"name": "f", "arguments": {}}}\nThanks</tool_call>Bye'
    result = parse_every_way("hermes", text)
    assert (result.text, result.calls, result.malformed) == ("Bye", [("f", {})], True)
    text = '<tool_call>{"name": "f", "arguments": {}}\nThanks'
    result = parse_every_way("hermes", text)
    assert (result.text, result.calls, result.malformed) == ("\nThanks", [("f", {})], True)


def test_text_after_the_calls():
    text = (
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>\n\n'
        "Anything else?"
    )
    result = parse_every_way("hermes", text)
    assert result.text == "\n\nAnything else?"
    assert result.calls == [("get_weather", {"city": "Oslo"})]


def test_markup_that_is_not_json_comes_back_as_text(caplog):
    text = "Checking.<tool_call>\nnot json at all\n</tool_call> Done."
    with caplog.at_level(logging.WARNING, logger="triton_mlx.serving"):
        result = parse_every_way("hermes", text)
    assert (result.text, result.calls, result.malformed) == (text, [], True)
    assert "could not be parsed" in caplog.text


def test_json_that_is_not_a_call_comes_back_as_text():
    for text in (
        '<tool_call>{"city": "Paris"}</tool_call>',
        '<tool_call>{"name": "", "arguments": {}}</tool_call>',
        '<tool_call>{"name": 7, "arguments": {}}</tool_call>',
        '<tool_call>["get_weather", {"city": "Paris"}]</tool_call>',
    ):
        result = parse_every_way("hermes", text)
        assert (result.text, result.calls, result.malformed) == (text, [], True)


def test_broken_markup_does_not_hide_the_next_call():
    text = (
        "<tool_call>oops</tool_call>"
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>'
    )
    result = parse_every_way("hermes", text)
    assert result.text == "<tool_call>oops</tool_call>"
    assert result.calls == [("get_weather", {"city": "Rome"})]
    assert result.malformed


def test_invalid_json_after_the_call_started():
    # the name was announced, then the arguments broke: the call stays, its markup is not text
    text = '<tool_call>{"name": "f", "arguments": {"a": 1]}</tool_call>Done.'
    result = parse_every_way("hermes", text)
    assert result.calls == [("f", ("unparsed", '{"a": 1'))]
    assert (result.text, result.malformed) == ("Done.", True)


def test_missing_closing_brace_is_malformed():
    # vLLM: test_hermes_parser_non_streaming_tool_call_invalid_json
    text = '<tool_call>\n{"name": "final_answer", "arguments": {"trigger": true}'
    result = parse_every_way("hermes", text)
    assert result.calls == [("final_answer", {"trigger": True})]
    assert result.malformed and result.text == ""


def test_truncated_inside_the_arguments():
    text = 'Let me look.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par'
    result = parse_every_way("hermes", text)
    assert result.text == "Let me look."
    assert result.calls == [("get_weather", ("unparsed", '{"city": "Par'))]
    assert result.malformed


def test_truncated_before_the_name():
    text = 'Let me look.<tool_call>\n{"name": "get_we'
    result = parse_every_way("hermes", text)
    assert (result.text, result.calls, result.malformed) == (text, [], True)


def test_a_marker_beginning_at_the_end_is_text():
    result = parse_every_way("hermes", "Use the <tool")
    assert (result.text, result.malformed) == ("Use the <tool", False)


def test_text_is_held_back_only_while_it_could_be_a_marker():
    parser = make_parser("hermes", [])
    assert parser.feed("a < b and <to") == [TextDelta("a < b and ")]
    assert parser.feed("p") == [TextDelta("<top")]
    assert parser.feed(" <tool_call") == [TextDelta(" ")]
    events = parser.feed('>{"name": "get_weather", "arguments": {"city": "Pa')
    assert [type(e) for e in events] == [CallStart, CallArguments]
    assert events[0].name == "get_weather" and events[0].index == 0
    assert events[1] == CallArguments(0, '{"city": "Pa')
    assert parser.feed('ris"}}') == [CallArguments(0, 'ris"}')]
    assert parser.feed("</tool_call>") == []
    assert parser.finish() == []
    assert parser.calls[0].arguments == '{"city": "Paris"}'


def test_call_ids():
    result, _ = run("hermes", ['<tool_call>{"name": "f", "arguments": {}}</tool_call>'])
    assert re.fullmatch(r"call_[A-Za-z0-9]{24}", result.ids[0])
    counter = iter(range(10))
    result, _ = run(
        "hermes",
        ['<tool_call>{"name": "f"}</tool_call><tool_call>{"name": "g"}</tool_call>'],
        new_id=lambda: f"id{next(counter)}",
    )
    assert result.ids == ["id0", "id1"]


def test_formats_and_unknown_format():
    assert FORMATS == ("hermes", "qwen3_coder", "llama3_json", "mistral", "pythonic")
    with pytest.raises(ValueError, match="unknown tool-call format"):
        make_parser("xml", [])


def test_feed_after_finish_is_refused():
    parser = make_parser("hermes", [])
    parser.finish()
    with pytest.raises(RuntimeError):
        parser.feed("more")

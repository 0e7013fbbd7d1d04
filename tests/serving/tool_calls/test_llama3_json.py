"""The Llama 3.1/3.2 JSON format: the reply is ``{"name": ..., "parameters": {...}}``.

Outputs marked "vLLM" come from vLLM's tests/tool_parsers/test_llama3_json_tool_parser.py
(github.com/vllm-project/vllm); the ``<|python_tag|>`` form is the one Llama 3.1's template
(tests/serving/templates/llama-3.1.jinja) uses for tool calls in ipython mode.
"""

from __future__ import annotations

import pytest

from tests.serving.tool_calls.helpers import parse_every_way
from triton_mlx.serving.tool_calls import CallArguments, CallStart, TextDelta, make_parser


def parse(text: str):
    return parse_every_way("llama3_json", text)


def test_plain_text_passes_through():
    # vLLM: test_extract_tool_calls_no_json
    text = "This is just some text without any tool calls"
    result = parse(text)
    assert (result.text, result.calls, result.malformed) == (text, [], False)


def test_json_later_in_the_reply_is_text():
    # the reply must begin with the call (vLLM: test_extract_tool_calls_simple, read strictly)
    text = 'Here is the result: {"name": "getOpenIncidentsTool", "parameters": {}}'
    result = parse(text)
    assert (result.text, result.calls, result.malformed) == (text, [], False)


def test_one_call():
    # vLLM: test_extract_tool_calls_with_arguments
    result = parse('{"name": "searchTool", "parameters": {"query": "test query", "limit": 10}}')
    assert result.calls == [("searchTool", {"query": "test query", "limit": 10})]
    assert (result.text, result.malformed) == ("", False)


def test_arguments_key_and_python_tag():
    # vLLM: test_extract_tool_calls_with_arguments_key, after Llama 3.1's <|python_tag|>
    result = parse('  <|python_tag|>{"name": "searchTool", "arguments": {"query": "test"}}')
    assert result.calls == [("searchTool", {"query": "test"})]
    assert result.text == ""


@pytest.mark.parametrize("separator", ["; ", ";", " ; ", ";\n", "\n"])
def test_parallel_calls(separator):
    # vLLM: test_extract_tool_calls_multiple_json and ..._streaming_parallel_separators
    text = separator.join([
        '{"name": "searchTool", "parameters": {"query": "test1"}}',
        '{"name": "getOpenIncidentsTool", "parameters": {}}',
        '{"name": "searchTool", "parameters": {"query": "test2"}}',
    ])
    result = parse(text)
    assert result.calls == [
        ("searchTool", {"query": "test1"}),
        ("getOpenIncidentsTool", {}),
        ("searchTool", {"query": "test2"}),
    ]
    assert (result.text, result.malformed) == ("", False)


def test_nested_brackets_escaped_quotes_and_unicode():
    # vLLM: ..._deeply_nested_json, ..._quotes_and_brackets_in_string, ..._escaped_quotes
    text = (
        '{"name": "complexTool", "parameters": {"level1": {"level2": {"level3": {"level4": '
        '{"value": "deep"}}}}, "query": "test {value} [complex]", "text": "He said '
        '\\"Hello {world}\\"", "city": "München 東京", "list": [[1, 2], [], {"a": null}]}}'
    )
    result = parse(text)
    assert result.calls == [("complexTool", {
        "level1": {"level2": {"level3": {"level4": {"value": "deep"}}}},
        "query": "test {value} [complex]",
        "text": 'He said "Hello {world}"',
        "city": "München 東京",
        "list": [[1, 2], [], {"a": None}],
    })]


def test_extra_type_key_is_skipped():
    result = parse('{"type": "function", "name": "get_weather", "parameters": {"city": "Oslo"}}')
    assert result.calls == [("get_weather", {"city": "Oslo"})]


def test_unknown_function_is_still_a_call():
    result = parse('{"name": "teleport", "parameters": {"to": "Mars"}}')
    assert result.calls == [("teleport", {"to": "Mars"})]


def test_text_after_the_call():
    # vLLM: test_extract_tool_calls_brace_in_trailing_text
    text = '{"name": "searchTool", "parameters": {"query": "test"}} I used {searchTool} for this.'
    result = parse(text)
    assert result.calls == [("searchTool", {"query": "test"})]
    assert result.text == " I used {searchTool} for this."


def test_missing_name_comes_back_as_text():
    # vLLM: test_extract_tool_calls_missing_name_key
    result = parse('{"parameters": {}}')
    assert (result.text, result.calls, result.malformed) == ('{"parameters": {}}', [], True)


def test_missing_parameters_is_not_a_call():
    # vLLM: test_extract_tool_calls_missing_parameters_and_arguments_key; a JSON answer that
    # merely has a "name" is not taken for a call either
    for text in ('{"name": "toolWithoutParams"}', '{"name": "John", "age": 30}'):
        result = parse(text)
        assert (result.text, result.calls, result.malformed) == (text, [], True)


def test_invalid_json_before_the_call_started():
    text = '{"name": "f", parameters: {}}'
    result = parse(text)
    assert (result.text, result.calls, result.malformed) == (text, [], True)


def test_invalid_parameters_after_the_call_started():
    # vLLM: test_extract_tool_calls_invalid_json (here the call had started: it stays)
    result = parse('{"name": "invalidTool", "parameters": {invalid json}')
    assert result.calls == [("invalidTool", ("unparsed", "{invalid json}"))]
    assert result.malformed and result.text == ""


def test_python_tag_without_json_is_malformed_text():
    # Llama 3.1's built-in tools (brave_search, wolfram_alpha) are not parsed here
    text = '<|python_tag|>brave_search.call(query="weather in Paris")'
    result = parse(text)
    assert (result.text, result.calls, result.malformed) == (text, [], True)


def test_truncated_inside_the_parameters():
    result = parse('{"name": "searchTool", "parameters": {"query": "te')
    assert result.calls == [("searchTool", ("unparsed", '{"query": "te'))]
    assert result.malformed and result.text == ""


def test_truncated_before_the_parameters():
    text = '{"name": "searchTo'
    result = parse(text)
    assert (result.text, result.calls, result.malformed) == (text, [], True)


def test_call_starts_when_its_parameters_begin():
    parser = make_parser("llama3_json", [])
    assert parser.feed('\n{"name": "searchTool", ') == []
    events = parser.feed('"parameters": {"query"')
    assert [type(e) for e in events] == [CallStart, CallArguments]
    assert events[1] == CallArguments(0, '{"query"')
    assert parser.feed(': "x"}}') == [CallArguments(0, ': "x"}')]
    assert parser.finish() == []


def test_text_reply_streams_once_it_cannot_be_a_call():
    parser = make_parser("llama3_json", [])
    assert parser.feed("  ") == []
    assert parser.feed("<|py") == []
    assert parser.feed("thon is fun") == [TextDelta("  <|python is fun")]

"""The Mistral formats after ``[TOOL_CALLS]``: a JSON list, ``name[ARGS]{...}``, ``[CALL_ID]``.

Outputs marked "vLLM" come from vLLM's tests/tool_parsers/test_mistral_tool_parser.py
(github.com/vllm-project/vllm). The ``[ARGS]``/``[CALL_ID]`` layouts and the ``"id"`` inside the
list are how Mistral Small 3.2's and Mistral Nemo's templates render calls
(tests/serving/tool_calls/templates/mistral-small-3.2.jinja, tests/serving/templates).
"""

from __future__ import annotations

import re

from tests.serving.tool_calls.helpers import parse_every_way, run
from triton_mlx.serving.tool_calls import CallArguments, CallStart, make_parser

WEATHER = {"city": "San Francisco", "state": "CA", "unit": "celsius"}


def parse(text: str):
    return parse_every_way("mistral", text)


def test_plain_text_passes_through():
    result = parse("This is a test")
    assert (result.text, result.calls, result.malformed) == ("This is a test", [], False)


def test_one_call_in_a_list():
    # vLLM: single_tool_add, single_tool_weather (pre-v11 tokenizer)
    result = parse('[TOOL_CALLS][{"name": "add", "arguments":{"a": 3.5, "b": 4}}]')
    assert result.calls == [("add", {"a": 3.5, "b": 4})]
    result = parse(
        '[TOOL_CALLS] [{"name": "get_current_weather", "arguments":{"city": "San Francisco", '
        '"state": "CA", "unit": "celsius"}}]'
    )
    assert result.calls == [("get_current_weather", WEATHER)]
    assert (result.text, result.malformed) == ("", False)


def test_list_with_odd_spacing_and_arguments_first():
    # vLLM: the streaming single_tool_add; argument_before_name_and_name_in_argument
    result = parse('[TOOL_CALLS]  [ {"name":"add" , "arguments" : {"a": 3, "b": 4} } ]')
    assert result.calls == [("add", {"a": 3, "b": 4})]
    result = parse('[TOOL_CALLS] [{"arguments":{"name": "John Doe"}, "name": "get_age"}]')
    assert result.calls == [("get_age", {"name": "John Doe"})]


def test_parallel_calls_in_a_list():
    # vLLM: multiple_tools
    result = parse(
        '[TOOL_CALLS] [{"name": "add", "arguments": {"a": 3.5, "b": 4}}, {"name": '
        '"get_current_weather", "arguments":{"city": "San Francisco", "state": "CA", '
        '"unit": "celsius"}}]'
    )
    assert result.calls == [("add", {"a": 3.5, "b": 4}), ("get_current_weather", WEATHER)]


def test_list_items_with_ids_as_nemo_renders_them():
    text = (
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, '
        '"id": "a1B2c3D4e"}]'
    )
    result = parse(text)
    assert result.calls == [("get_weather", {"city": "Paris"})]


def test_text_before_and_after_the_list():
    # vLLM: content_before_tool, trailing_data_after_json
    result = parse('Hello[TOOL_CALLS] [{"name": "add", "arguments":{"a": 1, "b": 2}}]')
    assert (result.text, result.calls) == ("Hello", [("add", {"a": 1, "b": 2})])
    result = parse(
        '[TOOL_CALLS] [{"name": "get_current_weather", "arguments":{"city": "Dallas", '
        '"state": "TX", "unit": "fahrenheit"}}]\nextra trailing data'
    )
    assert result.text == "\nextra trailing data"
    assert result.calls == [("get_current_weather", {"city": "Dallas", "state": "TX",
                                                     "unit": "fahrenheit"})]


def test_name_args_form():
    # Mistral Small 3.2 / Devstral: '[TOOL_CALLS]' + name + '[ARGS]' + arguments|tojson
    result = parse('[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "days": 3}')
    assert result.calls == [("get_weather", {"city": "Paris", "days": 3})]
    assert (result.text, result.malformed) == ("", False)


def test_name_args_form_parallel_and_without_args_marker():
    # vLLM: v11 multiple_tool_calls and content_before_tool ([ARGS] skipped as special)
    result = parse('[TOOL_CALLS]add{"a": 3.5, "b": 4}[TOOL_CALLS]multiply{"a": 3, "b": 6}')
    assert result.calls == [("add", {"a": 3.5, "b": 4}), ("multiply", {"a": 3, "b": 6})]
    result = parse('bla[TOOL_CALLS]add_this_and_that[ARGS]{"a": 3.5, "b": 4}')
    assert (result.text, result.calls) == ("bla", [("add_this_and_that", {"a": 3.5, "b": 4})])


def test_call_id_is_used():
    # Mistral Small 3.2's template: '[TOOL_CALLS]' + name + '[CALL_ID]' + id + '[ARGS]' + ...
    text = (
        '[TOOL_CALLS]get_weather[CALL_ID]abc123XYZ[ARGS]{"city": "Paris"}'
        '[TOOL_CALLS]get_weather[CALL_ID]Q9w8E7r6T[ARGS]{"city": "Lyon"}'
    )
    result = parse(text)
    assert result.calls == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Lyon"})]
    for chunks in ([text], list(text)):
        assert run("mistral", chunks)[0].ids == ["abc123XYZ", "Q9w8E7r6T"]


def test_default_ids_fit_mistral_templates():
    result, _ = run("mistral", ['[TOOL_CALLS][{"name": "a", "arguments": {}}, '
                                '{"name": "b", "arguments": {}}]'])
    assert all(re.fullmatch(r"[A-Za-z0-9]{9}", i) for i in result.ids)
    assert result.ids[0] != result.ids[1]


def test_escaped_quotes_braces_and_unicode():
    # vLLM: v11 "complex"/"wrong json" case, completed
    text = (
        'hi{hi[TOOL_CALLS]bash{"command": "print(\\"hello world!\\")\\nre.compile(r\'{}\')", '
        '"note": "¡ünïcödé 日本語!"}'
    )
    result = parse(text)
    assert result.text == "hi{hi"
    assert result.calls == [("bash", {"command": "print(\"hello world!\")\nre.compile(r'{}')",
                                      "note": "¡ünïcödé 日本語!"})]


def test_unknown_function_is_still_a_call():
    result = parse('[TOOL_CALLS]self_destruct[ARGS]{"countdown": 10}')
    assert result.calls == [("self_destruct", {"countdown": 10})]


def test_not_a_call_comes_back_as_text():
    # vLLM: test_extract_tool_calls_pre_v11_regex_fallback_fails
    for text in ("[TOOL_CALLS] not json at all", "[TOOL_CALLS][oops]", '[TOOL_CALLS][{"a": 1}]'):
        result = parse(text)
        assert (result.text, result.calls, result.malformed) == (text, [], True)


def test_broken_arguments_after_the_call_started():
    text = '[TOOL_CALLS]f[ARGS]{"a": [1}junk[TOOL_CALLS]g[ARGS]{}'
    result = parse(text)
    assert result.calls == [("f", ("unparsed", '{"a": [1')), ("g", {})]
    assert result.malformed and result.text == ""


def test_arguments_must_be_an_object():
    result = parse('[TOOL_CALLS]f[ARGS][1, 2]')
    assert result.calls == [("f", [1, 2])]  # kept as received, flagged
    assert result.malformed


def test_truncated_inside_the_arguments():
    result = parse('Sure.[TOOL_CALLS]get_weather[ARGS]{"city": "Par')
    assert result.text == "Sure."
    assert result.calls == [("get_weather", ("unparsed", '{"city": "Par'))]
    assert result.malformed
    result = parse('[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Par')
    assert result.calls == [("get_weather", ("unparsed", '{"city": "Par'))]


def test_truncated_before_the_arguments_begin():
    # vLLM: test_extract_tool_calls_v11_without_args_skipped
    for text in ("[TOOL_CALLS]toolname_no_args", '[TOOL_CALLS][{"name": "get_wea'):
        result = parse(text)
        assert (result.text, result.calls, result.malformed) == (text, [], True)


def test_call_starts_at_args_and_arguments_stream():
    parser = make_parser("mistral", [])
    assert parser.feed("Ok[TOOL_CA") != []
    assert parser.feed("LLS]get_weather") == []
    events = parser.feed('[ARGS]{"city": ')
    assert [type(e) for e in events] == [CallStart, CallArguments]
    assert events[0].name == "get_weather"
    assert parser.feed('"Paris"}') == [CallArguments(0, '"Paris"}')]
    assert parser.finish() == []

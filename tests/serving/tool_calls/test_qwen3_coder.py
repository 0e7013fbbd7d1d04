"""The Qwen3-Coder format: ``<function=NAME>`` with raw-text ``<parameter=KEY>`` values.

Outputs and tool schemas marked "vLLM" come from vLLM's
tests/tool_parsers/test_qwen3coder_tool_parser.py (github.com/vllm-project/vllm); "template" is
the example in Qwen3-Coder's own chat template (tests/serving/tool_calls/templates).
"""

from __future__ import annotations

from tests.serving.tool_calls.helpers import parse_every_way, run
from triton_mlx.serving.tool_calls import CallArguments, CallStart, make_parser

# vLLM: WEATHER_PARAMS and AREA_PARAMS
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "The city name"},
                    "state": {"type": "string", "description": "The state code"},
                    "unit": {"type": "string", "enum": ["fahrenheit", "celsius"]},
                },
                "required": ["city", "state"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "calculate_area",
            "description": "Calculate area of a shape",
            "parameters": {
                "type": "object",
                "properties": {
                    "shape": {"type": "string"},
                    "dimensions": {"type": "object"},
                    "precision": {"type": "integer"},
                },
            },
        },
    },
]

def weather_call(city: str, state: str, unit: str) -> str:
    # vLLM: the get_current_weather outputs
    return (
        f"<tool_call>\n<function=get_current_weather>\n<parameter=city>\n{city}\n</parameter>\n"
        f"<parameter=state>\n{state}\n</parameter>\n<parameter=unit>\n{unit}\n</parameter>\n"
        "</function>\n</tool_call>"
    )


DALLAS = weather_call("Dallas", "TX", "fahrenheit")
DALLAS_ARGS = {"city": "Dallas", "state": "TX", "unit": "fahrenheit"}


def parse(text: str, tools: list[dict] = TOOLS):
    return parse_every_way("qwen3_coder", text, tools)


def test_plain_text_passes_through():
    result = parse("This is a test response without any tool calls")
    assert result.text == "This is a test response without any tool calls"
    assert (result.calls, result.malformed) == ([], False)


def test_one_call():
    # vLLM: single_tool
    result = parse(DALLAS)
    assert result.calls == [("get_current_weather", DALLAS_ARGS)]
    assert (result.text, result.malformed) == ("", False)


def test_text_before_a_call():
    # vLLM: single_tool_with_content
    result = parse("Sure! Let me check the weather for you." + DALLAS)
    assert result.text == "Sure! Let me check the weather for you."
    assert result.calls == [("get_current_weather", DALLAS_ARGS)]


def test_parallel_calls():
    # vLLM: parallel_tools
    result = parse(DALLAS + "\n" + weather_call("Orlando", "FL", "celsius"))
    assert result.calls == [
        ("get_current_weather", DALLAS_ARGS),
        ("get_current_weather", {"city": "Orlando", "state": "FL", "unit": "celsius"}),
    ]
    assert result.text == ""


def test_values_are_typed_by_the_schema():
    # vLLM: single_tool_multiline_param
    text = (
        "<tool_call>\n<function=calculate_area>\n<parameter=shape>\nrectangle\n</parameter>\n"
        '<parameter=dimensions>\n{"width": 10, \n "height": 20}\n</parameter>\n'
        "<parameter=precision>\n2\n</parameter>\n</function>\n</tool_call>"
    )
    result = parse(text)
    assert result.calls == [
        ("calculate_area", {"shape": "rectangle", "dimensions": {"width": 10, "height": 20},
                            "precision": 2})
    ]


def test_every_json_type_and_fallbacks():
    # after vLLM's test_extract_tool_calls_type_conversion and its anyOf variant
    tools = [{"type": "function", "function": {"name": "test_types", "parameters": {
        "type": "object",
        "properties": {
            "int_param": {"type": "integer"},
            "num_param": {"type": "number"},
            "bool_param": {"type": "boolean"},
            "str_param": {"type": "string"},
            "obj_param": {"type": "object"},
            "arr_param": {"anyOf": [{"type": "array"}, {"type": "null"}]},
            "null_param": {"type": ["string", "null"]},
            "opt_int": {"type": ["integer", "null"]},
            "bad_int": {"type": "integer"},
            "digits_as_text": {"type": "string"},
        },
    }}}]
    text = """<tool_call>
<function=test_types>
<parameter=int_param>
42
</parameter>
<parameter=num_param>
3.14
</parameter>
<parameter=bool_param>
true
</parameter>
<parameter=str_param>
hello world
</parameter>
<parameter=obj_param>
{"key": "value"}
</parameter>
<parameter=arr_param>
["a", "b", "c"]
</parameter>
<parameter=null_param>
null
</parameter>
<parameter=opt_int>
7
</parameter>
<parameter=bad_int>
about seven
</parameter>
<parameter=digits_as_text>
0042
</parameter>
<parameter=not_in_schema>
12
</parameter>
</function>
</tool_call>"""
    result = parse(text, tools)
    assert result.calls == [("test_types", {
        "int_param": 42, "num_param": 3.14, "bool_param": True, "str_param": "hello world",
        "obj_param": {"key": "value"}, "arr_param": ["a", "b", "c"], "null_param": None,
        "opt_int": 7, "bad_int": "about seven", "digits_as_text": "0042", "not_in_schema": "12",
    })]
    assert not result.malformed


def test_multiline_value_keeps_inner_newlines():
    # template: the format example in Qwen3-Coder's chat template
    text = (
        "<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\n"
        "value_1\n</parameter>\n<parameter=example_parameter_2>\nThis is the value for the "
        "second parameter\nthat can span\nmultiple lines\n</parameter>\n</function>\n"
        "</tool_call>"
    )
    result = parse(text)
    assert result.calls == [("example_function_name", {
        "example_parameter_1": "value_1",
        "example_parameter_2": "This is the value for the second parameter\nthat can span\n"
                               "multiple lines",
    })]


def test_exactly_one_newline_is_stripped_each_side():
    text = "<tool_call>\n<function=write_file>\n<parameter=content>\n\n  x = 1\n\n</parameter>\n" \
           "<parameter=path>a.py</parameter>\n</function>\n</tool_call>"
    result = parse(text)
    assert result.calls == [("write_file", {"content": "\n  x = 1\n", "path": "a.py"})]


def test_unicode_quotes_and_code_in_values():
    text = (
        "<tool_call>\n<function=run_code>\n<parameter=code>\n"
        "print(\"héllo 東京 🎉\")\nd = {'a': [1, 2]}  # a \\ backslash\n</parameter>\n"
        "</function>\n</tool_call>"
    )
    result = parse(text)
    assert result.calls == [
        ("run_code", {"code": "print(\"héllo 東京 🎉\")\nd = {'a': [1, 2]}  # a \\ backslash"})
    ]


def test_no_parameters():
    result = parse("<tool_call>\n<function=get_time>\n</function>\n</tool_call>")
    assert result.calls == [("get_time", {})]
    assert not result.malformed


def test_missing_closing_parameter_tag_is_tolerated():
    # vLLM: test_extract_tool_calls_missing_closing_parameter_tag
    text = """Let me check the weather for you:
<tool_call>
<function=get_current_weather>
<parameter=city>
Dallas
<parameter=state>
TX
</parameter>
<parameter=unit>
fahrenheit
</parameter>
</function>
</tool_call>"""
    result = parse(text)
    assert result.text == "Let me check the weather for you:\n"
    assert result.calls == [("get_current_weather", DALLAS_ARGS)]


def test_bare_function_without_tool_call_tags():
    # vLLM: test_extract_tool_calls_fallback_no_tags
    text = """<function=get_current_weather>
<parameter=city>
Dallas
</parameter>
<parameter=state>
TX
</parameter>
</function>"""
    result = parse(text)
    assert result.calls == [("get_current_weather", {"city": "Dallas", "state": "TX"})]


def test_unknown_function_values_stay_text():
    text = "<tool_call>\n<function=launch>\n<parameter=count>\n3\n</parameter>\n</function>\n" \
           "</tool_call>"
    result = parse(text)
    assert result.calls == [("launch", {"count": "3"})]


def test_markup_without_a_function_comes_back_as_text():
    text = "Trying.<tool_call>\nget_current_weather(city=Dallas)\n</tool_call> ok"
    result = parse(text)
    assert (result.text, result.calls, result.malformed) == (text, [], True)


def test_bad_function_name_comes_back_as_text():
    text = "<tool_call>\n<function=get current weather>\n</function>\n</tool_call>"
    result = parse(text)
    assert (result.text, result.calls, result.malformed) == (text, [], True)


def test_junk_between_parameters_is_malformed_but_the_call_stays():
    text = "<tool_call>\n<function=get_current_weather>\n<parameter=city>\nDallas\n</parameter>" \
           "\noops\n<parameter=state>\nTX\n</parameter>\n</function>\n</tool_call>"
    result = parse(text)
    assert result.calls == [("get_current_weather", {"city": "Dallas", "state": "TX"})]
    assert result.malformed and result.text == ""


def test_truncated_inside_a_parameter():
    text = "Checking.<tool_call>\n<function=get_current_weather>\n<parameter=city>\nDallas\n" \
           "</parameter>\n<parameter=state>\nT"
    result = parse(text)
    assert result.text == "Checking."
    assert result.calls == [("get_current_weather", ("unparsed", '{"city": "Dallas"'))]
    assert result.malformed


def test_truncated_before_the_name():
    text = "Checking.<tool_call>\n<function=get_cur"
    result = parse(text)
    assert (result.text, result.calls, result.malformed) == (text, [], True)


def test_call_starts_at_the_function_tag_and_parameters_stream():
    parser = make_parser("qwen3_coder", TOOLS)
    events = parser.feed("<tool_call>\n<function=calculate_area>\n<parameter=precision>\n")
    assert [type(e) for e in events] == [CallStart]
    events = parser.feed("2\n</parameter>\n<parameter=shape>\ncir")
    assert events == [CallArguments(0, '{"precision": 2')]
    events = parser.feed("cle\n</parameter>\n</function>")
    assert events == [CallArguments(0, ', "shape": "circle"}')]
    assert parser.feed("\n</tool_call>") + parser.finish() == []


def test_default_ids():
    result, _ = run("qwen3_coder", [DALLAS], TOOLS)
    assert result.ids[0].startswith("call_") and len(result.ids[0]) == 29

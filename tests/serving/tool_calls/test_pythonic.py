"""The pythonic format: ``[f(a=1), g()]`` as the whole reply (Llama 3.2/4 pythonic, ToolACE).

Outputs marked "vLLM" come from vLLM's tests/tool_parsers/test_pythonic_tool_parser.py and
test_llama4_pythonic_tool_parser.py (github.com/vllm-project/vllm); the simple one is Meta's own
example (llama-models, models/llama3_2/text_prompt_format.md).
"""

from __future__ import annotations

from tests.serving.tool_calls.helpers import parse_every_way
from triton_mlx.serving.tool_calls import CallArguments, CallStart, TextDelta, make_parser

# vLLM: SIMPLE_FUNCTION_OUTPUT, MORE_TYPES_FUNCTION_OUTPUT, ESCAPED_STRING_FUNCTION_OUTPUT
SIMPLE = "get_weather(city='San Francisco', metric='celsius')"
SIMPLE_CALL = ("get_weather", {"city": "San Francisco", "metric": "celsius"})
MORE_TYPES = (
    "register_user(name='John Doe', age=37, address={'city': 'San Francisco', 'state': 'CA'}, "
    "role=None, passed_test=True, aliases=['John', 'Johnny'])"
)
MORE_TYPES_CALL = ("register_user", {
    "name": "John Doe", "age": 37, "address": {"city": "San Francisco", "state": "CA"},
    "role": None, "passed_test": True, "aliases": ["John", "Johnny"],
})
ESCAPED = r"""get_weather(city='Martha\'s Vineyard', metric='\"cool units\"')"""


def parse(text: str):
    return parse_every_way("pythonic", text)


def test_plain_text_passes_through():
    # vLLM: test_no_tool_call, and replies that only look like a list
    for text in ("How can I help you today?", "[1, 2, 3] are numbers", "[Note] see [this](x)"):
        result = parse(text)
        assert (result.text, result.calls, result.malformed) == (text, [], False)


def test_one_call():
    result = parse(f"[{SIMPLE}]")
    assert result.calls == [SIMPLE_CALL]
    assert (result.text, result.malformed) == ("", False)


def test_more_types_and_empty_containers():
    # vLLM: more_types, parameterless, empty_dict, empty_list
    result = parse(f"[{MORE_TYPES}]")
    assert result.calls == [MORE_TYPES_CALL]
    result = parse("[get_weather(), do_something_cool(additional_data={}, steps=[])]")
    assert result.calls == [("get_weather", {}),
                            ("do_something_cool", {"additional_data": {}, "steps": []})]


def test_parallel_calls():
    # vLLM: parallel_calls, and Llama 4's form without spaces
    result = parse(f"[{SIMPLE}, {MORE_TYPES}]")
    assert result.calls == [SIMPLE_CALL, MORE_TYPES_CALL]
    result = parse("[get_weather(city='LA',metric='C'),register_user(name='Doe',age=9)]")
    assert result.calls == [("get_weather", {"city": "LA", "metric": "C"}),
                            ("register_user", {"name": "Doe", "age": 9})]


def test_python_start_and_end_tags():
    # vLLM: python_tag (Llama 4)
    result = parse("<|python_start|>[get_weather(city='LA', metric='C'), "
                   "get_weather(), do_something_cool(steps=[])]<|python_end|>")
    assert result.calls == [("get_weather", {"city": "LA", "metric": "C"}),
                            ("get_weather", {}), ("do_something_cool", {"steps": []})]
    assert (result.text, result.malformed) == ("", False)


def test_escaped_quotes_unicode_and_brackets_in_strings():
    # vLLM: escaped_string, plus strings that hold the list's own punctuation
    result = parse(f"[{ESCAPED}]")
    assert result.calls == [("get_weather",
                             {"city": "Martha's Vineyard", "metric": '"cool units"'})]
    text = (
        '[run(code="print(\'a, b)]\')\\n", note="naïve 東京 🎉", empty=\'\', '
        "n=-4.5e2, t=(1, 2), d={1: 'x'}, raw=r'C:\\dir')]"
    )
    result = parse(text)
    assert result.calls == [("run", {
        "code": "print('a, b)]')\n", "note": "naïve 東京 🎉", "empty": "",
        "n": -450.0, "t": [1, 2], "d": {"1": "x"}, "raw": "C:\\dir",
    })]
    assert not result.malformed


def test_triple_quoted_string():
    result = parse("[write(text='''one, 'two'\nthree)''')]")
    assert result.calls == [("write", {"text": "one, 'two'\nthree)"})]
    assert not result.malformed


def test_json_literals_are_accepted():
    result = parse('[configure(enabled=true, limit=null, tags=["a", "b"], opts={"x": false})]')
    assert result.calls == [("configure", {"enabled": True, "limit": None, "tags": ["a", "b"],
                                           "opts": {"x": False}})]


def test_unknown_function_is_still_a_call():
    result = parse("[summon_dragon(color='red')]")
    assert result.calls == [("summon_dragon", {"color": "red"})]


def test_text_after_the_list():
    result = parse(f"[{SIMPLE}]\nI called the weather tool.")
    assert result.calls == [SIMPLE_CALL]
    assert result.text == "\nI called the weather tool."


def test_a_bad_argument_loses_only_itself():
    # vLLM: test_bad_sibling_call_does_not_drop_good_calls, test_non_finite_argument_rejected
    for bad in ("bad(x=b'z')", "calc(x=1e999)", "f(y=some_variable)"):
        result = parse(f"[{bad}, {SIMPLE}]")
        assert result.calls == [(bad.split("(")[0], {}), SIMPLE_CALL]
        assert result.malformed and result.text == ""


def test_mismatched_brackets_stop_the_list():
    # vLLM: test_streaming_mismatched_brackets_reported_once
    result = parse("[foo(x=1])]")
    assert result.calls == [("foo", ("unparsed", ""))]
    assert result.malformed and result.text == ""


def test_positional_arguments_are_malformed():
    result = parse("[get_weather('Paris')]")
    assert result.calls == [("get_weather", ("unparsed", ""))]
    assert result.malformed


def test_python_tag_without_a_list_is_malformed_text():
    text = '<|python_start|>get_weather(city="x")<|python_end|>'
    result = parse(text)
    assert (result.text, result.calls, result.malformed) == (text, [], True)


def test_truncated_inside_a_call():
    result = parse("[get_weather(city='San Francisco', metric='cel")
    assert result.calls == [("get_weather", ("unparsed", '{"city": "San Francisco"'))]
    assert result.malformed and result.text == ""


def test_truncated_before_a_name_is_known():
    result = parse("[get_wea")
    assert (result.text, result.calls, result.malformed) == ("[get_wea", [], False)
    result = parse(f"[{SIMPLE}, get_wea")
    assert result.calls == [SIMPLE_CALL]
    assert result.text == " get_wea" and result.malformed


def test_call_starts_at_its_parenthesis_and_arguments_follow_each_value():
    parser = make_parser("pythonic", [])
    assert parser.feed("[get_weather") == []
    events = parser.feed("(city='Paris', ")
    assert [type(e) for e in events] == [CallStart, CallArguments]
    assert events[1] == CallArguments(0, '{"city": "Paris"')
    assert parser.feed("days=3)]") == [CallArguments(0, ', "days": 3}')]
    assert parser.finish() == []


def test_text_streams_once_it_cannot_be_a_call():
    parser = make_parser("pythonic", [])
    assert parser.feed("[") == []
    assert parser.feed("x y") == [TextDelta("[x y")]

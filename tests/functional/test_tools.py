"""Tool calling on the real demo model, through the official OpenAI SDK.

The demo model's (SmolLM2's) chat template has no tool support, so these requests go through
the default tool format (schemas in the system turn, ``<tool_call>`` calls). Named and
``required`` calls are enforced by the grammar: whatever the model would have said, the reply
is a call to an offered function with arguments that validate against its schema.
"""

from __future__ import annotations

import json

import openai
import pytest

from tests.functional.test_smollm2 import NAME, smollm2_repository  # noqa: F401 - a fixture
from tests.openai.http_client import request

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"},
                           "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the local time in a time zone.",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}},
                       "required": ["zone"]},
    },
}
ASK = [{"role": "user", "content": "What is the weather like in Paris right now?"}]


@pytest.fixture(scope="module")
def server(smollm2_repository):  # noqa: F811 - the fixture imported above
    from tests.conftest import RunningServer, make_config

    with RunningServer(make_config(smollm2_repository, max_concurrent_requests=4)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def _valid_weather_arguments(arguments: str) -> dict:
    args = json.loads(arguments)
    assert set(args) == {"city", "unit"} and args["unit"] in ("celsius", "fahrenheit"), args
    assert isinstance(args["city"], str)
    return args


def test_a_named_tool_choice_returns_that_call(client):
    response = client.chat.completions.create(
        model=NAME, messages=ASK, tools=[WEATHER_TOOL, TIME_TOOL], max_tokens=80, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert call.id.startswith("call_")
    _valid_weather_arguments(call.function.arguments)


def test_required_returns_a_call_to_an_offered_function(client):
    response = client.chat.completions.create(
        model=NAME, messages=ASK, tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="required",
        parallel_tool_calls=False, max_tokens=80, temperature=0)
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name in ("get_weather", "get_time")
    if call.function.name == "get_weather":
        _valid_weather_arguments(call.function.arguments)
    else:
        assert isinstance(json.loads(call.function.arguments)["zone"], str)


def test_the_sdk_stream_helper_assembles_a_streamed_call(client):
    with client.chat.completions.stream(
        model=NAME, messages=ASK, tools=[WEATHER_TOOL], max_tokens=80, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    ) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    _valid_weather_arguments(call.function.arguments)
    # the SDK saw the call arrive in pieces, and no markup as content
    assert any(e.type == "tool_calls.function.arguments.delta" for e in events)
    assert not choice.message.content
    assert not any(e.type == "content.delta" and e.delta for e in events)


def test_raw_stream_chunks_are_shaped_as_openai_streams_calls(server):
    body = {"model": NAME, "messages": ASK, "tools": [WEATHER_TOOL], "stream": True,
            "tool_choice": "required", "parallel_tool_calls": False, "max_tokens": 80,
            "temperature": 0}
    status, _, raw = request(server.port, "POST", "/v1/chat/completions", body)
    assert status == 200
    chunks = [json.loads(line[6:]) for line in raw.splitlines()
              if line.startswith("data: {")]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [d["tool_calls"] for d in deltas if "tool_calls" in d]
    first = calls[0][0]
    assert first["index"] == 0 and first["type"] == "function"
    assert first["id"] and first["function"]["name"] == "get_weather"
    later = [d[0] for d in calls[1:]]
    assert all(set(d) == {"index", "function"} and set(d["function"]) == {"arguments"}
               for d in later)
    arguments = first["function"]["arguments"] + "".join(d["function"]["arguments"]
                                                         for d in later)
    _valid_weather_arguments(arguments)
    assert not any(d.get("content") for d in deltas)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_round_trip_with_the_tool_result(client):
    first = client.chat.completions.create(
        model=NAME, messages=ASK, tools=[WEATHER_TOOL], tool_choice="required", max_tokens=80,
        temperature=0)
    call = first.choices[0].message.tool_calls[0]
    messages = [*ASK, first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id,
                 "content": json.dumps({"temperature": 21, "sky": "sunny"})}]
    second = client.chat.completions.create(
        model=NAME, messages=messages, tools=[WEATHER_TOOL], tool_choice="none",
        max_tokens=40, temperature=0)
    choice = second.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert choice.message.tool_calls is None
    assert choice.message.content and "<tool_call>" not in choice.message.content


def test_n_2_with_tools_gives_each_choice_its_call(client):
    response = client.chat.completions.create(
        model=NAME, messages=ASK, tools=[WEATHER_TOOL], tool_choice="required", n=2,
        parallel_tool_calls=False, max_tokens=80, temperature=0.8, seed=7)
    assert len(response.choices) == 2
    for choice in response.choices:
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls
        _valid_weather_arguments(call.function.arguments)
    assert response.choices[0].message.tool_calls[0].id != \
        response.choices[1].message.tool_calls[0].id


def test_parallel_calls_are_each_valid(client):
    response = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "Weather in Paris and in Rome?"}],
        tools=[WEATHER_TOOL], tool_choice="required", max_tokens=160, temperature=0)
    choice = response.choices[0]
    assert choice.finish_reason in ("tool_calls", "length")
    if choice.finish_reason == "tool_calls":
        for call in choice.message.tool_calls:
            _valid_weather_arguments(call.function.arguments)


def test_auto_may_answer_in_text_without_markup(client):
    response = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "Say hello."}], tools=[WEATHER_TOOL],
        max_tokens=30, temperature=0)
    choice = response.choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        for call in choice.message.tool_calls:
            _valid_weather_arguments(call.function.arguments)
    else:
        assert "<tool_call>" not in (choice.message.content or "")


def test_a_non_strict_tool_is_held_to_what_the_grammar_engine_implements(server):
    """An unknown ``format`` refuses a strict tool (above), not a non-strict one: its schema
    is enforced as far as llguidance goes (as OpenAI promises nothing more for it)."""
    tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "string", "format": "no-such",
                                               "maxLength": 8}},
        "required": ["x"]}}}
    status, _, raw = request(server.port, "POST", "/v1/chat/completions",
                             {"model": NAME, "messages": ASK, "max_tokens": 60,
                              "tools": [tool], "tool_choice": "required", "temperature": 0,
                              "parallel_tool_calls": False})
    assert status == 200, raw
    choice = raw["choices"][0]
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "f"
    if choice["finish_reason"] == "tool_calls":  # the tiny budget may cut the arguments
        assert "x" in json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"])


@pytest.mark.parametrize(("body", "param"), [
    ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "function",
                                               "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "strict": True, "parameters": {
        "type": "object", "properties": {"x": {"type": "string", "format": "no-such"}}}}}]},
     "tools"),
    ({"tools": [{"type": "retrieval"}]}, "tools"),
    ({"tools": [WEATHER_TOOL, WEATHER_TOOL]}, "tools"),
    ({"tools": [WEATHER_TOOL], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ({"reasoning_effort": "high"}, "reasoning_effort"),
    ({"chat_template_kwargs": {"enable_thinking": False}}, "chat_template_kwargs"),
])
def test_what_cannot_be_served_is_a_400_naming_it(server, body, param):
    status, _, raw = request(server.port, "POST", "/v1/chat/completions",
                             {"model": NAME, "messages": ASK, "max_tokens": 5, **body})
    assert status == 400, raw
    assert raw["error"]["param"] == param


def test_a_tool_message_without_its_call_id_is_a_400(server):
    messages = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "content": "sunny"}]
    status, _, raw = request(server.port, "POST", "/v1/chat/completions",
                             {"model": NAME, "messages": messages, "max_tokens": 5})
    assert status == 400
    assert raw["error"]["param"] == "messages[2].tool_call_id"

"""Tools and structured output through Anthropic's Messages API on the real demo model
(SmolLM2), with the official ``anthropic`` SDK: a forced tool call, its result sent back, and
``output_config``'s JSON schema held by the grammar engine."""

from __future__ import annotations

import json

import anthropic
import jsonschema_rs
import pytest

from tests.conftest import RunningServer, make_config
from tests.functional.test_smollm2 import NAME, smollm2_repository  # noqa: F401 - a fixture

WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"},
                       "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
}
TIME = {"name": "get_time", "description": "Get the local time in a time zone.",
        "input_schema": {"type": "object", "properties": {"zone": {"type": "string"}},
                         "required": ["zone"]}}
ASK = [{"role": "user", "content": "What is the weather like in Paris right now?"}]
GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def client(smollm2_repository):  # noqa: F811 - the fixture imported above
    with RunningServer(make_config(smollm2_repository)) as server:
        yield anthropic.Anthropic(base_url=f"http://127.0.0.1:{server.port}", api_key="x",
                                  max_retries=0)


def _check_weather(arguments: dict) -> None:
    assert set(arguments) == {"city", "unit"} and arguments["unit"] in ("celsius", "fahrenheit")


def test_a_forced_tool_call_then_its_result_sent_back(client):
    first = client.messages.create(
        model=NAME, max_tokens=80, messages=ASK, tools=[WEATHER, TIME],
        tool_choice={"type": "tool", "name": "get_weather"}, extra_body=GREEDY)
    assert first.stop_reason == "tool_use"
    calls = [b for b in first.content if b.type == "tool_use"]
    assert calls and calls[0].name == "get_weather"
    _check_weather(calls[0].input)
    answer = client.messages.create(
        model=NAME, max_tokens=40, tools=[WEATHER, TIME], extra_body=GREEDY,
        tool_choice={"type": "none"},
        messages=[*ASK, {"role": "assistant", "content": first.content},
                  {"role": "user", "content": [
                      {"type": "tool_result", "tool_use_id": calls[0].id,
                       "content": [{"type": "text", "text": "22 degrees and sunny"}]},
                      {"type": "text", "text": "Answer in one sentence."}]}])
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert [b.type for b in answer.content] == ["text"] and answer.content[0].text.strip()
    failed = client.messages.count_tokens(
        model=NAME, tools=[WEATHER],
        messages=[*ASK, {"role": "assistant", "content": first.content},
                  {"role": "user", "content": [{"type": "tool_result", "is_error": True,
                                                "tool_use_id": calls[0].id,
                                                "content": "timeout"}]}])
    assert failed.input_tokens > 0


def test_a_streamed_tool_call_arrives_as_input_json_deltas(client):
    with client.messages.stream(model=NAME, max_tokens=80, messages=ASK, tools=[WEATHER],
                                tool_choice={"type": "any", "disable_parallel_tool_use": True},
                                extra_body=GREEDY) as stream:
        events = list(stream)
        final = stream.get_final_message()
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    partial = "".join(e.delta.partial_json for e in events
                      if e.type == "content_block_delta" and e.delta.type == "input_json_delta")
    call = next(b for b in final.content if b.type == "tool_use")
    assert final.stop_reason == "tool_use" and json.loads(partial) == call.input
    _check_weather(call.input)


def test_output_config_json_schema_output_is_valid(client):
    schema = {"type": "object",
              "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
              "required": ["city", "population"], "additionalProperties": False}
    answer = client.messages.create(
        model=NAME, max_tokens=60, extra_body=GREEDY,
        messages=[{"role": "user", "content": "Name a big city and its population."}],
        output_config={"format": {"type": "json_schema", "schema": schema}})
    assert answer.stop_reason == "end_turn"
    value = json.loads(answer.content[0].text)
    assert jsonschema_rs.validator_for(schema).is_valid(value), value


def test_a_schema_the_grammar_engine_refuses_is_a_400(client):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model=NAME, max_tokens=5, messages=ASK,
            output_config={"format": {"type": "json_schema", "schema": {"type": "nonsense"}}})
    assert caught.value.body["error"]["type"] == "invalid_request_error"

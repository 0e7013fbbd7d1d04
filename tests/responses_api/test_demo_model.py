"""``/v1/responses`` on the demo model (SmolLM2-135M-Instruct): a function call and its
result round trip, structured output, a conversation continued by id, a Codex-shaped stream,
and the OpenAI Agents SDK in its default (Responses) mode running its function-tool loop."""

from __future__ import annotations

import asyncio
import json

import agents
import openai
import pytest

from tests.conftest import RunningServer, make_config
from tests.functional.test_smollm2 import NAME, smollm2_repository  # noqa: F401 - a fixture

WEATHER = {"type": "function", "name": "get_weather",
           "description": "Get the current weather in a city.",
           "parameters": {"type": "object",
                          "properties": {"city": {"type": "string"},
                                         "unit": {"type": "string",
                                                  "enum": ["celsius", "fahrenheit"]}},
                          "required": ["city", "unit"], "additionalProperties": False}}
ASK = "What is the weather like in Paris right now?"
FORECAST = "Sunny, 21 degrees, light wind from the west"
agents.set_tracing_disabled(True)  # traces would go to OpenAI's servers


@pytest.fixture(scope="module")
def server(smollm2_repository):  # noqa: F811 - the fixture imported above
    with RunningServer(make_config(smollm2_repository, max_concurrent_requests=4)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def test_a_forced_function_call_and_its_output_round_trip(client):
    first = client.responses.create(
        model=NAME, input=ASK, tools=[WEATHER], max_output_tokens=80, temperature=0,
        tool_choice={"type": "function", "name": "get_weather"})
    calls = [item for item in first.output if item.type == "function_call"]
    assert first.status == "completed" and len(calls) >= 1
    call = calls[0]
    assert call.name == "get_weather" and call.call_id and call.id.startswith("fc_")
    arguments = json.loads(call.arguments)
    assert set(arguments) == {"city", "unit"} and arguments["unit"] in ("celsius", "fahrenheit")
    second = client.responses.create(
        model=NAME, tools=[WEATHER], max_output_tokens=60, temperature=0, store=False,
        input=[{"role": "user", "content": ASK},
               {"type": "function_call", "call_id": call.call_id, "name": call.name,
                "arguments": call.arguments},
               {"type": "function_call_output", "call_id": call.call_id, "output": FORECAST}])
    assert second.output_text  # the model's answer after the result
    assert second.usage.input_tokens > first.usage.input_tokens


def test_the_streamed_call_arrives_in_argument_deltas(client):
    with client.responses.stream(
            model=NAME, input=ASK, tools=[WEATHER], max_output_tokens=120, temperature=0,
            tool_choice="required", parallel_tool_calls=False) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert kinds[-1] == "response.completed" and done and deltas
    call = next(item for item in final.output if item.type == "function_call")
    assert done[0].arguments == call.arguments and call.arguments.startswith(deltas[:10])
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_json_schema_output_is_valid(client):
    schema = {"type": "object", "properties": {"city": {"type": "string"},
                                               "country": {"type": "string"}},
              "required": ["city", "country"], "additionalProperties": False}
    response = client.responses.create(
        model=NAME, input="Name a city and its country.", max_output_tokens=60, temperature=0,
        text={"format": {"type": "json_schema", "name": "place", "schema": schema,
                         "strict": True}})
    value = json.loads(response.output_text)
    assert set(value) == {"city", "country"} and all(isinstance(v, str) for v in value.values())
    assert response.text.format.type == "json_schema"


def test_previous_response_id_carries_the_conversation(client):
    first = client.responses.create(model=NAME, input="My favourite colour is green.",
                                    instructions="Answer in one sentence.",
                                    max_output_tokens=20, temperature=0)
    second = client.responses.create(model=NAME, previous_response_id=first.id,
                                     input="What is my favourite colour?",
                                     max_output_tokens=10, temperature=0)
    # The same conversation sent whole (without the first instructions, as OpenAI documents)
    # is the same prompt, token for token, and the same greedy answer.
    whole = client.responses.create(model=NAME, max_output_tokens=10, temperature=0, input=[
        {"role": "user", "content": "My favourite colour is green."},
        {"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": first.output_text}]},
        {"role": "user", "content": "What is my favourite colour?"}])
    assert second.usage.input_tokens == whole.usage.input_tokens
    assert second.output_text == whole.output_text


def test_a_codex_shaped_stream_works(server):
    http = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    body = {"instructions": "You are a coding agent.", "input": [
        {"type": "message", "role": "developer", "content": [
            {"type": "input_text", "text": "<permissions>none</permissions>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
        "tools": [{"type": "function", "name": "shell", "description": "Run a command",
                   "strict": False, "parameters": {"type": "object", "properties": {
                       "command": {"type": "array", "items": {"type": "string"}}},
                       "required": ["command"]}}],
        "tool_choice": "auto", "parallel_tool_calls": False, "store": False,
        "include": ["reasoning.encrypted_content"], "prompt_cache_key": "0f3c-session",
        "reasoning": {"summary": "auto"},  # as Codex CLI 0.x sends them (captured 2026-11)
        "client_metadata": {"turn_id": "01a2", "x-codex-window-id": "01a2:0"}}
    stream = http.responses.create(model=NAME, stream=True, max_output_tokens=30,
                                   extra_body={"client_metadata": body.pop("client_metadata")},
                                   **body)
    events = list(stream)
    final = events[-1].response
    assert events[-1].type in ("response.completed", "response.incomplete")
    assert final.store is False and final.parallel_tool_calls is False and final.output


def test_the_agents_sdk_runs_its_tool_loop_in_responses_mode(server):
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        calls.append(city)
        return FORECAST

    async def go():
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        try:
            agent = agents.Agent(
                name="weather", instructions="Answer questions about the weather.",
                model=NAME, tools=[get_weather],
                model_settings=agents.ModelSettings(temperature=0, max_tokens=120,
                                                    tool_choice="required",
                                                    parallel_tool_calls=False))
            # The provider's default API is the Responses API (no use_responses given).
            provider = agents.OpenAIProvider(openai_client=client)
            return await agents.Runner.run(agent, "What is the weather in Paris?", max_turns=4,
                                           run_config=agents.RunConfig(model_provider=provider))
        finally:
            await client.close()

    result = asyncio.run(go())
    assert all(r.response_id and r.response_id.startswith("resp_") for r in result.raw_responses)
    assert calls, "the tool was never called"
    outputs = [i for i in result.new_items if isinstance(i, agents.items.ToolCallOutputItem)]
    assert outputs and outputs[0].output == FORECAST
    assert isinstance(result.new_items[-1], agents.items.MessageOutputItem)
    assert isinstance(result.final_output, str)

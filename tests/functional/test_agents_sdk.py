"""A real agent framework no one here wrote: the OpenAI Agents SDK, in chat-completions mode,
runs its function-tool loop against our server on the demo model.

The agent must call the tool (``tool_choice: required`` on the first turn; the SDK resets it to
``auto`` afterwards so the loop can end), the SDK runs our Python function, sends its result
back as a ``tool`` message, and the model's next turn ends the run.
"""

from __future__ import annotations

import asyncio

import agents

from tests.functional.test_smollm2 import NAME, smollm2_repository  # noqa: F401 - a fixture
from tests.functional.test_tools import server  # noqa: F401 - a fixture

FORECAST = "Sunny, 21 degrees, light wind from the west"
agents.set_tracing_disabled(True)  # traces would go to OpenAI's servers


def _agent(**settings):
    from openai import AsyncOpenAI

    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        calls.append(city)
        return FORECAST

    def make(client: AsyncOpenAI, **extra):
        model = agents.OpenAIChatCompletionsModel(model=NAME, openai_client=client)
        return agents.Agent(
            name="weather", instructions="Answer questions about the weather.",
            model=model, tools=[get_weather],
            model_settings=agents.ModelSettings(temperature=0, max_tokens=80, **settings),
            **extra,
        )

    return make, calls


def _run(server, make, **agent_options):  # noqa: F811
    from openai import AsyncOpenAI

    async def go():
        client = AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        try:
            return await agents.Runner.run(make(client, **agent_options),
                                           "What is the weather in Paris?", max_turns=4)
        finally:
            await client.close()

    return asyncio.run(go())


def test_the_agent_loop_calls_the_tool_and_answers_after_its_result(server):  # noqa: F811
    make, calls = _agent(tool_choice="required")
    result = _run(server, make)
    assert calls, "the tool was never called"
    outputs = [item for item in result.new_items
               if isinstance(item, agents.items.ToolCallOutputItem)]
    assert outputs and outputs[0].output == FORECAST
    # the run ended with the model's own message after the tool's result
    assert isinstance(result.new_items[-1], agents.items.MessageOutputItem)
    assert isinstance(result.final_output, str)


def test_the_tool_result_becomes_the_answer_when_the_agent_stops_on_it(server):  # noqa: F811
    make, calls = _agent(tool_choice="required", parallel_tool_calls=False)
    result = _run(server, make, tool_use_behavior="stop_on_first_tool")
    assert len(calls) == 1
    assert result.final_output == FORECAST

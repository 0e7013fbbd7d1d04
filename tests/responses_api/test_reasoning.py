"""Reasoning items from a model that reasons: the demo model under a chat template that opens
``<think>`` (tests/functional/templates/think-opened.jinja), shown worked examples whose
reasoning goes back as earlier ``reasoning`` items."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import RunningServer, make_config
from tests.functional.test_reasoning import SHOTS, TEMPLATE
from tests.functional.test_smollm2 import NAME, smollm2_repository  # noqa: F401 - a fixture

INPUT: list[dict] = []
for i, (question, thought, answer) in enumerate(SHOTS):
    INPUT += [{"role": "user", "content": question},
              {"type": "reasoning", "id": f"rs_{i}", "summary": [],
               "content": [{"type": "reasoning_text", "text": thought}]},
              {"role": "assistant", "content": answer}]
INPUT.append({"role": "user", "content": "What is the capital of France?"})
ASK = {"model": NAME, "max_output_tokens": 60, "temperature": 0,
       "instructions": "Think first, then answer.", "input": INPUT}


@pytest.fixture(scope="module")
def client(smollm2_repository):  # noqa: F811 - the fixture imported above
    with RunningServer(make_config(smollm2_repository, chat_template=TEMPLATE)) as server:
        yield openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def test_reasoning_comes_as_an_item_before_the_message(client):
    response = client.responses.create(**ASK)
    assert [item.type for item in response.output] == ["reasoning", "message"]
    reasoning = "".join(part.text for part in response.output[0].content)
    assert "Paris" in reasoning and "Paris" in response.output_text
    assert "<think>" not in response.output_text and "</think>" not in reasoning


def test_streamed_reasoning_assembles_to_the_same_items(client):
    whole = client.responses.create(**ASK)
    with client.responses.stream(**ASK) as stream:
        kinds = [e.type for e in stream if e.type.endswith(".delta")]
        final = stream.get_final_response()
    def items(response):
        return [(i.type, "".join(part.text for part in i.content or ())) for i in response.output]

    assert items(final) == items(whole)
    assert kinds.index("response.output_text.delta") > max(
        i for i, k in enumerate(kinds) if k == "response.reasoning_text.delta")

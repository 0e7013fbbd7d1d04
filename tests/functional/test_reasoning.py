"""Reasoning on the real demo model: a chat template that opens a ``<think>`` block in the
generation prompt (as DeepSeek-R1 distills' do), and three worked examples in the history, make
the model write reasoning, close the block, then answer. The server must split the two, whole
and streamed, apply a response format only after the reasoning, and pass
``chat_template_kwargs`` to the template."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from tests.functional.test_smollm2 import NAME, smollm2_repository  # noqa: F401 - a fixture

TEMPLATE = Path(__file__).parent / "templates" / "think-opened.jinja"
SHOTS = [("What is 2+2?", "Two plus two is four.", "4"),
         ("What is the capital of Italy?", "Italy's capital is Rome.", "Rome"),
         ("What color is the sky?", "The sky is blue.", "Blue")]
MESSAGES = [{"role": "system", "content": "Think first, then answer."}]
for question, thought, answer in SHOTS:
    MESSAGES += [{"role": "user", "content": question},
                 {"role": "assistant", "content": answer, "reasoning_content": thought}]
MESSAGES.append({"role": "user", "content": "What is the capital of France?"})


@pytest.fixture(scope="module")
def client(smollm2_repository):  # noqa: F811 - the fixture imported above
    from tests.conftest import RunningServer, make_config

    config = make_config(smollm2_repository, chat_template=TEMPLATE)
    with RunningServer(config) as server:
        yield openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def ask(client, **extra):
    return client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=60,
                                          temperature=0, **extra)


def test_reasoning_and_answer_come_apart(client):
    choice = ask(client).choices[0]
    message = choice.message
    assert choice.finish_reason == "stop"
    assert "Paris" in message.reasoning_content
    assert message.reasoning == message.reasoning_content
    assert "Paris" in message.content
    for text in (message.content, message.reasoning_content):
        assert "<think>" not in text and "</think>" not in text


def test_streamed_reasoning_assembles_to_the_same_split(client):
    whole = ask(client).choices[0].message
    reasoning, content = [], []
    for chunk in ask(client, stream=True):
        for choice in chunk.choices:
            delta = choice.delta.model_dump()
            reasoning.append(delta.get("reasoning_content") or "")
            content.append(delta.get("content") or "")
            assert delta.get("reasoning_content") == delta.get("reasoning")
    assert "".join(reasoning) == whole.reasoning_content
    assert "".join(content) == whole.content


def test_a_response_format_applies_after_the_reasoning(client):
    schema = {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome", "Berlin"]}},
              "required": ["city"], "additionalProperties": False}
    choice = ask(client, response_format={"type": "json_schema", "json_schema": {
        "name": "city", "schema": schema}}).choices[0]
    assert choice.finish_reason == "stop"
    assert "Paris" in choice.message.reasoning_content
    assert json.loads(choice.message.content)["city"] in ("Paris", "Rome", "Berlin")


def test_chat_template_kwargs_reach_the_template(client):
    choice = ask(client, extra_body={"chat_template_kwargs": {"enable_thinking": False}}
                 ).choices[0]
    # the prompt closed the block: no reasoning is expected or split out
    assert choice.message.model_dump().get("reasoning_content") is None
    assert choice.message.content

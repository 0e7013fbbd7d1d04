"""Structured output on the real demo model, through the official OpenAI SDK: the SDK's own
``parse()`` helper with a pydantic model, ``json_object``, a streamed ``json_schema``, vLLM's
``structured_outputs`` on both ports, and several schemas at once, each enforced by the grammar."""

from __future__ import annotations

import concurrent.futures
import json
import re

import openai
import pytest
from pydantic import BaseModel

from tests.functional.test_smollm2 import NAME, smollm2_repository  # noqa: F401 - a fixture
from tests.openai.http_client import request

WEATHER = [{"role": "user", "content": "What is the weather in Paris? Answer in JSON."}]


class Weather(BaseModel):
    city: str
    unit: str
    temperature: int


@pytest.fixture(scope="module")
def server(smollm2_repository):  # noqa: F811 - the fixture imported above
    from tests.conftest import RunningServer, make_config

    with RunningServer(make_config(smollm2_repository, max_concurrent_requests=8)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def test_the_sdk_parse_helper_gets_a_valid_object(client):
    completion = client.chat.completions.parse(
        model=NAME, messages=WEATHER, response_format=Weather, max_tokens=80, temperature=0)
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, Weather), choice.message.content


def test_json_object_is_any_json_object(client):
    response = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": 'Reply with {"ok": true} and nothing '
                                                            'else.'}],
        response_format={"type": "json_object"}, max_tokens=300,
        temperature=0)
    assert response.choices[0].finish_reason == "stop", response.choices[0].message.content
    assert isinstance(json.loads(response.choices[0].message.content), dict)


def test_a_streamed_json_schema_assembles_to_a_valid_object(client):
    schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}},
              "required": ["answer"], "additionalProperties": False}
    stream = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "Is Paris in France?"}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "yes_no", "schema": schema, "strict": True}},
        max_tokens=40, temperature=0, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert json.loads(text)["answer"] in ("yes", "no")


def test_too_few_tokens_for_the_grammar_end_with_length(client):
    response = client.chat.completions.create(
        model=NAME, messages=WEATHER, response_format={"type": "json_schema", "json_schema": {
            "name": "w", "schema": Weather.model_json_schema()}}, max_tokens=3, temperature=0)
    assert response.choices[0].finish_reason == "length"


def test_vllm_structured_outputs_on_both_ports(client, server):
    response = client.completions.create(
        model=NAME, prompt="The capital of France is", max_tokens=10, temperature=0,
        extra_body={"structured_outputs": {"choice": ["Paris", "London", "Rome"]}})
    assert response.choices[0].text in ("Paris", "London", "Rome")
    response = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "Give me a date."}], max_tokens=20,
        temperature=0, extra_body={"structured_outputs": {"regex": r"20[0-9]{2}-[01][0-9]"}})
    assert re.fullmatch(r"20[0-9]{2}-[01][0-9]", response.choices[0].message.content)
    status, _, body = request(server.http_port, "POST", f"/v2/models/{NAME}/generate", {
        "text_input": "The capital of France is", "exclude_input_in_output": True,
        "sampling_parameters": json.dumps({"max_tokens": 10, "temperature": 0,
                                           "structured_outputs": {"choice": ["Paris", "Rome"]}})})
    assert status == 200 and body["text_output"] in ("Paris", "Rome"), body


def test_eight_concurrent_requests_with_different_schemas_are_all_valid(client):
    def ask(i: int) -> tuple[dict, dict]:
        schema = {"type": "object", "properties": {f"field_{i}": {"type": "integer"},
                                                   "name": {"type": "string", "maxLength": 12}},
                  "required": [f"field_{i}", "name"], "additionalProperties": False}
        response = client.chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": f"Describe item {i} in JSON."}],
            response_format={"type": "json_schema", "json_schema": {"name": f"s{i}",
                                                                    "schema": schema}},
            max_tokens=60, temperature=0.7, seed=i)
        return schema, json.loads(response.choices[0].message.content)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for schema, value in pool.map(ask, range(8)):
            assert set(value) == set(schema["required"])
            assert isinstance(value[schema["required"][0]], int)
            assert isinstance(value["name"], str) and len(value["name"]) <= 12


@pytest.mark.parametrize("body, param", [
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "string", "format": "no-such-format"}}}},
     "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "if": {}}}}}, "response_format"),
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"structured_outputs": {"regex": "[a-"}}, "structured_outputs"),
    ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "structured_outputs"),
    ({"structured_outputs": {"grammar": "start: no_such_rule"}}, "structured_outputs"),
    ({"structured_outputs": {"grammar": "\x88"}}, "structured_outputs"),  # not GBNF nor Lark
    ({"structured_outputs": {"choice": ["a", None]}}, "structured_outputs"),
    ({"response_format": {"type": "json_object"}, "structured_outputs": {"regex": "a"}},
     "response_format"),
])
def test_constraints_that_cannot_be_enforced_are_400_naming_them(server, body, param):
    status, _, answer = request(server.port, "POST", "/v1/chat/completions",
                                {"model": NAME, "messages": WEATHER, **body})
    assert status == 400 and answer["error"]["param"] == param, answer

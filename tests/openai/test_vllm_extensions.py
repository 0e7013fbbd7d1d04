"""vLLM's sampling extensions that benchmark clients send, ``ignore_eos`` and ``min_tokens``,
on both ports: through the OpenAI SDK (``extra_body``, as aiperf and vllm bench send them) and
Triton's ``sampling_parameters``."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import TINY
from tests.openai.http_client import request

EOS = 2  # the tiny model's <|im_end|>
FORCE_EOS = {str(EOS): 100}  # end-of-sequence is by far the most likely token at every step
HELLO = [{"role": "user", "content": "Hello world"}]


@pytest.fixture
def client(tiny_server):
    return openai.OpenAI(base_url=tiny_server.base_url, api_key="unused", max_retries=0)


def chat(client, **extra):
    return client.chat.completions.create(
        model=TINY, messages=HELLO, max_tokens=12, temperature=0, logit_bias=FORCE_EOS,
        extra_body=extra or None)


def test_without_the_extensions_eos_ends_the_answer_at_once(client):
    response = chat(client)
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.completion_tokens == 1


def test_ignore_eos_runs_to_max_tokens(client):
    response = chat(client, ignore_eos=True)
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 12
    streamed = list(client.chat.completions.create(
        model=TINY, messages=HELLO, max_tokens=12, temperature=0, logit_bias=FORCE_EOS,
        stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
    assert streamed[-1].usage.completion_tokens == 12
    assert [c.choices[0].finish_reason for c in streamed if c.choices][-1] == "length"


def test_min_tokens_holds_eos_back(client):
    response = chat(client, min_tokens=5)
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.completion_tokens >= 5
    # Once min_tokens are out, the forced end-of-sequence comes at the next step.
    assert response.usage.completion_tokens <= 6


def test_min_tokens_holds_stop_strings_back(client):
    free = client.completions.create(model=TINY, prompt="Hello", max_tokens=8, temperature=0,
                                     logit_bias={str(EOS): -100})
    text = free.choices[0].text
    assert text, "the tiny model must say something greedy to stop on"
    stop = text[0]  # matches within the first token
    early = client.completions.create(model=TINY, prompt="Hello", max_tokens=8, temperature=0,
                                      logit_bias={str(EOS): -100}, stop=[stop])
    assert early.choices[0].finish_reason == "stop" and early.usage.completion_tokens < 4
    held = client.completions.create(model=TINY, prompt="Hello", max_tokens=8, temperature=0,
                                     logit_bias={str(EOS): -100}, stop=[stop],
                                     extra_body={"min_tokens": 4})
    assert held.usage.completion_tokens >= 4


@pytest.mark.parametrize("extra, param", [
    ({"min_tokens": 13}, "min_tokens"),  # above max_tokens
    ({"min_tokens": -1}, "min_tokens"),
    ({"min_tokens": "3"}, "min_tokens"),  # OpenAI's port takes JSON numbers only
    ({"ignore_eos": "yes"}, "ignore_eos"),
    ({"ignore_eos": 1}, "ignore_eos"),
])
def test_bad_values_are_400_naming_them(tiny_server, extra, param):
    body = {"model": TINY, "messages": HELLO, "max_tokens": 12, **extra}
    status, _, answer = request(tiny_server.port, "POST", "/v1/chat/completions", body)
    assert status == 400 and answer["error"]["param"] == param, answer


def test_min_tokens_above_the_default_length_is_400(tiny_server):
    body = {"model": TINY, "prompt": "Hi", "min_tokens": 100_000}
    status, _, answer = request(tiny_server.port, "POST", "/v1/completions", body)
    assert status == 400 and answer["error"]["param"] == "min_tokens", answer


def triton_generate(server, parameters: dict) -> tuple[int, dict]:
    status, _, body = request(server.http_port, "POST", f"/v2/models/{TINY}/generate",
                              {"text_input": "Hello", "exclude_input_in_output": True,
                               "sampling_parameters": json.dumps(parameters)})
    return status, body


def test_triton_sampling_parameters_take_them_as_vllm_does(tiny_server):
    engine = tiny_server.engine()

    def generated(parameters: dict) -> int:
        """Tokens the engine generated for one request (the tests run one at a time)."""
        before = engine.stats().generated_tokens
        status, body = triton_generate(tiny_server, parameters)
        assert status == 200, body
        return engine.stats().generated_tokens - before

    base = {"max_tokens": 6, "temperature": 0, "logit_bias": FORCE_EOS}
    assert generated(base) == 1
    assert generated({**base, "ignore_eos": "true"}) == 6  # vLLM's strings for booleans
    assert generated({**base, "ignore_eos": True}) == 6
    assert 4 <= generated({**base, "min_tokens": "4"}) <= 5
    status, answer = triton_generate(tiny_server, {**base, "min_tokens": 7})
    assert status == 400 and "min_tokens" in answer["error"], answer

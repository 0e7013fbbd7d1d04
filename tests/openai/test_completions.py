"""/v1/completions: prompt strings, lists of strings and token ids."""

import openai
import pytest

from tests.conftest import TINY

BAN_EOS = {"2": -100}


@pytest.fixture
def client(tiny_server):
    return openai.OpenAI(base_url=tiny_server.base_url, api_key="unused", max_retries=0)


def test_prompt_string(client):
    response = client.completions.create(
        model=TINY, prompt="The capital of", max_tokens=5, temperature=0, logit_bias=BAN_EOS
    )
    assert response.object == "text_completion"
    assert response.choices[0].text and response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 5


def test_list_of_prompts_gives_one_choice_each_in_order(client):
    args = dict(model=TINY, max_tokens=5, temperature=0, logit_bias=BAN_EOS)
    one = client.completions.create(prompt="Hello world", **args).choices[0].text
    two = client.completions.create(prompt="The quick brown", **args).choices[0].text
    both = client.completions.create(prompt=["Hello world", "The quick brown"], **args)
    assert [c.index for c in both.choices] == [0, 1]
    assert [c.text for c in both.choices] == [one, two]
    assert both.usage.completion_tokens == 10


def test_token_id_prompt_equals_its_text(client, tiny_server):
    args = dict(model=TINY, max_tokens=5, temperature=0, logit_bias=BAN_EOS)
    ids = tiny_server.engine().tokenizer.encode("Hello world")
    assert client.completions.create(prompt=ids, **args).choices[0].text == \
        client.completions.create(prompt="Hello world", **args).choices[0].text


def test_streaming_several_prompts(client):
    chunks = list(client.completions.create(
        model=TINY, prompt=["Hello", "The quick"], max_tokens=4, temperature=0,
        logit_bias=BAN_EOS, stream=True, stream_options={"include_usage": True},
    ))
    finished = {c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason}
    assert finished == {0, 1}
    assert chunks[-1].usage.completion_tokens == 8

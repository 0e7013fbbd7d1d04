"""/v1/chat/completions through the official OpenAI SDK, over loopback."""

import asyncio

import openai
import pytest

from tests.conftest import TINY

BAN_EOS = {"2": -100}  # the tiny model's <|im_end|>: forces generation to run to max_tokens
HELLO = [{"role": "user", "content": "Hello world"}]


@pytest.fixture
def client(tiny_server):
    return openai.OpenAI(base_url=tiny_server.base_url, api_key="unused", max_retries=0)


def test_non_streaming_answer_has_text_usage_and_finish_reason(client):
    response = client.chat.completions.create(
        model=TINY, messages=HELLO, max_tokens=8, temperature=0, logit_bias=BAN_EOS
    )
    choice = response.choices[0]
    assert response.object == "chat.completion" and response.model == TINY
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"
    assert response.usage.completion_tokens == 8
    assert response.usage.prompt_tokens > 0
    assert response.usage.total_tokens == response.usage.prompt_tokens + 8


def test_streaming_gives_the_same_text_as_non_streaming(client):
    args = dict(model=TINY, messages=HELLO, max_tokens=10, temperature=0, logit_bias=BAN_EOS)
    whole = client.chat.completions.create(**args).choices[0].message.content
    chunks = list(client.chat.completions.create(**args, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)


def test_stream_include_usage_ends_with_a_usage_chunk(client):
    chunks = list(client.chat.completions.create(
        model=TINY, messages=HELLO, max_tokens=5, temperature=0, logit_bias=BAN_EOS,
        stream=True, stream_options={"include_usage": True},
    ))
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.completion_tokens == 5
    assert last.usage.total_tokens == last.usage.prompt_tokens + 5


def test_content_as_text_parts_equals_plain_string(client):
    args = dict(model=TINY, max_tokens=6, temperature=0, logit_bias=BAN_EOS)
    plain = client.chat.completions.create(messages=HELLO, **args)
    parts = client.chat.completions.create(
        messages=[{"role": "user", "content": [{"type": "text", "text": "Hello "},
                                               {"type": "text", "text": "world"}]}],
        **args,
    )
    assert parts.choices[0].message.content == plain.choices[0].message.content
    assert parts.usage.prompt_tokens == plain.usage.prompt_tokens


def test_seed_makes_sampling_reproducible(client):
    args = dict(model=TINY, messages=HELLO, max_tokens=12, temperature=1.0, seed=42,
                logit_bias=BAN_EOS)
    first = client.chat.completions.create(**args).choices[0].message.content
    second = client.chat.completions.create(**args).choices[0].message.content
    assert first == second


def test_stop_string_split_across_tokens_stops_without_leaking(client):
    args = dict(model=TINY, messages=HELLO, max_tokens=24, temperature=0, logit_bias=BAN_EOS)
    full = client.chat.completions.create(**args).choices[0].message.content
    stop = full[4:9]
    assert len(stop) == 5
    response = client.chat.completions.create(**args, stop=[stop])
    assert response.choices[0].message.content == full[: full.index(stop)]
    assert response.choices[0].finish_reason == "stop"
    streamed = list(client.chat.completions.create(**args, stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == full[: full.index(stop)]
    assert streamed[-1].choices[0].finish_reason == "stop"


def test_async_client_runs_concurrent_requests(tiny_server):
    async def main():
        client = openai.AsyncOpenAI(base_url=tiny_server.base_url, api_key="x", max_retries=0)
        args = dict(model=TINY, messages=HELLO, max_tokens=6, temperature=0, logit_bias=BAN_EOS)
        results = await asyncio.gather(*(client.chat.completions.create(**args)
                                         for _ in range(6)))
        stream = await client.chat.completions.create(**args, stream=True)
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream])
        await client.close()
        return results, streamed

    results, streamed = asyncio.run(main())
    texts = {r.choices[0].message.content for r in results}
    assert texts == {streamed}  # greedy: batching does not change the answer


def test_sampling_parameters_are_accepted_together(client):
    response = client.chat.completions.create(
        model=TINY, messages=HELLO, max_completion_tokens=6, temperature=0.7, top_p=0.9,
        frequency_penalty=0.5, presence_penalty=0.5, seed=3, user="tester", logit_bias=BAN_EOS,
        extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1},
    )
    assert response.usage.completion_tokens == 6


def test_penalties_change_the_greedy_output(client):
    args = dict(model=TINY, messages=HELLO, max_tokens=16, temperature=0, logit_bias=BAN_EOS)
    plain = client.chat.completions.create(**args).choices[0].message.content
    penalised = client.chat.completions.create(**args, frequency_penalty=2.0)
    assert penalised.choices[0].message.content != plain

"""n, logprobs, echo and cached-token usage through the OpenAI SDK."""

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TINY
from tests.openai.http_client import request

BAN_EOS = {"2": -100}
HELLO = [{"role": "user", "content": "Hello world"}]


def openai_token_text(raw: bytes) -> str:
    """How OpenAI names a token: its text, or ``bytes:\\xNN...`` when it is not UTF-8 alone."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


@pytest.fixture
def client(tiny_server):
    return openai.OpenAI(base_url=tiny_server.base_url, api_key="unused", max_retries=0)


def test_n_choices_in_chat(client):
    response = client.chat.completions.create(
        model=TINY, messages=HELLO, max_tokens=6, n=3, temperature=1.0, seed=5,
        logit_bias=BAN_EOS,
    )
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert response.usage.completion_tokens == 18
    assert len({c.message.content for c in response.choices}) == 3


def test_n_choices_streaming_completions(client):
    chunks = list(client.completions.create(
        model=TINY, prompt=["Hello", "The quick"], n=2, max_tokens=3, temperature=0,
        logit_bias=BAN_EOS, stream=True,
    ))
    finished = {c.choices[0].index for c in chunks if c.choices[0].finish_reason}
    assert finished == {0, 1, 2, 3}


def test_chat_logprobs_shape_and_consistency(client):
    response = client.chat.completions.create(
        model=TINY, messages=HELLO, max_tokens=5, temperature=0, logit_bias=BAN_EOS,
        logprobs=True, top_logprobs=3,
    )
    content = response.choices[0].logprobs.content
    assert len(content) == 5
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].token == entry.token  # greedy
        assert entry.top_logprobs[0].logprob == entry.logprob
        for token in (entry, *entry.top_logprobs):  # the tiny model has both kinds of token
            assert token.token == openai_token_text(bytes(token.bytes))
    joined = b"".join(bytes(e.bytes) for e in content).decode("utf-8", "replace")
    assert joined == response.choices[0].message.content


def test_chat_logprobs_while_streaming(client):
    chunks = list(client.chat.completions.create(
        model=TINY, messages=HELLO, max_tokens=5, temperature=0, logit_bias=BAN_EOS,
        logprobs=True, top_logprobs=2, stream=True,
    ))
    entries = [e for c in chunks if c.choices and c.choices[0].logprobs
               for e in c.choices[0].logprobs.content]
    assert len(entries) == 5 and all(len(e.top_logprobs) == 2 for e in entries)


def test_completion_logprobs_and_echo(client):
    response = client.completions.create(
        model=TINY, prompt="Hello world", max_tokens=4, temperature=0, logit_bias=BAN_EOS,
        logprobs=2,
    )
    logprobs = response.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == 4
    assert all(len(t) == 2 for t in logprobs.top_logprobs)
    assert "".join(logprobs.tokens) == response.choices[0].text
    assert logprobs.text_offset == [len("".join(logprobs.tokens[:i])) for i in range(4)]
    echoed = client.completions.create(
        model=TINY, prompt="Hello world", max_tokens=4, temperature=0, logit_bias=BAN_EOS,
        echo=True,
    )
    assert echoed.choices[0].text == "Hello world" + response.choices[0].text


def test_usage_reports_cached_prompt_tokens(client, tiny_server):
    system = {"role": "system", "content": "You are a helpful assistant. " * 20}
    args = dict(model=TINY, max_tokens=2, temperature=0, logit_bias=BAN_EOS)
    client.chat.completions.create(messages=[system, {"role": "user", "content": "one"}],
                                   **args)
    warm = client.chat.completions.create(
        messages=[system, {"role": "user", "content": "two"}], **args)
    assert warm.usage.prompt_tokens_details.cached_tokens > 100
    status, _, text = request(tiny_server.port, "GET", "/v1/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    hits = {s.labels["model"]: s.value for s in families["triton_mlx_prefix_cache_hits"].samples}
    assert hits[TINY] >= 1

"""Every model family mlx-lm serves, through every serving feature, over real HTTP.

One tiny random model per family (``tests.tiny_families``: llama, mistral, mixtral, phi3, qwen2,
qwen3, gemma2, gemma3 with sliding-window layers, cohere, starcoder2, and llamas quantized as
mlx-community quantizes them), all in one repository served by the servers of ``conftest``.
Random weights answer nonsense, so the tests compare answers with each other: streamed with
whole, batched with alone, cached with cold, forked with prefilled.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.conftest import RunningServer
from tests.families.conftest import (
    CHUNK,
    FAMILIES,
    MODELS,
    SLIDING,
    chat,
    complete,
    sdk,
    serve,
    text_of,
)
from tests.openai.test_choices_and_logprobs import openai_token_text
from tests.openai.test_disconnect import send
from tests.waiting import wait_for
from triton_mlx.engine import sampling

pytestmark = pytest.mark.parametrize("model", MODELS)

HELLO = [{"role": "user", "content": "Hello world"}]
PROMPTS = [  # different lengths, so a batch of them is padded
    "Hello",
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n",
    "Numbers like 12345 and 67890 appear in text; so do emoji and accents: café, naïve.",
]
LONG_PROMPT = " ".join([
    "The capital of France is Paris. The capital of Italy is Rome.",
    "Hello world! How are you today? I am fine, thank you.",
    "Stop here. STOP. stopping is hard when the sentence keeps going on and on.",
])  # several prefill chunks, and longer than gemma3's window


def test_chat_and_completions_stream_what_they_answer(plain_server, model):
    whole = chat(plain_server, model, HELLO)
    choice = whole.choices[0]
    assert whole.model == model and choice.finish_reason == "length"
    assert whole.usage.completion_tokens == 8 and choice.message.content
    chunks = list(chat(plain_server, model, HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == choice.message.content
    assert chunks[-1].choices[0].finish_reason == "length"

    text = complete(plain_server, model, "Hello world").choices[0].text
    streamed = list(complete(plain_server, model, "Hello world", stream=True))
    assert text and "".join(c.choices[0].text for c in streamed) == text


def test_batched_output_equals_solo(plain_server, model):
    alone = [text_of(plain_server, model, p, 12) for p in PROMPTS]
    start = threading.Barrier(len(PROMPTS))

    def together(prompt: str) -> str:
        start.wait()
        return text_of(plain_server, model, prompt, 12)

    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        assert list(pool.map(together, PROMPTS)) == alone


def test_prefix_cache_reuses_a_shared_prefix_with_cold_output(cached_server, plain_server, model):
    # A sliding-window model reuses a prefix only while it fits the window (prefix_cache.py).
    shared = "The quick brown fox jumps over the lazy dog."  # 17 tokens
    if model not in SLIDING:
        shared += " " + LONG_PROMPT
    first, second = shared + " one", shared + " two"
    for prompt in (first, second, second):  # the second again: all but its last token cached
        warm = complete(cached_server, model, prompt)
        assert warm.choices[0].text == text_of(plain_server, model, prompt)
    assert warm.usage.prompt_tokens_details.cached_tokens == warm.usage.prompt_tokens - 1
    other = complete(cached_server, model, shared + " three")  # shares only the prefix
    assert 0 < other.usage.prompt_tokens_details.cached_tokens < other.usage.prompt_tokens
    assert other.choices[0].text == text_of(plain_server, model, shared + " three")


def test_n_choices_fork_the_prompt(plain_server, model):
    greedy = chat(plain_server, model, HELLO).choices[0].message.content
    forked = chat(plain_server, model, HELLO, n=3)
    assert [c.index for c in forked.choices] == [0, 1, 2]
    assert [c.message.content for c in forked.choices] == [greedy] * 3
    assert forked.usage.completion_tokens == 24
    sampled = chat(plain_server, model, HELLO, n=2, temperature=1.0, seed=7)
    assert len(sampled.choices) == 2 and sampled.usage.completion_tokens == 16


def test_logprobs(plain_server, model):
    response = chat(plain_server, model, HELLO, max_tokens=5, logprobs=True, top_logprobs=3)
    content = response.choices[0].logprobs.content
    assert len(content) == 5
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].token == entry.token  # greedy
        assert entry.token == openai_token_text(bytes(entry.bytes))
    joined = b"".join(bytes(e.bytes) for e in content).decode("utf-8", "replace")
    assert joined == response.choices[0].message.content
    completion = complete(plain_server, model, "Hello world", max_tokens=4, logprobs=2)
    logprobs = completion.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == 4
    for logprob, top in zip(logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert len(top) == 2 and max(top.values()) == logprob <= 0  # greedy


def sampling_order(monkeypatch) -> list[int]:
    """The prompt length of each sequence as it samples a token, in the engine's order."""
    order: list[int] = []
    real = sampling.make_logits_processors

    def make(params):
        prompt_length = None

        def record(tokens, logits):  # first called with the prompt as the tokens so far
            nonlocal prompt_length
            prompt_length = prompt_length or tokens.size
            order.append(prompt_length)
            return logits

        return [*real(params), record]

    monkeypatch.setattr(sampling, "make_logits_processors", make)
    return order


def test_long_prompt_prefills_in_chunks_while_another_stream_decodes(plain_server, model,
                                                                     monkeypatch):
    prompts = ["Hello", LONG_PROMPT]
    alone = [text_of(plain_server, model, p, 12) for p in prompts]
    order = sampling_order(monkeypatch)
    together = complete(plain_server, model, prompts, 12)  # one request, two sequences
    assert [c.text for c in together.choices] == alone
    short, long = (len(plain_server.engine(model).tokenizer.encode(p)) for p in prompts)
    assert long > 3 * CHUNK
    # The short prompt decoded tokens while the long one was still prefilling, chunk by chunk.
    assert order.index(short) < order.index(long) - 1


def test_disconnect_cancels_generation(plain_server, model):
    engine = plain_server.engine(model)
    before = engine.stats().generated_tokens
    sock = send(plain_server.port, {"model": model, "messages": HELLO, "max_tokens": 400,
                                    "logit_bias": {"2": -100}, "stream": True})
    received = b""
    while received.count(b"data:") < 3:  # the stream is under way
        received += sock.recv(4096)
    sock.close()
    wait_for(lambda: engine.stats().running == 0 and engine.stats().queued == 0,
             what="the engine to drop the sequence")
    assert engine.stats().generated_tokens - before < 400


def test_embeddings_from_the_chat_model(plain_server, model):
    client = sdk(plain_server)
    batch = client.embeddings.create(model=model, input=PROMPTS, encoding_format="float")
    assert [d.index for d in batch.data] == list(range(len(PROMPTS)))
    for prompt, item in zip(PROMPTS, batch.data, strict=True):
        vector = np.array(item.embedding)
        assert vector.shape == (64,) and abs(np.linalg.norm(vector) - 1) < 1e-5
        alone = client.embeddings.create(model=model, input=prompt, encoding_format="float")
        assert np.abs(np.array(alone.data[0].embedding) - vector).max() < 1e-5


@pytest.fixture(scope="module", params=["fast", "small"])
def profile_server(request, family_repository):
    with serve(family_repository, prefix_cache_mb=0, runtime_profile=request.param) as running:
        yield running


def test_runtime_profiles(profile_server: RunningServer, plain_server, model):
    requested = profile_server.config.runtime_profile
    card = sdk(profile_server).models.retrieve(model).model_extra["runtime_profile"]
    assert card["name"] in (f"cpu-{requested}", "gpu")
    answer = chat(profile_server, model, HELLO)
    assert answer.usage.completion_tokens == 8 and answer.choices[0].message.content
    if model in FAMILIES:  # float32 weights, in every profile: the same numbers
        assert answer.choices[0].message.content == (
            chat(plain_server, model, HELLO).choices[0].message.content)

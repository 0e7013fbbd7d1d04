"""Sliding-window layers (gemma3's ``RotatingKVCache``) and the prefix cache, over HTTP.

The tiny gemma3 has a window of ``GEMMA3_WINDOW`` tokens. What the prefix cache may reuse for
it (see ``triton_mlx/engine/prefix_cache.py``): a prefix that fits the window, whatever the
length of the output that followed it; past the window, a cache only as the start of a longer
prompt. Whatever it reuses, every answer must equal the cold run of ``plain_server``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.families.conftest import chat, complete, text_of
from tests.tiny_families import GEMMA3_WINDOW

MODEL = "gemma3"
TEXT = ("Hello world! How are you today? I am fine, thank you. The capital of France is "
        "Paris. The capital of Italy is Rome. def add(a, b): return a + b")


@pytest.fixture(scope="module")
def ids(plain_server) -> list[int]:
    """Token ids of a text much longer than the window."""
    tokens = plain_server.engine(MODEL).tokenizer.encode(TEXT)
    assert len(tokens) > 2 * GEMMA3_WINDOW
    return tokens


def cached_tokens(response) -> int:
    return response.usage.prompt_tokens_details.cached_tokens


def test_a_prefix_within_the_window_is_reused_after_a_long_answer(cached_server, plain_server,
                                                                  ids):
    shared = ids[:GEMMA3_WINDOW // 2]
    for tail in ([7], [8], [9, 10]):  # each answer takes the sequence far past the window
        warm = complete(cached_server, MODEL, shared + tail, 3 * GEMMA3_WINDOW)
        assert warm.choices[0].text == text_of(plain_server, MODEL, shared + tail,
                                               3 * GEMMA3_WINDOW)
    assert cached_tokens(warm) == len(shared)


def test_prompts_longer_than_the_window_answer_as_cold_runs(cached_server, plain_server, ids):
    base = ids[: 2 * GEMMA3_WINDOW]
    prompts = [base + [7], base + [8], base + [7], base[:-5], base + [7, 8, 9], ids]
    for prompt in prompts:
        assert text_of(cached_server, MODEL, prompt) == text_of(plain_server, MODEL, prompt)


def test_a_conversation_continues_from_a_cache_that_has_wrapped(cached_server, plain_server,
                                                                ids):
    first = ids[3 : 3 + GEMMA3_WINDOW + 10]
    forced = {"17": 100}  # every answer token is 17, so the next turn can quote it exactly
    answer = complete(cached_server, MODEL, first, 4, logit_bias=forced)
    assert answer.choices[0].text == plain_server.engine(MODEL).tokenizer.decode([17] * 4)
    turn = first + [17] * 4 + ids[-6:]
    warm = complete(cached_server, MODEL, turn)
    assert cached_tokens(warm) == len(first) + 4 > GEMMA3_WINDOW
    assert warm.choices[0].text == text_of(plain_server, MODEL, turn)


def test_concurrent_prompts_around_the_window_answer_as_cold_runs(cached_server, plain_server,
                                                                  ids):
    lengths = (6, GEMMA3_WINDOW - 4, GEMMA3_WINDOW - 1, GEMMA3_WINDOW, GEMMA3_WINDOW + 3,
               2 * GEMMA3_WINDOW)
    prompts = [ids[1:n] + [200 + n] for n in lengths]
    cold = [text_of(plain_server, MODEL, p, 16) for p in prompts]
    for _ in range(2):  # the second round starts from what the first one cached
        with ThreadPoolExecutor(len(prompts)) as pool:
            warm = list(pool.map(lambda p: text_of(cached_server, MODEL, p, 16), prompts))
        assert warm == cold


def test_n_choices_of_a_prompt_longer_than_the_window(cached_server, plain_server):
    messages = [{"role": "user", "content": TEXT}]
    greedy = chat(plain_server, MODEL, messages).choices[0].message.content
    for _ in range(2):  # the second time from the prefix cache
        response = chat(cached_server, MODEL, messages, n=3)
        assert [c.message.content for c in response.choices] == [greedy] * 3

"""A batch begun from nothing reads its first tokens at once (``DecodeBatch.read_now``); what
the prefix cache keeps of such a sequence must still be exactly the tokens fed to the model.

A sequence that ends at that first token (``max_tokens`` 1) leaves its cache to the prefix
cache at once; later prompts that start with it must answer as an engine without a prefix cache
does, token for token.
"""

from __future__ import annotations

import asyncio

import pytest
from mlx_lm.utils import load

from triton_mlx.engine.engine import Engine
from triton_mlx.engine.types import GenerationRequest, SamplingParams

GREEDY = SamplingParams(temperature=0.0, logit_bias={2: -100.0})


@pytest.fixture(scope="module")
def engines(tiny_repository):
    made = []
    for cache_bytes in (64 << 20, 0):
        engine = Engine(lambda: load(str(tiny_repository / "tiny")), name=f"ahead-{cache_bytes}",
                        slots=4, max_queue=4, warmup=False, prefix_cache_bytes=cache_bytes)
        engine.start()
        engine.wait_loaded(60)
        made.append(engine)
    yield made
    for engine in made:
        engine.stop()


def _answer(engine: Engine, prompt: list[int], tokens: int) -> tuple[list[tuple], int]:
    """Greedy tokens with their log probabilities, and the prompt tokens served from cache."""
    async def main():
        (stream,) = engine.submit(GenerationRequest(prompt, tokens, GREEDY, logprobs=0))
        got, cached = [], 0
        async for output in stream:
            got += [(lp.token, round(lp.logprob, 4)) for lp in output.logprobs]
            cached = output.cached_tokens
        return got, cached

    return asyncio.run(main())


def test_a_sequence_ended_at_its_read_ahead_token_leaves_a_true_cache(engines):
    cached_engine, cold_engine = engines
    tokenizer = cached_engine.tokenizer
    start = tokenizer.encode("The capital of France is a city on the river")
    first, _ = _answer(cached_engine, start, 1)  # ends at its first token, read ahead
    assert len(first) == 1
    for prompt in (start + tokenizer.encode(" Seine, and"), start):
        got, cached = _answer(cached_engine, prompt, 8)
        assert cached > 0  # started from what the first request left
        assert got == _answer(cold_engine, prompt, 8)[0]


@pytest.mark.parametrize("max_tokens", [1, 5])
def test_choices_of_a_request_that_starts_the_batch_all_answer(engines, max_tokens):
    """``n`` choices fork the first one's prompt cache once it is in; a first choice that ends
    at its read-ahead first token (``max_tokens`` 1) has left the batch by then, and its
    siblings start from the prompt instead."""
    cached_engine, cold_engine = engines
    prompt = cached_engine.tokenizer.encode("Hello world! How are you today?")

    async def tokens_of(stream):
        return [lp.token async for output in stream for lp in output.logprobs]

    async def answers():
        streams = cached_engine.submit(
            GenerationRequest(prompt, max_tokens, GREEDY, logprobs=0), 3)
        return await asyncio.gather(*(tokens_of(s) for s in streams))

    expected = [t for t, _ in _answer(cold_engine, prompt, max_tokens)[0]]
    assert asyncio.run(answers()) == [expected] * 3

"""Prefill padded to a few lengths (CUDA's engine): the lengths, and the same tokens as without.

The engine pads only on CUDA; these tests turn it on here (``Engine(pad_prompts=True)``) and
compare every greedy token with an engine that does not pad, on lone prompts, prompts of
unequal lengths prefilled together, a prompt that starts from the prefix cache, and one longer
than a prefill chunk.
"""

from __future__ import annotations

import asyncio

import pytest
from mlx_lm.utils import load

from triton_mlx.engine.engine import Engine
from triton_mlx.engine.grammar_batch import _PromptBatch
from triton_mlx.engine.prompt_shapes import lengths, padded_length
from triton_mlx.engine.types import GenerationRequest, SamplingParams

GREEDY = SamplingParams(temperature=0.0, logit_bias={2: -100.0})
CHUNK = 64  # prefill chunk of both engines: a prompt longer than it is cut


def test_lengths_are_multiples_of_16_then_four_per_doubling():
    assert lengths(2048) == (16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
                             448, 512, 640, 768, 896, 1024, 1280, 1536, 1792, 2048)
    assert lengths(100) == (16, 32, 48, 64, 80, 96, 100)  # the limit is always one
    assert lengths(8) == (8,)


@pytest.mark.parametrize("limit", [8, 100, 128, 1000, 2048])
def test_padded_length_is_the_smallest_length_that_holds_the_prompt(limit):
    for longest in range(1, limit + 40):
        padded = padded_length(longest, limit)
        if longest >= limit:  # cut into chunks anyway: not padded
            assert padded == longest
        else:
            assert padded == min(n for n in lengths(limit) if n >= longest)
            assert padded < 1.34 * longest or padded - longest < 16


@pytest.fixture(scope="module")
def engines(tiny_repository):
    def make(pad: bool) -> Engine:
        engine = Engine(lambda: load(str(tiny_repository / "tiny")), name=f"pad-{pad}", slots=4,
                        max_queue=8, warmup=False, prefill_step_size=CHUNK, pad_prompts=pad,
                        prefix_cache_bytes=64 << 20)
        engine.start()
        engine.wait_loaded(60)
        return engine

    padded, plain = make(True), make(False)
    yield padded, plain
    padded.stop()
    plain.stop()


def _run(engine: Engine, prompts: list[list[int]], tokens: int) -> list[list[tuple[int, float]]]:
    """Each prompt's greedy tokens, with their log probabilities (to 4 places)."""
    async def read(stream) -> list[tuple[int, float]]:
        return [(lp.token, round(lp.logprob, 4)) async for output in stream
                for lp in output.logprobs]

    async def main():
        streams = [s for p in prompts
                   for s in engine.submit(GenerationRequest(p, tokens, GREEDY, logprobs=0))]
        return await asyncio.gather(*(read(s) for s in streams))

    return asyncio.run(main())


def _prompt(engine: Engine, text: str, repeat: int = 1) -> list[int]:
    return engine.tokenizer.encode(text * repeat)


def test_padded_prefill_gives_the_same_tokens(engines, monkeypatch):
    padded, plain = engines
    widths: list[int] = []  # the padded engine's prefill widths
    real = _PromptBatch.prompt

    def record(batch, tokens):
        if tokens and batch.pad_prompts:
            widths.append(padded_length(max(map(len, tokens)), CHUNK))
        return real(batch, tokens)

    monkeypatch.setattr(_PromptBatch, "prompt", record)
    cases = [
        ["The quick brown fox"],                                        # lone, short
        ["Hello", "A much longer prompt about lighthouses and bottles",  # unequal, together
         "def add(a, b):"],
        ["Numbers like 12345 and 67890 " * 6],                          # past one chunk
    ]
    for texts in cases:
        prompts = [_prompt(padded, t) for t in texts]
        assert _run(padded, prompts, 12) == _run(plain, prompts, 12), texts
    assert widths and all(w in lengths(CHUNK) for w in widths)
    assert any(w > 16 for w in widths)  # not every prompt fits the smallest length


def test_padded_prefill_after_a_cached_prefix_gives_the_same_tokens(engines):
    padded, plain = engines
    system = "You are a careful assistant who answers in one sentence. " * 2
    for engine in engines:  # the shared start goes into each engine's prefix cache
        _run(engine, [_prompt(engine, system + "First question?")], 4)
    prompt = _prompt(padded, system + "A second, different question about the sea?")
    assert _run(padded, [prompt], 12) == _run(plain, [prompt], 12)
    assert padded.prefix_cache.hits >= 1 and plain.prefix_cache.hits >= 1


def test_warm_up_runs_a_lone_prompt_at_each_length(tiny_repository, monkeypatch):
    prefilled: list[int] = []
    real = _PromptBatch.prompt

    def record(batch, tokens):
        if tokens:
            prefilled.append(padded_length(max(map(len, tokens)), CHUNK))
        return real(batch, tokens)

    monkeypatch.setattr(_PromptBatch, "prompt", record)
    engine = Engine(lambda: load(str(tiny_repository / "tiny")), name="pad-warm", slots=2,
                    max_queue=2, prefill_step_size=CHUNK, pad_prompts=True)
    engine.start()
    try:
        engine.wait_loaded(60)
        assert set(lengths(CHUNK)) <= set(prefilled)
        assert engine.stats().running == 0
        (tokens,) = _run(engine, [_prompt(engine, "After the warm-up")], 3)
        assert len(tokens) == 3
    finally:
        engine.stop()

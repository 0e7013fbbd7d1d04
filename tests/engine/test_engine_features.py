"""Prefix cache, n choices, logprobs and memory admission, on the engine itself."""

import asyncio

import pytest
from mlx_lm.utils import load

from tests.engine.steps import stats_at_each_step
from triton_mlx.engine.engine import Engine
from triton_mlx.engine.kv_budget import KVBudget
from triton_mlx.engine.types import GenerationRequest, RequestTooLargeError, SamplingParams

GREEDY = SamplingParams(temperature=0.0, logit_bias={2: -100.0})


def make_engine(repository, **kwargs):
    engine = Engine(lambda: load(str(repository / "tiny")), name="tiny", slots=4, max_queue=8,
                    **kwargs)
    engine.start()
    engine.wait_loaded(60)
    return engine


@pytest.fixture(scope="module")
def cached_engine(tiny_repository):
    engine = make_engine(tiny_repository, prefix_cache_bytes=64 * 2**20)
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def plain_engine(tiny_repository):
    engine = make_engine(tiny_repository)
    yield engine
    engine.stop()


async def collect(stream):
    texts, outputs = [], []
    async for output in stream:
        texts.append(output.text)
        outputs.append(output)
    return "".join(texts), outputs


def generate(engine, prompt, max_tokens=12, sampling=GREEDY, n=1, logprobs=None):
    async def main():
        streams = engine.submit(GenerationRequest(prompt, max_tokens, sampling,
                                                  logprobs=logprobs), n)
        return await asyncio.gather(*(collect(s) for s in streams))

    return asyncio.run(main())


def conversation(engine, turns):
    text = "".join(f"<|im_start|>user\nturn {i}: hello world<|im_end|>\n" for i in range(turns))
    return engine.tokenizer.encode(text + "<|im_start|>assistant\n")


def test_prefix_cache_gives_identical_greedy_output(cached_engine, plain_engine):
    first = conversation(cached_engine, 6)
    longer = conversation(cached_engine, 8)  # shares the first prompt as a prefix
    [(cold, cold_outputs)] = generate(cached_engine, first)
    [(warm, warm_outputs)] = generate(cached_engine, longer)
    [(reference, _)] = generate(plain_engine, longer)
    assert cold_outputs[-1].cached_tokens == 0
    common = next(i for i, (a, b) in enumerate(zip(first, longer, strict=False)) if a != b)
    assert warm_outputs[-1].cached_tokens == common
    assert warm == reference
    # An identical prompt hits too, and still gives the same answer.
    [(again, again_outputs)] = generate(cached_engine, longer)
    assert again == reference and again_outputs[-1].cached_tokens == len(longer) - 1
    stats = cached_engine.stats()
    assert 0 < stats.prefix_cache_bytes <= 64 * 2**20
    assert stats.cached_prompt_tokens >= again_outputs[-1].cached_tokens


def test_prefix_cache_stays_within_its_byte_bound(tiny_repository):
    engine = make_engine(tiny_repository, prefix_cache_bytes=300_000)
    try:
        for turns in range(1, 8):
            generate(engine, conversation(engine, turns) + [5 + turns])
            assert engine.stats().prefix_cache_bytes <= 300_000
    finally:
        engine.stop()


def test_n_choices_prefill_the_prompt_once(plain_engine):
    prompt = conversation(plain_engine, 4)
    before = plain_engine.stats().prompt_tokens
    results = generate(plain_engine, prompt, n=3)
    prefilled = plain_engine.stats().prompt_tokens - before
    assert prefilled == len(prompt) + 2  # each sibling recomputes only the last prompt token
    texts = {text for text, _ in results}
    assert len(texts) == 1  # greedy: every choice is the same
    [(single, _)] = generate(plain_engine, prompt)
    assert texts == {single}


def test_seeded_choices_differ_from_each_other_but_repeat(plain_engine):
    sampling = SamplingParams(temperature=1.0, seed=11, logit_bias={2: -100.0})
    prompt = conversation(plain_engine, 2)
    first = [text for text, _ in generate(plain_engine, prompt, 16, sampling, n=3)]
    second = [text for text, _ in generate(plain_engine, prompt, 16, sampling, n=3)]
    assert first == second
    assert len(set(first)) == 3


def test_logprobs_cover_every_token_with_sorted_alternatives(plain_engine):
    [(text, outputs)] = generate(plain_engine, conversation(plain_engine, 1), 8, logprobs=3)
    entries = [e for o in outputs for e in o.logprobs]
    assert len(entries) == 8
    for entry in entries:
        assert entry.logprob <= 0 and len(entry.top) == 3
        values = [lp for _, lp in entry.top]
        assert values == sorted(values, reverse=True)
        assert entry.token == entry.top[0][0]  # greedy picks the most likely token


def test_memory_admission_queues_what_does_not_fit_now(tiny_repository, monkeypatch):
    engine = make_engine(tiny_repository)
    try:
        per_sequence = engine.budget.need(40 + 30)
        engine.budget = KVBudget(engine.budget.bytes_per_token, 2 * per_sequence)
        seen = stats_at_each_step(monkeypatch, engine)
        prompt = list(range(10, 50))

        async def main():
            streams = [s for _ in range(6)
                       for s in engine.submit(GenerationRequest(prompt, 30, GREEDY))]
            return await asyncio.gather(*(collect(s) for s in streams))

        results = asyncio.run(main())
        assert all(outputs[-1].completion_tokens == 30 for _, outputs in results)
        assert max(stats.running for stats in seen) == 2  # 4 slots, memory for 2
        assert all(stats.kv_reserved_bytes <= stats.kv_budget_bytes for stats in seen)
        assert engine.stats().kv_reserved_bytes == 0
        with pytest.raises(RequestTooLargeError, match="MiB"):
            engine.submit(GenerationRequest(prompt, 2000, GREEDY))
    finally:
        engine.stop()


def test_long_prompt_is_prefilled_in_chunks_between_decode_steps(tiny_repository):
    """A running stream keeps getting tokens while a long prompt is prefilled: one decode
    step per prefill chunk, rather than one long stall."""
    engine = make_engine(tiny_repository, prefill_step_size=32)
    try:
        async def main():
            (running,) = engine.submit(GenerationRequest([5, 6, 7], 400, GREEDY))
            iterator = running.__aiter__()
            await iterator.__anext__()  # the running stream is decoding
            long_prompt = list(range(10, 10 + 320))  # 10 chunks of 32
            before = engine.stats().generated_tokens
            (arriving,) = engine.submit(GenerationRequest(long_prompt, 2, GREEDY))
            await arriving.__aiter__().__anext__()
            running.cancel()
            # Tokens generated until the long prompt's first: the running stream's, made
            # between the chunks, and that first one.
            return engine.stats().generated_tokens - before

        assert asyncio.run(main()) >= 10
    finally:
        engine.stop()

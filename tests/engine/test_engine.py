"""The engine on its own thread, driven from asyncio, with the tiny model."""

import asyncio

import pytest
from mlx_lm.utils import load

from tests.engine.steps import collect, stats_at_each_step
from tests.waiting import wait_for
from triton_mlx.engine.engine import Engine
from triton_mlx.engine.types import (
    EngineError,  # noqa: F401  (documented failure type)
    GenerationRequest,
    QueueFullError,
    SamplingParams,
)


@pytest.fixture(scope="module")
def engine(tiny_repository):
    engine = Engine(lambda: load(str(tiny_repository / "tiny")), name="tiny", slots=2,
                    max_queue=1)
    engine.start()
    engine.wait_loaded(60)
    yield engine
    engine.stop()


def prompt(engine, text="Hello world"):
    return engine.tokenizer.encode(text)


def test_sequences_with_different_parameters_share_the_batch(engine, monkeypatch):
    seen = stats_at_each_step(monkeypatch, engine)

    async def main():
        greedy = SamplingParams(temperature=0.0, logit_bias={2: -100.0})
        seeded = SamplingParams(temperature=0.9, top_p=0.9, seed=7, logit_bias={2: -100.0})
        streams = [
            *engine.submit(GenerationRequest(prompt(engine), 12, greedy)),
            *engine.submit(GenerationRequest(prompt(engine), 12, seeded)),
        ]
        return await asyncio.gather(*(collect(s) for s in streams))

    (greedy_text, greedy_last), (seeded_text, seeded_last) = asyncio.run(main())
    assert greedy_last.finish_reason == "length" and greedy_last.completion_tokens == 12
    assert seeded_last.finish_reason == "length" and seeded_last.completion_tokens == 12
    assert max(stats.running for stats in seen) == 2  # both in one step's batch
    assert engine.stats().running == 0 and engine.stats().queued == 0


def test_greedy_and_seeded_outputs_are_reproducible_whatever_the_batch(engine):
    seeded = SamplingParams(temperature=1.0, seed=1234, logit_bias={2: -100.0})

    async def alone():
        (stream,) = engine.submit(GenerationRequest(prompt(engine), 16, seeded))
        return await collect(stream)

    async def with_company():
        noise = SamplingParams(temperature=1.0, logit_bias={2: -100.0})
        (other,) = engine.submit(GenerationRequest(prompt(engine, "The quick"), 16, noise))
        (mine,) = engine.submit(GenerationRequest(prompt(engine), 16, seeded))
        results = await asyncio.gather(collect(mine), collect(other))
        return results[0]

    assert asyncio.run(alone())[0] == asyncio.run(with_company())[0]


def test_full_queue_refuses_and_cancel_frees_the_slot(engine):
    async def main():
        long = GenerationRequest(prompt(engine), 400, SamplingParams(0.0, logit_bias={2: -100.0}))
        streams = [s for _ in range(3) for s in engine.submit(long)]  # 2 slots + 1 queued
        with pytest.raises(QueueFullError):
            engine.submit(long)
        for s in streams:
            s.cancel()

    asyncio.run(main())
    wait_for(lambda: engine.stats().running == 0 and engine.stats().queued == 0,
             what="the cancelled sequences to free their slots")
    assert engine.stats().kv_reserved_bytes == 0


def test_stop_string_ends_generation_without_leaking(engine):
    greedy = SamplingParams(temperature=0.0, logit_bias={2: -100.0})

    async def main(stop=()):
        (stream,) = engine.submit(GenerationRequest(prompt(engine), 24, greedy, stop))
        return await collect(stream)

    full, _ = asyncio.run(main())
    assert len(full) > 6
    stop = full[3:6]
    text, last = asyncio.run(main((stop,)))
    assert last.finish_reason == "stop"
    assert text == full[: full.index(stop)]


def test_each_step_hands_its_tokens_to_the_event_loop_in_one_call(tiny_repository,
                                                                   monkeypatch):
    """The event loop wakes once per step, whatever the number of tokens. An engine of its
    own: nothing else runs in it."""
    engine = Engine(lambda: load(str(tiny_repository / "tiny")), name="tiny", slots=2,
                    max_queue=1)
    engine.start()
    engine.wait_loaded(60)
    handed: list[list] = []  # each call's tokens
    real_call = engine._call_in_loop

    def recording(fn, arg):
        if isinstance(arg, list):
            handed.append(arg)
        real_call(fn, arg)

    monkeypatch.setattr(engine, "_call_in_loop", recording)
    params = SamplingParams(temperature=0.0, logit_bias={2: -100.0})

    async def main():
        streams = [s for _ in range(2)
                   for s in engine.submit(GenerationRequest(prompt(engine), 8, params))]
        return await asyncio.gather(*(collect(s) for s in streams))

    try:
        results = asyncio.run(main())
    finally:
        engine.stop()
    assert [last.completion_tokens for _, last in results] == [8, 8]
    assert sum(len(tokens) for tokens in handed) == 16
    assert any(len(tokens) == 2 for tokens in handed)  # both streams' tokens in one call

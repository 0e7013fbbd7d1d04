"""``GenerationStream``: a reader that falls behind gets the piled-up outputs as one."""

from __future__ import annotations

import asyncio

import pytest

from triton_mlx.engine.stream import GenerationStream
from triton_mlx.engine.types import (
    EngineError,
    GenerationOutput,
    GenerationRequest,
    TokenLogprob,
)


def output(text: str, count: int, finish: str | None = None) -> GenerationOutput:
    return GenerationOutput(text=text, completion_tokens=count, finish_reason=finish,
                            logprobs=(TokenLogprob(count, -0.5 * count),))


def read_all(stream: GenerationStream, before_reading) -> list:
    async def main():
        before_reading()
        return [o async for o in stream]

    return asyncio.run(main())


def new_stream() -> GenerationStream:
    return GenerationStream(GenerationRequest([1], 8), lambda stream: None)


def test_outputs_that_piled_up_are_read_as_one_in_order():
    stream = new_stream()
    got = read_all(stream, lambda: [stream.put(output(t, i)) for i, t in
                                    enumerate(["He", "llo", " wor", "ld"], start=1)]
                   + [stream.put(output("!", 5, "length"))])
    assert len(got) == 1
    (only,) = got
    assert only.text == "Hello world!" and only.completion_tokens == 5
    assert only.finish_reason == "length"
    assert [lp.token for lp in only.logprobs] == [1, 2, 3, 4, 5]


def test_outputs_read_as_they_come_stay_apart():
    stream = new_stream()

    async def main():
        seen = []

        async def read():
            async for o in stream:
                seen.append(o.text)

        reader = asyncio.create_task(read())
        for i, text in enumerate(["a", "b", "c"], start=1):
            stream.put(output(text, i, "stop" if i == 3 else None))
            await asyncio.sleep(0)  # the reader takes each one before the next comes
            await asyncio.sleep(0)
        await reader
        return seen

    assert asyncio.run(main()) == ["a", "b", "c"]


def test_an_error_after_outputs_is_raised_after_them_and_ends_the_stream():
    stream = new_stream()
    texts = []

    async def main():
        stream.put(output("a", 1))
        stream.put(output("b", 2))
        stream.put(EngineError("boom"))
        stream.put(output("late", 3))  # after the end: dropped
        async for o in stream:
            texts.append(o.text)

    with pytest.raises(EngineError, match="boom"):
        asyncio.run(main())
    assert texts == ["ab"]

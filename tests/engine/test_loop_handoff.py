"""The engine thread's hand-off to the event loop: every call runs on the loop's thread, in the
order asked, also past a full wake-up pipe, after a failing call, and through the fallback."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import weakref

import pytest

from triton_mlx.engine import loop_handoff
from triton_mlx.engine.loop_handoff import LoopHandoff


def _hand_over_from_a_thread(count: int) -> tuple[list[int], set[int]]:
    """``count`` calls made from another thread; what the loop saw, and on which threads."""
    seen: list[int] = []
    threads: set[int] = set()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        handoff = LoopHandoff.for_running_loop(loop)
        done = loop.create_future()

        def record(i: int) -> None:
            seen.append(i)
            threads.add(threading.get_ident())
            if i == count - 1:
                done.set_result(None)

        worker = threading.Thread(target=lambda: [handoff.call(record, i) for i in range(count)])
        worker.start()
        await asyncio.wait_for(done, 60)  # a guard against a hang, not a timing
        worker.join()

    asyncio.run(main())
    return seen, threads


def test_calls_from_another_thread_run_on_the_loop_in_order():
    seen, threads = _hand_over_from_a_thread(1000)
    assert seen == list(range(1000))
    assert threads == {threading.main_thread().ident}


@pytest.mark.parametrize("at_once", [lambda i: False, lambda i: i % 3 == 0],
                         ids=["keeping-the-gil", "some-at-once"])
def test_a_full_wake_up_pipe_loses_no_call_and_keeps_the_order(at_once):
    """Far more calls than the pipe holds bytes, made while the loop cannot read it; with
    either kind of wake-up, mixed or not."""
    count = 200_000
    seen: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        handoff = LoopHandoff.for_running_loop(loop)
        for i in range(count):  # the loop is busy here: nothing is read meanwhile
            handoff.call(seen.append, i, at_once=at_once(i))
        assert seen == []
        done = loop.create_future()
        handoff.call(done.set_result, None)
        await asyncio.wait_for(done, 60)  # a guard against a hang, not a timing

    asyncio.run(main())
    assert seen == list(range(count))


def test_a_failing_call_is_logged_and_the_next_ones_run(caplog):
    seen: list[str] = []

    def fails(_: object) -> None:
        raise ValueError("boom")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        handoff = LoopHandoff.for_running_loop(loop)
        done = loop.create_future()
        handoff.call(seen.append, "before")
        handoff.call(fails, None)
        handoff.call(seen.append, "after")
        handoff.call(done.set_result, None)
        await asyncio.wait_for(done, 60)  # a guard against a hang, not a timing

    with caplog.at_level(logging.ERROR, logger="triton_mlx.engine"):
        asyncio.run(main())
    assert seen == ["before", "after"]
    assert "a call handed to the event loop failed" in caplog.text
    assert "boom" in caplog.text


def test_a_closed_loop_takes_no_call_and_raises_nothing():
    loop = asyncio.new_event_loop()
    handoff = loop.run_until_complete(_handoff_of_running_loop())
    loop.close()
    seen: list[int] = []
    handoff.call(seen.append, 1)
    assert seen == []


async def _handoff_of_running_loop() -> LoopHandoff:
    return LoopHandoff.for_running_loop(asyncio.get_running_loop())


def test_a_loop_that_is_gone_frees_its_handoff_and_pipe():
    loop = asyncio.new_event_loop()
    handoff = loop.run_until_complete(_handoff_of_running_loop())
    read_fd = handoff._fds[0] if handoff._fds else None
    loop.close()
    gone = weakref.ref(loop)
    del loop, handoff
    gc.collect()
    assert gone() is None
    if read_fd is not None:
        with pytest.raises(OSError):
            os.fstat(read_fd)


def test_one_handoff_per_loop():
    async def main() -> tuple[LoopHandoff, LoopHandoff]:
        loop = asyncio.get_running_loop()
        return LoopHandoff.for_running_loop(loop), LoopHandoff.for_running_loop(loop)

    first, second = asyncio.run(main())
    assert first is second
    third = asyncio.run(_handoff_of_running_loop())
    assert third is not first


def test_without_a_c_library_it_falls_back_to_call_soon_threadsafe(monkeypatch):
    monkeypatch.setattr(loop_handoff, "_write", None)
    seen, threads = _hand_over_from_a_thread(100)
    assert seen == list(range(100))
    assert threads == {threading.main_thread().ident}

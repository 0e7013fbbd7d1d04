"""The engine thread's outbox to the event loop: order kept, one wake-up for what piles up."""

from __future__ import annotations

import asyncio
import threading

from triton_mlx.engine.loop_outbox import LoopOutbox


class CountingLoop(asyncio.SelectorEventLoop):
    """An event loop that counts the wake-ups asked of it from other threads."""

    wakeups = 0

    def call_soon_threadsafe(self, *args, **kwargs):
        self.wakeups += 1
        return super().call_soon_threadsafe(*args, **kwargs)


def run_on(loop: asyncio.AbstractEventLoop, coro):
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def test_calls_posted_while_the_loop_is_busy_run_in_order_after_one_wakeup():
    loop = CountingLoop()
    outbox = LoopOutbox(loop)
    seen: list[int] = []
    posted = threading.Event()
    done = asyncio.Event()

    def poster():
        for i in range(50):
            outbox.post(seen.append, i)
        posted.set()

    async def main():
        thread = threading.Thread(target=poster)
        thread.start()
        posted.wait()  # the loop is held here: every post happens before it can run one
        thread.join()
        outbox.post(lambda _: done.set(), None)
        await done.wait()

    run_on(loop, main())
    assert seen == list(range(50))
    assert loop.wakeups == 1


def test_a_call_posted_after_the_loop_ran_the_last_batch_gets_a_wakeup_of_its_own():
    loop = CountingLoop()
    outbox = LoopOutbox(loop)
    seen: list[int] = []

    async def main():
        for i in range(3):
            ran = asyncio.Event()

            def record(value, ran=ran):
                seen.append(value)
                ran.set()

            thread = threading.Thread(target=outbox.post, args=(record, i))
            thread.start()
            await ran.wait()
            thread.join()

    run_on(loop, main())
    assert seen == [0, 1, 2]
    assert loop.wakeups == 3


def test_a_failing_call_does_not_stop_the_ones_after_it(caplog):
    loop = asyncio.new_event_loop()
    outbox = LoopOutbox(loop)
    seen: list[str] = []
    done = asyncio.Event()

    def fail(_):
        raise ValueError("boom")

    async def main():
        outbox.post(fail, None)
        outbox.post(seen.append, "after")
        outbox.post(lambda _: done.set(), None)
        await done.wait()

    run_on(loop, main())
    assert seen == ["after"]
    assert "call from the engine thread failed" in caplog.text


def test_posting_to_a_closed_loop_drops_the_call_and_keeps_trying_later():
    loop = asyncio.new_event_loop()
    outbox = LoopOutbox(loop)
    loop.close()
    outbox.post(print, "nobody reads this")  # no exception
    outbox.post(print, "nor this")
    assert not outbox._calls


def test_many_threads_posting_while_the_loop_runs_lose_nothing_and_keep_each_order():
    loop = asyncio.new_event_loop()
    outbox = LoopOutbox(loop)
    seen: dict[int, list[int]] = {t: [] for t in range(4)}
    total = 4 * 2000
    counted = 0
    done = asyncio.Event()

    def record(item):
        nonlocal counted
        thread, i = item
        seen[thread].append(i)
        counted += 1
        if counted == total:
            done.set()

    async def main():
        threads = [threading.Thread(target=lambda t=t: [outbox.post(record, (t, i))
                                                        for i in range(2000)])
                   for t in range(4)]
        for thread in threads:
            thread.start()
        await done.wait()
        for thread in threads:
            thread.join()

    run_on(loop, main())
    assert all(seen[t] == list(range(2000)) for t in range(4))

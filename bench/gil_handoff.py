"""How handing a step's tokens to the event loop slows the engine thread, in a simulation.

``python -m bench.gil_handoff [--build-ms 1.5 --launch-ms 1.2 --loop-us 150] [--rounds 5]``

An "engine" thread loops: a graph build (pure Python, holds the GIL), a launch (a sleep, which
lets the GIL go, as ``mx.async_eval`` does while it launches kernels), then it hands one call to
the event loop, whose work is pure Python too (the event loop turning a token into text and
sending it). Compared, interleaved, ``--rounds`` times: no hand-off at all,
``loop.call_soon_threadsafe`` and our ``LoopHandoff``. The defaults are a lone stream of the 1B
model on the H200 (a ~3.4 ms step, of which mx.async_eval took ~38%; ~150 us of event-loop work
per token). Prints each one's steps per second, median (min-max), and its ratio to no hand-off.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time

from triton_mlx.engine.loop_handoff import LoopHandoff

MODES = ("none", "call_soon_threadsafe", "LoopHandoff")


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def one_run(mode: str, steps: int, build: float, launch: float, loop_work: float) -> float:
    """Engine steps per second with ``mode``'s hand-off."""

    async def main() -> float:
        loop = asyncio.get_running_loop()
        handoff = LoopHandoff.for_running_loop(loop)
        done = loop.create_future()
        elapsed = []

        def engine() -> None:
            start = time.perf_counter()
            for _ in range(steps):
                _spin(build)
                time.sleep(launch)
                if mode == "call_soon_threadsafe":
                    loop.call_soon_threadsafe(_spin, loop_work)
                elif mode == "LoopHandoff":
                    handoff.call(_spin, loop_work)
            elapsed.append(time.perf_counter() - start)
            loop.call_soon_threadsafe(done.set_result, None)

        thread = threading.Thread(target=engine)
        thread.start()
        await done
        thread.join()
        return steps / elapsed[0]

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build-ms", type=float, default=1.5)
    p.add_argument("--launch-ms", type=float, default=1.2)
    p.add_argument("--loop-us", type=float, default=150.0)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            rates[mode].append(one_run(mode, args.steps, args.build_ms / 1e3,
                                       args.launch_ms / 1e3, args.loop_us / 1e6))
    base = statistics.median(rates["none"])
    for mode in MODES:
        values = rates[mode]
        print(f"{mode:>21}: {statistics.median(values):7.1f} steps/s "
              f"({min(values):.1f}-{max(values):.1f}), {statistics.median(values) / base:.3f}x "
              "no hand-off")


if __name__ == "__main__":
    main()

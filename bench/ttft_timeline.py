"""Where a lone request's time to first token goes inside the engine, step by step.

``python -m bench.ttft_timeline MODEL_DIR [--requests 7] [--fold-first both]`` loads MODEL_DIR
as our server does, starts an ``Engine`` (warm-up included) and sends requests one at a time,
each waiting for the last: chat prompts that share the chat template's start, as a server's
requests do. Three runs: fresh prompts (each a length of its own) with the prefix cache, the
same without it, and one prompt sent again and again (every shape seen before). Per run it
prints the medians of: time from submission to the first output on the event loop, from entering
the batch to it, and the engine steps (``generator.next`` calls) between the two, with their
median length. The floor beside them: mlx-lm's ``generate_step`` on the same prompts, its first
token (same model, no engine, no prefix cache). ``--fold-first both`` runs each twice: the first
token sampled from the prefill's pass, then from a pass of its own (``last_positions``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.engine import chat_tokens, load


def _prompts(tokenizer: Any, count: int, fresh: bool, offset: int = 0) -> list[list[int]]:
    words = "lighthouse keeper bottle message harbour tide lantern chart".split()
    out = []
    for i in range(count):
        n = 3 + offset + 5 * i if fresh else 3  # each fresh prompt a little longer
        question = " ".join(words[(i + j) % len(words)] for j in range(n))
        out.append(chat_tokens(tokenizer, [{"role": "user", "content": question}]))
    return out


def run(model: Any, tokenizer: Any, label: str, prompts: list[list[int]],
        prefix_cache: bool, fold_first: bool | None = None) -> None:
    from triton_mlx.engine.engine import Engine
    from triton_mlx.engine.types import GenerationRequest, SamplingParams

    engine = Engine(lambda: (model, tokenizer), name=label, slots=4, max_queue=4,
                    prefix_cache_bytes=(256 << 20) if prefix_cache else 0,
                    fold_first=fold_first)
    engine.start()
    engine.wait_loaded(600)
    steps: list[float] = []  # when each generator step returned (engine thread)
    generator = engine._generator
    real_next = generator.next

    def timed_next() -> Any:
        out = real_next()
        steps.append(time.perf_counter())
        return out

    generator.next = timed_next
    rows = []

    async def one(tokens: list[int]) -> None:
        submitted = time.perf_counter()
        (stream,) = engine.submit(GenerationRequest(tokens, 4, SamplingParams(temperature=0)))
        first = None
        async for _ in stream:
            if first is None:
                first = time.perf_counter()
        between = [t for t in steps if stream.admitted_at <= t <= first]
        gaps = [b - a for a, b in zip(between, between[1:], strict=False)]
        rows.append((first - submitted, first - stream.admitted_at, len(between),
                     statistics.median(gaps) if gaps else float("nan")))

    async def main() -> None:
        for tokens in prompts:
            await one(tokens)

    asyncio.run(main())
    engine.stop()
    rows = rows[1:]  # the first request may meet what the warm-up left undone
    med = [statistics.median(r[i] for r in rows) for i in range(4)]
    print(f"{label:32s} TTFT {med[0] * 1e3:6.1f} ms  admitted->first {med[1] * 1e3:6.1f} ms  "
          f"steps {med[2]:.0f} of {med[3] * 1e3:.1f} ms; every TTFT: "
          + ", ".join(f"{r[0] * 1e3:.1f}" for r in rows), flush=True)


def raw_floor(model: Any, label: str, prompts: list[list[int]]) -> None:
    """Time to the first token of mlx-lm's ``generate_step`` alone, prompt by prompt."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    times = []
    for tokens in prompts:
        start = time.perf_counter()
        steps = generate_step(mx.array(tokens), model, max_tokens=2)
        next(steps)
        times.append(time.perf_counter() - start)
        for _ in steps:
            pass
    times = times[1:]
    print(f"{label:32s} TTFT {statistics.median(times) * 1e3:6.1f} ms; every TTFT: "
          + ", ".join(f"{t * 1e3:.1f}" for t in times), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--requests", type=int, default=7)
    parser.add_argument("--fold-first", choices=["auto", "on", "off", "both"], default="auto",
                        help="first token from the prefill pass (the engine's default: on CUDA"
                             " only); both: each run twice, folded first")
    args = parser.parse_args(argv)
    model, tokenizer, facts = load(args.model_dir.resolve(), "auto")
    print(f"{args.model_dir.name}: {facts}", flush=True)
    folds = {"auto": [None], "on": [True], "off": [False], "both": [True, False]}
    for fold in folds[args.fold_first]:
        tag = "" if fold is None else (", folded" if fold else ", unfolded")
        for label, fresh, cache in (("fresh prompts, prefix cache", True, True),
                                    ("fresh prompts, no prefix cache", True, False),
                                    ("one prompt again and again", False, True)):
            run(model, tokenizer, label + tag, _prompts(tokenizer, args.requests, fresh),
                cache, fold)
    # Other words than the runs above, so that the raw floor meets lengths of its own.
    raw_floor(model, "generate_step, fresh prompts", _prompts(tokenizer, args.requests, True,
                                                               offset=3))
    raw_floor(model, "generate_step, one prompt again", _prompts(tokenizer, args.requests, False))
    sys.stdout.flush()
    os._exit(0)  # past MLX's native teardown, which can abort at exit (as the server does)


if __name__ == "__main__":
    main()

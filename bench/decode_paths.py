"""``python -m bench.decode_paths MODEL_DIR [--batches 1 64 ...] [--steps 64] [--repeats 5]``:
decode tok/s of mlx-lm's paths and the engine's generator, in one process, no server.

Isolates the engine's share of the HTTP figures (issue 14). Per round, interleaved (A, B, C, A,
B, C, ...): at batch 1, mlx-lm's ``generate_step``, mlx-lm's ``BatchGenerator`` and the engine's
generator (``ConstrainedGenerator`` over ``DecodeBatch``: a lone sequence on plain caches); at
each larger batch, ``BatchGenerator`` and the engine's generator. Every sequence is greedy and
carries the EOS-banning logit bias the HTTP bench sends, so all decode ``--steps`` tokens.
Decode tok/s counts the tokens after every sequence has its first one, over their time. Prints
one JSON line per path and batch: median, min and max over the rounds, and the ratio of medians.

``--join PROMPT_TOKENS``: instead, how much a second request joining stalls a lone stream. One
sequence decodes alone; after 32 tokens a second one arrives with a prompt of PROMPT_TOKENS
tokens; the first one's gaps between tokens are reported (median before the join, the longest
while the second one prefills and joins, median after), for the engine's generator (which
moves the lone sequence from plain caches to batch caches) and for mlx-lm's ``BatchGenerator``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench.engine import chat_tokens, load
from bench.workload import eos_ban, single_messages, sweep_messages


def _timed(step: Any, size: int, steps: int) -> float:
    """Drive ``step()`` (a list of (uid, finished) per call) until ``size`` sequences have
    started, then time until all finish; tok/s over the timed part."""
    started: set[int] = set()
    finished: set[int] = set()
    counted = 0
    begin = None
    while len(finished) < size:
        for uid, done in step():
            if begin is not None:
                counted += 1
            started.add(uid)
            if done:
                finished.add(uid)
        if begin is None and len(started) == size:
            begin = time.perf_counter()
    return counted / (time.perf_counter() - begin)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=Path)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--join", type=int, default=0, metavar="PROMPT_TOKENS",
                   help="measure a second request joining a lone stream instead")
    args = p.parse_args(argv)
    model, tokenizer, facts = load(args.model_dir.resolve(), "auto")
    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator, generate_step
    from mlx_lm.sample_utils import make_logits_processors

    from triton_mlx.engine import batch_generator
    from triton_mlx.engine.constraints import GrammarCache
    from triton_mlx.engine.types import GenerationRequest, SamplingParams

    print(json.dumps(facts), flush=True)
    bias = {int(k): float(v) for k, v in eos_ban(tokenizer).items()}
    processors = make_logits_processors(logit_bias=bias)
    eos = sorted(tokenizer.eos_token_ids)
    vocab = batch_generator.vocab_size(model)
    grammars = GrammarCache(tokenizer, eos)
    stream = mx.default_stream(mx.default_device())

    def prompts(size: int) -> list[list[int]]:
        chats = [single_messages(0)] if size == 1 else sweep_messages(size)
        return [chat_tokens(tokenizer, chat) for chat in chats]

    def run_generate_step(size: int) -> float:
        (prompt,) = prompts(size)
        stamps = []
        for _ in generate_step(mx.array(prompt), model, max_tokens=args.steps,
                               logits_processors=processors):
            stamps.append(time.perf_counter())
        return (len(stamps) - 1) / (stamps[-1] - stamps[0])

    def run_mlx_lm(size: int) -> float:
        generator = BatchGenerator(model, completion_batch_size=size, prefill_batch_size=size)
        generator.insert(prompts(size), max_tokens=[args.steps] * size,
                         logits_processors=[processors] * size)

        def step() -> list[tuple[int, bool]]:
            return [(r.uid, r.finish_reason is not None) for r in generator.next()[1]]

        try:
            return _timed(step, size, args.steps)
        finally:
            generator.close()

    def run_ours(size: int) -> float:
        generator = batch_generator.new_generator(model, eos, size, 2048, stream)
        sampling = SamplingParams(temperature=0.0, logit_bias=bias)
        for prompt in prompts(size):
            batch_generator.insert(generator, GenerationRequest(prompt, args.steps, sampling),
                                   None, 0, vocab, eos, grammars)

        def step() -> list[tuple[int, bool]]:
            return [(r.uid, r.finish_reason is not None) for r in generator.next()[1]]

        try:
            return _timed(step, size, args.steps)
        finally:
            generator.close()

    if args.join:
        filler = chat_tokens(tokenizer, sweep_messages(1)[0]) * (args.join // 40 + 1)

        def join_gaps(make: Any, insert: Any) -> dict[str, float]:
            generator = make()
            first = insert(generator, prompts(1)[0], 96)
            stamps: list[float] = []
            joined = False
            while len(stamps) < 96:
                for uid in [r.uid for r in generator.next()[1]]:
                    if uid == first:
                        stamps.append(time.perf_counter())
                if len(stamps) == 32 and not joined:
                    insert(generator, filler[: args.join], 32)
                    joined = True
            generator.close()
            gaps = [(b - a) * 1000 for a, b in zip(stamps, stamps[1:], strict=False)]
            return {"median_gap_ms_before": round(statistics.median(gaps[:30]), 2),
                    "longest_gap_ms_at_join": round(max(gaps[30:40]), 2),
                    "median_gap_ms_after": round(statistics.median(gaps[45:]), 2)}

        def mlx_lm_insert(generator: Any, prompt: list[int], tokens: int) -> int:
            return generator.insert([prompt], max_tokens=[tokens],
                                    logits_processors=[processors])[0]

        def ours_insert(generator: Any, prompt: list[int], tokens: int) -> int:
            sampling = SamplingParams(temperature=0.0, logit_bias=bias)
            return batch_generator.insert(generator, GenerationRequest(prompt, tokens, sampling),
                                          None, 0, vocab, eos, grammars)[0]

        paths_join = {
            "mlx_lm_batch_generator": (lambda: BatchGenerator(model), mlx_lm_insert),
            "ours": (lambda: batch_generator.new_generator(model, eos, 8, 2048, stream),
                     ours_insert)}
        for make, insert in paths_join.values():  # warm-up
            join_gaps(make, insert)
        for repeat in range(args.repeats):
            for name, (make, insert) in paths_join.items():
                print(json.dumps({"join_prompt_tokens": args.join, "path": name,
                                  "round": repeat, **join_gaps(make, insert)}), flush=True)
        return 0

    for size in args.batches:
        paths = {"mlx_lm_batch_generator": run_mlx_lm, "ours": run_ours}
        if size == 1:
            paths = {"generate_step": run_generate_step, **paths}
        for run in paths.values():  # warm-up at this batch size
            run(size)
        rates: dict[str, list[float]] = {name: [] for name in paths}
        for repeat in range(args.repeats):
            order = list(paths) if repeat % 2 == 0 else list(reversed(paths))
            for name in order:
                rates[name].append(paths[name](size))
        reference = statistics.median(rates["mlx_lm_batch_generator"])
        for name, values in rates.items():
            median = statistics.median(values)
            print(json.dumps({"batch": size, "path": name, "decode_tok_s": round(median, 1),
                              "min": round(min(values), 1), "max": round(max(values), 1),
                              "vs_batch_generator": round(median / reference, 3),
                              **({"vs_generate_step": round(
                                  median / statistics.median(rates["generate_step"]), 3)}
                                 if "generate_step" in rates else {})}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where a lone stream's decode speed goes, layer by layer, in one process.

``python -m bench.lone_decode MODEL_DIR [--rounds 9] [--max-tokens 256]`` loads MODEL_DIR as our
server does and, round after round, decodes the bench's single-stream chat (greedy, EOS banned
by logit bias, as the bench's requests) with each of:

- ``generate_step``: mlx-lm's single-sequence loop, the bench's reference;
- ``generator``: our batch generator (``DecodeBatch``'s lone path) driven directly by this
  thread, no engine thread, no event loop; with the model's own step, and (for mlx-lm's Llama
  and Qwen models) ``generator, compiled step`` with ``lone_step``'s;
- ``engine``: our ``Engine`` (its thread, the hand-off of each step's tokens to an asyncio
  loop, detokenizing there), read by a coroutine that only counts; at its defaults (the
  compiled lone step on the CPU only), or with ``--lone-compiled on|off``;
- on CUDA also ``generate_step, MLX attention``: ``generate_step`` with MLX's own attention
  function instead of ``cuda_attention``'s wrapper (which every other system here goes through),
  to show what the wrapper costs a decode step.

The HTTP server on top is what ``python -m bench`` measures. Decode tok/s is the tokens after
the first over their time, as the bench's; each round measures every system once, in turn, and
the report gives each one's median (min-max) and the per-round ratios to ``generate_step``. A
drop between two neighbours names the layer that costs it.
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

from bench.engine import chat_tokens, generate_step_tps, load
from bench.workload import eos_ban, single_messages


def generator_tps(model: Any, tokenizer: Any, prompt: list[int], tokens: int,
                  bias: dict[int, float], step: Any = None) -> float:
    """Decode tok/s of our batch generator with one sequence, driven from this thread
    (``step``: its lone step from compiled pieces, ``lone_step.build``)."""
    import mlx.core as mx

    from triton_mlx.engine import batch_generator
    from triton_mlx.engine.constraints import GrammarCache
    from triton_mlx.engine.types import GenerationRequest, SamplingParams

    eos = sorted(tokenizer.eos_token_ids)
    generator = batch_generator.new_generator(model, eos, 4, 2048,
                                              mx.default_stream(mx.default_device()),
                                              lone_step=step)
    request = GenerationRequest(prompt, tokens, SamplingParams(temperature=0, logit_bias=bias))
    vocab = batch_generator.vocab_size(model)
    batch_generator.insert(generator, request, None, 0, vocab, eos, GrammarCache(tokenizer, eos))
    stamps = []
    done = False
    while not done:
        _, responses = generator.next()
        for response in responses:
            stamps.append(time.perf_counter())
            done = done or response.finish_reason is not None
    generator.close()
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def engine_tps(engine: Any, prompt: list[int], tokens: int, bias: dict[int, float]) -> float:
    """Decode tok/s of one request through a running ``Engine``, read on an event loop."""
    from triton_mlx.engine.types import GenerationRequest, SamplingParams

    async def one() -> float:
        request = GenerationRequest(prompt, tokens, SamplingParams(temperature=0, logit_bias=bias))
        (stream,) = engine.submit(request)
        first = last = None
        counted = counted_before = 0
        async for output in stream:
            last = time.perf_counter()
            if first is None:
                first = last
            else:
                counted += output.completion_tokens - counted_before
            counted_before = output.completion_tokens
        return counted / (last - first)

    return asyncio.run(one())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--lone-compiled", choices=["auto", "on", "off"], default="auto",
                        help="the engine's lone step from compiled pieces (lone_step)")
    args = parser.parse_args(argv)
    model, tokenizer, facts = load(args.model_dir.resolve(), "auto")
    print(f"{args.model_dir.name}: {facts}", flush=True)
    from mlx_lm.sample_utils import make_logits_processors

    from triton_mlx.engine.engine import Engine

    bias = {int(k): float(v) for k, v in eos_ban(tokenizer).items()}
    processors = make_logits_processors(logit_bias=bias)
    engine = Engine(lambda: (model, tokenizer), name="lone", slots=4, max_queue=4,
                    prefix_cache_bytes=0,
                    lone_compiled={"auto": None, "on": True, "off": False}[args.lone_compiled])
    engine.start()
    engine.wait_loaded(600)
    systems = {
        "generate_step": lambda p: generate_step_tps(model, p, args.max_tokens, processors),
        "generator": lambda p: generator_tps(model, tokenizer, p, args.max_tokens, bias),
        "engine": lambda p: engine_tps(engine, p, args.max_tokens, bias),
    }
    from triton_mlx.engine import lone_step

    compiled = lone_step.build(model)
    if compiled is not None:
        systems["generator, compiled step"] = lambda p: generator_tps(
            model, tokenizer, p, args.max_tokens, bias, compiled)
    from triton_mlx.engine import cuda_attention

    if cuda_attention._fused is not None:
        def plain_attention(prompt: list[int]) -> float:
            import mlx.core as mx

            mx.fast.scaled_dot_product_attention = cuda_attention._fused
            try:
                return generate_step_tps(model, prompt, args.max_tokens, processors)
            finally:
                mx.fast.scaled_dot_product_attention = cuda_attention.prompt_attention

        systems["generate_step, MLX attention"] = plain_attention
    warm = chat_tokens(tokenizer, single_messages(1000))
    for run in systems.values():
        run(warm)
    figures: dict[str, list[float]] = {name: [] for name in systems}
    for r in range(args.rounds):
        prompt = chat_tokens(tokenizer, single_messages(r))
        for name, run in systems.items():
            figures[name].append(run(prompt))
        print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:.1f}" for n, v in figures.items()),
              flush=True)
    base = figures["generate_step"]
    print(f"\n{args.max_tokens} tokens, {args.rounds} rounds; decode tok/s median (min-max); "
          "ratio to generate_step per round, median (min-max)")
    for name, values in figures.items():
        ratios = [v / b for v, b in zip(values, base, strict=True)]
        print(f"{name:30s} {statistics.median(values):7.1f} ({min(values):.1f}-{max(values):.1f})"
              f"   {statistics.median(ratios):.3f}x ({min(ratios):.3f}-{max(ratios):.3f})")
    sys.stdout.flush()
    engine.stop()
    os._exit(0)  # past MLX's native teardown


if __name__ == "__main__":
    main()

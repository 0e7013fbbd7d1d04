"""Two questions about MLX's CUDA backend that decide where issue 14's GPU engine goes next.

1. A 4-bit matmul at M rows (``mx.quantized_matmul``) against dequantizing the weight and
   multiplying in bf16, at Llama-3.2-1B's projection shapes: on the H200, 4-bit decode stopped
   scaling past 64 streams for mlx-lm's raw ``BatchGenerator`` as for us (~1,900 tok/s at 64 and
   at 128), so the 4-bit kernel at M > 1 is the suspect.
2. The cost of a shape seen for the first time: a forward pass of a small llama at a prompt
   length not seen before, then the same length again, then the same length after a cached
   prefix (a new attention shape: the keys are longer than the queries). Work built per shape
   on first use (kernels, attention plans) would show as first calls many times slower than
   the second. On the H200 the first of five profiled rounds ran at half the speed of the
   others, and launching prefill took a fifth of the engine thread's time at one stream.

   Also for a batch of prompts of unequal lengths (``--batches``), as the engine prefills them.
   ``--unfused``: the same with ``triton_mlx.engine.cuda_attention`` installed, as our server
   runs on CUDA (small prompt attention unfused, no cuDNN graph per shape).

``python -m bench.cuda_probe [--rows 1 16 64 128 256] [--repeats 20] [--lengths 17 31 ...]
[--batches 4 32] [--skip-matmul] [--unfused]``; prints one line per case.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import mlx.core as mx

SHAPES = {"qkv/o 2048x2048": (2048, 2048), "gate/up 8192x2048": (8192, 2048),
          "down 2048x8192": (2048, 8192)}


def _time(fn, repeats: int) -> float:
    """Median seconds of ``fn`` evaluated, after two warm-up calls."""
    for _ in range(2):
        mx.eval(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _one_shape(name: str, w: mx.array, rows: list[int], repeats: int) -> None:
    in_dim = w.shape[1]
    wq, scales, biases = mx.quantize(w, group_size=64, bits=4)
    mx.eval(wq, scales, biases)

    def qmm(x: mx.array) -> mx.array:
        return mx.quantized_matmul(x, wq, scales, biases, transpose=True, group_size=64, bits=4)

    def dequantized(x: mx.array) -> mx.array:
        return x @ mx.dequantize(wq, scales, biases, group_size=64, bits=4).T

    for m in rows:
        x = mx.random.normal((m, in_dim)).astype(mx.bfloat16)
        mx.eval(x)
        q, d, b = (_time(lambda f=f, x=x: f(x), repeats)
                   for f in (qmm, dequantized, lambda x: x @ w.T))
        print(f"{name:18s} M={m:4d}  qmm {q * 1e3:7.3f} ms  dequantize+matmul {d * 1e3:7.3f} ms"
              f"  bf16 matmul {b * 1e3:7.3f} ms  qmm/dequant {q / d:5.2f}x", flush=True)


def matmul_paths(rows: list[int], repeats: int) -> None:
    for name, shape in SHAPES.items():
        _one_shape(name, mx.random.normal(shape).astype(mx.bfloat16), rows, repeats)


def _llama(layers: int, vocab: int) -> Any:
    """A random-weight bf16 llama of Llama-3.2-1B's widths, ``layers`` deep."""
    from mlx_lm.models import llama

    args = llama.ModelArgs(model_type="llama", hidden_size=2048, num_hidden_layers=layers,
                           intermediate_size=8192, num_attention_heads=32, rms_norm_eps=1e-5,
                           vocab_size=vocab, num_key_value_heads=8, head_dim=64,
                           rope_theta=500000.0, tie_word_embeddings=True)
    model = llama.Model(args)
    model.set_dtype(mx.bfloat16)
    mx.eval(model.parameters())
    return model


def first_shapes(lengths: list[int]) -> None:
    model = _llama(4, 32000)
    from mlx_lm.models.cache import make_prompt_cache

    prefix = mx.array([[(3 * i) % 32000 for i in range(100)]])
    for n in lengths:
        tokens = mx.array([[(7 * i) % 32000 for i in range(n)]])
        spans = []
        for cached in (False, False, True):
            cache = make_prompt_cache(model)
            if cached:  # 100 tokens already in the cache: queries n long, keys 100 + n
                mx.eval(model(prefix, cache=cache), [c.state for c in cache])
            start = time.perf_counter()
            mx.eval(model(tokens, cache=cache))
            spans.append(time.perf_counter() - start)
        print(f"prompt length {n:4d}: first forward {spans[0] * 1e3:8.2f} ms, same length "
              f"again {spans[1] * 1e3:8.2f} ms, after a 100-token prefix {spans[2] * 1e3:8.2f} "
              "ms", flush=True)


def first_batches(sizes: list[int], lengths: list[int]) -> None:
    """The same for a batch of prompts of unequal lengths, as the engine prefills arrivals:
    left-padded into one ``BatchKVCache``, so attention takes an array mask, not ``causal``."""
    from mlx_lm.models.cache import BatchKVCache

    model = _llama(4, 32000)
    for b in sizes:
        for n in lengths:
            padding = [(5 * i) % 7 for i in range(b)]  # rows shorter by up to 6 tokens
            tokens = mx.array([[(11 * i + r) % 32000 for i in range(n)] for r in range(b)])
            spans = []
            for _ in range(2):
                cache = [BatchKVCache(left_padding=padding) for _ in model.layers]
                start = time.perf_counter()
                mx.eval(model(tokens, cache=cache))
                spans.append(time.perf_counter() - start)
            print(f"batch {b:3d} x length {n:4d} (array mask): first forward "
                  f"{spans[0] * 1e3:8.2f} ms, same shape again {spans[1] * 1e3:8.2f} ms",
                  flush=True)


def _ops_at(n: int, weights: dict[str, mx.array], norm: mx.array) -> dict[str, Any]:
    """The operations of a forward pass at prompt length ``n``, each a function to time."""
    from triton_mlx.engine.cuda_attention import unfused_attention

    x = mx.random.normal((1, n, 2048)).astype(mx.bfloat16)
    h = mx.random.normal((1, n, 8192)).astype(mx.bfloat16)
    q = mx.random.normal((1, 32, n, 64)).astype(mx.bfloat16)
    kv = mx.random.normal((1, 8, n, 64)).astype(mx.bfloat16)
    mx.eval(x, h, q, kv)
    cases: dict[str, Any] = {name: (lambda w=w: (h if w.shape[1] == 8192 else x) @ w.T)
                             for name, w in weights.items()}
    cases["rms_norm"] = lambda: mx.fast.rms_norm(x, norm, 1e-5)
    cases["rope"] = lambda: mx.fast.rope(q, 64, traditional=False, base=500000.0, scale=1.0,
                                         offset=3)
    cases["attention (unfused)"] = lambda: unfused_attention(q, kv, kv, 0.125, "causal")
    cases["softmax"] = lambda: mx.softmax(q @ q.swapaxes(-1, -2), axis=-1, precise=True)
    cases["silu*x"] = lambda: mx.sigmoid(h) * h * h
    return cases


def first_ops(lengths: list[int]) -> None:
    """Which operation pays for a new length: each alone, at a length it has not seen, then
    again (the forward pass's matmuls at its weights' shapes, its norm, RoPE, the unfused
    attention's pieces)."""
    weights = {f"matmul {n}x{k}": mx.random.normal((n, k)).astype(mx.bfloat16)
               for n, k in ((2048, 2048), (512, 2048), (8192, 2048), (2048, 8192),
                            (32000, 2048))}
    norm = mx.ones((2048,), dtype=mx.bfloat16)
    mx.eval(list(weights.values()), norm)
    for n in lengths:
        spans = {}
        for name, fn in _ops_at(n, weights, norm).items():
            times = []
            for _ in range(2):
                start = time.perf_counter()
                mx.eval(fn())
                times.append(time.perf_counter() - start)
            spans[name] = times
        print(f"length {n:4d}: " + "; ".join(f"{name} {a * 1e3:.2f}/{b * 1e3:.2f}"
                                             for name, (a, b) in spans.items()) + " ms",
              flush=True)


def decode_speed(tokens: int, rounds: int = 3) -> None:
    """``generate_step``'s decode tok/s on a 16-layer model of Llama-3.2-1B's sizes (random
    bf16 weights): what a lone stream gets, to set beside a first shape's cost."""
    from mlx_lm.generate import generate_step

    model = _llama(16, 128256)
    prompt = mx.array([(7 * i) % 128000 for i in range(40)])
    for round_ in range(rounds + 1):
        start = None
        for n, _ in enumerate(generate_step(prompt, model, max_tokens=tokens + 1)):
            if n == 0:
                start = time.perf_counter()
        speed = tokens / (time.perf_counter() - start)
        print(f"decode, round {round_}{' (warm-up)' if round_ == 0 else ''}: {speed:.1f} tok/s",
              flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 16, 64, 128, 256])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--lengths", type=int, nargs="+", default=[17, 31, 32, 45, 64, 97])
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 32],
                        help="prompts per prefill batch for the array-mask case")
    parser.add_argument("--skip-matmul", action="store_true", help="shapes only")
    parser.add_argument("--decode", type=int, default=0,
                        help="also time generate_step's decode over this many tokens")
    parser.add_argument("--ops", action="store_true",
                        help="only time each operation at new lengths, first and again")
    parser.add_argument("--unfused", action="store_true",
                        help="with triton_mlx.engine.cuda_attention installed, as the server runs")
    args = parser.parse_args(argv)
    if args.unfused:
        from triton_mlx.engine import cuda_attention

        cuda_attention.install()
    print(f"MLX {mx.__version__}, {mx.default_device()}", flush=True)
    if args.ops:
        first_ops(args.lengths)
        if args.decode:
            decode_speed(args.decode)
        return
    first_shapes(args.lengths)
    first_batches(args.batches, args.lengths)
    if not args.skip_matmul:
        matmul_paths(args.rows, args.repeats)


if __name__ == "__main__":
    main()

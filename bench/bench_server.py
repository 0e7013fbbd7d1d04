"""Throughput of the server against mlx-lm's raw ``generate_step`` on the same model.

Not a test: it prints a table. It starts ``python -m triton_mlx`` on a repository holding only
the model, drives it with the official OpenAI SDK (streaming, temperature 0), and measures:

- raw engine: mlx-lm ``generate_step`` decode tok/s at batch 1 (no server);
- server, 1 stream: decode tok/s seen by the client (tokens after the first / their time);
- server, N concurrent streams: aggregate output tok/s, TTFT p50/p99, TPOT p50/p99.

Usage: python bench/bench_server.py [--model-dir model_repository/SmolLM2-135M-Instruct]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


def raw_decode_tps(model_dir: Path, new_tokens: int) -> tuple[float, dict[str, int]]:
    """Decode tok/s of mlx-lm's generate_step at batch 1, greedy, after its first token."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step
    from mlx_lm.utils import load

    model, tokenizer = load(str(model_dir))
    prompt = mx.array(tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True))
    for _ in generate_step(prompt, model, max_tokens=8):  # warm-up
        pass
    times = []
    for _, _ in zip(range(new_tokens), generate_step(prompt, model, max_tokens=new_tokens),
                    strict=False):
        times.append(time.perf_counter())
    ban_eos = {str(t): -100 for t in tokenizer.eos_token_ids}
    return (len(times) - 1) / (times[-1] - times[0]), ban_eos


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def one_stream(client, model: str, new_tokens: int, ban_eos: dict[str, int]) -> dict:
    started = time.perf_counter()
    stamps: list[float] = []
    usage = None
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=new_tokens,
        temperature=0, stream=True, stream_options={"include_usage": True},
        # Ban the end-of-sequence token so every request generates the same number of tokens.
        logit_bias=ban_eos,
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter())
        if chunk.usage:
            usage = chunk.usage
    tokens = usage.completion_tokens
    ttft = stamps[0] - started
    tpot = (stamps[-1] - stamps[0]) / max(tokens - 1, 1)
    return {"tokens": tokens, "ttft": ttft, "tpot": tpot, "end": time.perf_counter(),
            "start": started, "decode_tps": (tokens - 1) / max(stamps[-1] - stamps[0], 1e-9)}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def drive(
    base_url: str, model: str, concurrency: int, new_tokens: int, ban_eos: dict[str, int]
) -> dict:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="bench", timeout=600, max_retries=0)
    await one_stream(client, model, 4, ban_eos)  # warm the path
    started = time.perf_counter()
    results = await asyncio.gather(
        *(one_stream(client, model, new_tokens, ban_eos) for _ in range(concurrency)))
    elapsed = max(r["end"] for r in results) - started
    await client.close()
    return {
        "concurrency": concurrency,
        "aggregate_tps": sum(r["tokens"] for r in results) / elapsed,
        "ttft_p50": pct([r["ttft"] for r in results], 0.5),
        "ttft_p99": pct([r["ttft"] for r in results], 0.99),
        "tpot_p50": pct([r["tpot"] for r in results], 0.5),
        "tpot_p99": pct([r["tpot"] for r in results], 0.99),
        "decode_tps": statistics.median(r["decode_tps"] for r in results),
    }


def wait_ready(port: int, process: subprocess.Popen, timeout: float = 300) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health/ready") as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("server did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path,
                        default=Path("model_repository/SmolLM2-135M-Instruct"))
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    model_dir = args.model_dir.resolve()
    name = model_dir.name

    print(f"machine: {platform.machine()} {platform.system()}, {os.cpu_count()} cores; "
          f"python {platform.python_version()}; model {name}; {args.tokens} new tokens")
    raw, ban_eos = raw_decode_tps(model_dir, args.tokens)

    with tempfile.TemporaryDirectory() as repo:
        os.symlink(model_dir, Path(repo) / name)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "triton_mlx", "--model-repository", repo, "--host",
             "127.0.0.1", "--openai-port", str(port), "--log-level", "WARNING",
             "--max-concurrent-requests", str(max(args.concurrency))],
        )
        try:
            wait_ready(port, server)
            url = f"http://127.0.0.1:{port}/v1"
            rows = [asyncio.run(drive(url, name, c, args.tokens, ban_eos))
                    for c in args.concurrency]
        finally:
            server.terminate()
            server.wait(60)

    single = next((r for r in rows if r["concurrency"] == 1), None)
    print(f"\nraw mlx-lm generate_step, batch 1: {raw:.1f} tok/s decode")
    if single:
        print(f"server, 1 stream: {single['decode_tps']:.1f} tok/s decode "
              f"= {single['decode_tps'] / raw:.2f}x raw")
    print("\n| streams | aggregate tok/s | TTFT p50 | TTFT p99 | TPOT p50 | TPOT p99 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['concurrency']} | {r['aggregate_tps']:.1f} | {r['ttft_p50'] * 1000:.0f} ms"
              f" | {r['ttft_p99'] * 1000:.0f} ms | {r['tpot_p50'] * 1000:.1f} ms"
              f" | {r['tpot_p99'] * 1000:.1f} ms |")


if __name__ == "__main__":
    main()

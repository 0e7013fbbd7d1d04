"""Fair scheduling: the worst gap between tokens of a running stream while a long prompt
arrives, through our server, with short prefill chunks vs one long chunk.

Usage: python -m bench.fairness [--model-dir DIR] [--prompt-tokens 2000] [--chunks 128 2048]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from openai import AsyncOpenAI

from bench import servers
from bench.workload import eos_ban

DEFAULT_MODEL = Path("model_repository/SmolLM2-135M-Instruct")


async def measure(base_url: str, model: str, prompt_tokens: int, bias: dict) -> dict:
    """Stream A runs; after its 5th token a ~prompt_tokens prompt B arrives. Returns A's
    largest inter-token gap before B, while B is being prefilled, and B's TTFT."""
    client = AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=600)
    stamps: list[float] = []
    b_sent = asyncio.Event()
    b_first: list[float] = []
    long_prompt = " ".join(f"word{i % 97}" for i in range(prompt_tokens // 4))  # ~4 tokens each

    async def stream_a() -> None:
        stream = await client.completions.create(
            model=model, prompt="Once upon a time", max_tokens=400, temperature=0,
            logit_bias=bias, stream=True)
        async with stream:  # leaving early closes the connection: the server cancels A
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].text:
                    stamps.append(time.perf_counter())
                    if len(stamps) == 5:
                        b_sent.set()
                    if b_first and stamps[-1] > b_first[0] + 2.0:
                        break

    async def stream_b() -> int:
        await b_sent.wait()
        sent = time.perf_counter()
        stream = await client.completions.create(
            model=model, prompt=long_prompt, max_tokens=2, temperature=0, logit_bias=bias,
            stream=True, stream_options={"include_usage": True})
        usage = None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].text and not b_first:
                b_first.append(time.perf_counter())
            usage = chunk.usage or usage
        b_first.append(sent)
        return usage.prompt_tokens

    _, b_prompt = await asyncio.gather(stream_a(), stream_b())
    await client.close()
    first, sent = b_first[0], b_first[1]
    gaps = [(t1 - t0, t1) for t0, t1 in zip(stamps, stamps[1:], strict=False)]
    before = [g for g, t in gaps if t < sent]
    during = [g for g, t in gaps if sent <= t <= first + 0.5]
    return {"b_prompt_tokens": b_prompt, "b_ttft": first - sent,
            "gap_before": max(before, default=0.0), "gap_during": max(during, default=0.0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--prompt-tokens", type=int, default=2000)
    p.add_argument("--chunks", type=int, nargs="+", default=[128, 2048])
    args = p.parse_args()
    model_dir = args.model_dir.resolve()
    from mlx_lm.utils import load_tokenizer

    bias = eos_ban(load_tokenizer(model_dir))
    print("| prefill chunk | long prompt | its TTFT | worst gap of the running stream "
          "before | while the long prompt is prefilled |")
    print("|---|---|---|---|---|")
    for chunk in args.chunks:
        with tempfile.TemporaryDirectory() as tmp:
            spec = servers.ours(model_dir, Path(tmp), 4, ["--prefill-chunk-tokens", str(chunk)])
            with servers.running(spec, Path(tmp)):
                asyncio.run(measure(spec.base_url, spec.model, 64, bias))  # warm up
                r = asyncio.run(measure(spec.base_url, spec.model, args.prompt_tokens, bias))
        print(f"| {chunk} | {r['b_prompt_tokens']} tokens | {r['b_ttft']:.2f} s "
              f"| {r['gap_before'] * 1000:.0f} ms | {r['gap_during'] * 1000:.0f} ms |",
              flush=True)


if __name__ == "__main__":
    main()

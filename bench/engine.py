"""The raw engine, no server: mlx-lm's ``generate_step`` and ``BatchGenerator`` in one process.

``bench.run`` runs this as a child process (``python -m bench.engine ...``) so its model is gone
before a server starts. It prints one JSON object per measurement on stdout, progress on stderr.

The model is loaded exactly as our server loads it: ``triton_mlx`` is imported before
``mlx.core`` (so the same BLAS is in place) and ``load_model_folder`` applies the same runtime
profile. The server/engine ratio then measures the server, not a different weight layout.

- single stream, ``repeats`` times (the server gets the same chats): ``BatchGenerator`` at batch
  1, and mlx-lm's single-sequence ``generate_step`` for reference.
- ``BatchGenerator`` at batch B (what our engine thread drives): the B prompts of the server's
  B-stream case inserted at once; decode tok/s counts the tokens after the step in which every
  sequence had its first one, over their time. After a warm-up at the same batch size.

Both are greedy and ban EOS with the same logit bias as the HTTP requests, so they generate the
same tokens as the servers do. ``run_engine`` is the parent's side: it starts the child and
collects its records.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.workload import eos_ban, single_messages, sweep_messages, warmup_messages


def load(model_dir: Path, runtime_profile: str) -> tuple[Any, Any, dict[str, str]]:
    """(model, tokenizer, facts) loaded the way ``python -m triton_mlx`` loads them."""
    import triton_mlx  # noqa: F401  (loads the optimized BLAS; must precede mlx.core)
    from triton_mlx.blas import blas_status
    from triton_mlx.repository.loading import load_model_folder

    chosen: list[Any] = []
    model, tokenizer = load_model_folder(
        model_dir, runtime_profile=runtime_profile, on_profile=chosen.append)
    import mlx.core as mx

    profile = chosen[0].describe() if chosen else "unknown"
    return model, tokenizer, {"profile": profile, "blas": blas_status(),
                              "device": str(mx.default_device())}


def chat_tokens(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True))


def generate_step_tps(model: Any, prompt: list[int], tokens: int, processors: list) -> float:
    """Decode tok/s of ``generate_step`` at batch 1: tokens after the first over their time."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    stamps = []
    for _ in generate_step(mx.array(prompt), model, max_tokens=tokens,
                           logits_processors=processors):
        stamps.append(time.perf_counter())
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def batch_tps(
    model: Any, prompts: list[list[int]], tokens: int, processors: list, timeout: float
) -> dict[str, Any]:
    """Aggregate decode tok/s of one ``BatchGenerator`` running ``len(prompts)`` sequences."""
    from mlx_lm.generate import BatchGenerator

    size = len(prompts)
    generator = BatchGenerator(model, completion_batch_size=size, prefill_batch_size=size)
    generator.insert(prompts, max_tokens=[tokens] * size, logits_processors=[processors] * size)
    deadline = time.perf_counter() + timeout
    started: set[int] = set()
    finished: set[int] = set()
    decode_start = now = None
    counted = 0
    try:
        while len(finished) < size:
            if time.perf_counter() > deadline:
                return {"error": f"timed out after {timeout:.0f} s"}
            _, responses = generator.next()
            now = time.perf_counter()
            for response in responses:
                if decode_start is not None:
                    counted += 1
                started.add(response.uid)
                if response.finish_reason is not None:
                    finished.add(response.uid)
            if decode_start is None and len(started) == size:
                decode_start = now
    finally:
        generator.close()
    if not counted:
        return {"error": "no decode steps to time (max tokens 1?)"}
    return {"decode_tps": counted / (now - decode_start), "tokens": counted}


@dataclass
class EngineResults:
    """What the child process reported; ``error`` when it failed or ran out of time."""

    facts: dict[str, Any] = field(default_factory=dict)
    single: list[dict[str, float]] = field(default_factory=list)  # one per repeat
    batches: dict[int, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None

    def batch_tps(self, size: int) -> float | None:
        return self.batches.get(size, {}).get("decode_tps")

    def single_tps(self, loop: str) -> float | None:
        """Median over the repeats of one loop's single-stream decode tok/s."""
        values = [r[loop] for r in self.single]
        return statistics.median(values) if values else None


def run_engine(
    model_dir: Path, max_tokens: int, batches: list[int], repeats: int, runtime_profile: str,
    timeout: float,
) -> EngineResults:
    """Run this module in a child process (progress passes through to stderr)."""
    argv = [sys.executable, "-m", "bench.engine", "--model-dir", str(model_dir),
            "--max-tokens", str(max_tokens), "--batches", *map(str, batches),
            "--repeats", str(repeats),
            "--runtime-profile", runtime_profile, "--case-timeout", str(timeout)]
    results = EngineResults()
    total = timeout * (len(batches) + 2) + 300
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, text=True, timeout=total,
                              cwd=Path(__file__).resolve().parent.parent)
        output, failed = done.stdout, done.returncode and f"exited with {done.returncode}"
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        failed = f"killed after {total:.0f} s"
    for line in output.splitlines():
        record = json.loads(line)
        kind = record.pop("kind")
        if kind == "setup":
            results.facts = record
        elif kind == "single":
            results.single.append(record)
        elif kind == "batch":
            results.batches[record.pop("batch")] = record
    results.error = failed or None
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runtime-profile", default="auto")
    parser.add_argument("--case-timeout", type=float, default=300)
    args = parser.parse_args(argv)

    def emit(**record: Any) -> None:
        print(json.dumps(record), flush=True)

    def progress(message: str) -> None:
        print(f"  [engine] {message}", file=sys.stderr, flush=True)

    progress(f"loading {args.model_dir.name} (runtime profile {args.runtime_profile})")
    model, tokenizer, facts = load(args.model_dir.resolve(), args.runtime_profile)
    from mlx_lm.sample_utils import make_logits_processors

    processors = make_logits_processors(
        logit_bias={int(k): v for k, v in eos_ban(tokenizer).items()})
    emit(kind="setup", **facts)

    progress(f"single stream, {args.max_tokens} tokens, {args.repeats} repeats: "
             "generate_step and BatchGenerator")
    warm = chat_tokens(tokenizer, warmup_messages(1)[0])[-8:]
    generate_step_tps(model, warm, 4, processors)
    batch_tps(model, [warm], 4, processors, args.case_timeout)
    for repeat in range(args.repeats):
        prompt = chat_tokens(tokenizer, single_messages(repeat))
        emit(kind="single", prompt_tokens=len(prompt),
             generate_step=generate_step_tps(model, prompt, args.max_tokens, processors),
             batch_generator=batch_tps(model, [prompt], args.max_tokens, processors,
                                       args.case_timeout).get("decode_tps", math.nan))

    for size in sorted(set(args.batches)):
        progress(f"BatchGenerator, batch {size}, {args.max_tokens} tokens each")
        warm = [chat_tokens(tokenizer, m)[-8:] for m in warmup_messages(size)]
        batch_tps(model, warm, 3, processors, args.case_timeout)
        prompts = [chat_tokens(tokenizer, m) for m in sweep_messages(size)]
        emit(kind="batch", batch=size,
             **batch_tps(model, prompts, args.max_tokens, processors, args.case_timeout))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

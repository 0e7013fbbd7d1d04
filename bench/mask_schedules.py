"""``python -m bench.mask_schedules MODEL_DIR [BATCH] [STEPS] [REPEATS]``: where in a decode
step the grammar masks' host work goes, measured without the engine.

Why. On MLX's CUDA backend a decode step is bound by the host launching the forward pass's
kernels; the masks of step t+1 need step t's tokens on the host. This compares, on a bare model
and KV cache (``BATCH`` rows, every row but in "none" under one of ``bench.schemas``'s JSON
schemas, greedy), the schedules that choice was made from:

- none: mlx-lm's: step t+1's forward and sample are launched before waiting for token t.
- fill_first: wait for token t, fill the masks, then launch the forward pass and the mask
  (built from plain MLX operations): the engine before the masker's worker thread.
- fill_first_compiled: the same with the engine's compiled mask function.
- fill_beside: build the forward graph, wait for token t, hand the fill to a worker thread and
  launch the forward pass while it fills; then the compiled mask and the sample (the engine's).

Prints each schedule's median step ms, its ratio to "none" and the host ms per step spent
waiting for tokens, filling and launching (``mx.async_eval``).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.engine import load
from bench.schemas import SCHEMAS

SCHEDULES = ("none", "fill_first", "fill_first_compiled", "fill_beside")


def main(argv: list[str]) -> int:
    model_dir = Path(argv[0])
    batch, steps, repeats = (int(a) for a in (argv[1:] + ["64", "48", "5"][len(argv) - 1:])[:3])
    model, tokenizer, facts = load(model_dir, "auto")
    import llguidance
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    from triton_mlx.engine.constraints import GrammarCache, GrammarMasker, _mask_words
    from triton_mlx.serving.structured import response_format_grammar

    print(json.dumps(facts), flush=True)
    grammars = GrammarCache(tokenizer, [tokenizer.eos_token_id])
    texts = [response_format_grammar({"type": "json_schema", "json_schema": {
        "name": s.name, "schema": s.schema}}) for s in SCHEMAS]
    executor = llguidance.LLExecutor()
    worker = ThreadPoolExecutor(1)
    compiled_mask = mx.compile(_mask_words)
    prompt = mx.array([[(7 * i + 11 * j) % 1000 + 100 for j in range(32)] for i in range(batch)])

    def run(schedule: str) -> dict[str, float]:
        cache = make_prompt_cache(model)
        first = model(prompt, cache=cache)[:, -1, :]
        sequences = [grammars.sequence(texts[i % len(texts)], 0, print) for i in range(batch)]
        host = {"wait": 0.0, "fill": 0.0, "launch": 0.0}

        def fill(tokens: list[int] | None) -> Any:
            begin = time.perf_counter()
            for k, s in enumerate(sequences):
                if tokens is not None and not s.matcher.is_stopped():
                    s.matcher.consume_token(tokens[k])
                if s.matcher.is_stopped() or s.matcher.is_error():  # start it over
                    sequences[k] = grammars.sequence(texts[k % len(texts)], 0, print)
            bits = GrammarMasker._fill(executor, sequences)
            host["fill"] += time.perf_counter() - begin
            return bits

        def masked(logits: mx.array, bits: Any, compiled: bool) -> mx.array:
            if compiled:
                return compiled_mask(logits, mx.array(bits))
            words = mx.array(bits)
            allowed = ((words[:, :, None] >> mx.arange(32, dtype=mx.int32)) & 1)
            allowed = allowed.reshape(batch, -1)[:, : logits.shape[-1]]
            return mx.minimum(logits, mx.where(allowed == 1, mx.inf, -mx.inf).astype(logits.dtype))

        def forward(y: mx.array) -> mx.array:
            return model(y[:, None], cache=cache)[:, -1, :]

        def wait(y: mx.array) -> list[int]:
            begin = time.perf_counter()
            tokens = y.tolist()
            host["wait"] += time.perf_counter() - begin
            return tokens

        def launch(*arrays: mx.array) -> None:
            begin = time.perf_counter()
            mx.async_eval(*arrays)
            host["launch"] += time.perf_counter() - begin

        compiled = schedule != "fill_first"
        y = mx.argmax(first if schedule == "none" else masked(first, fill(None), compiled), -1)
        launch(y)
        times = []
        for _ in range(steps):
            begin = time.perf_counter()
            logits = forward(y)
            if schedule == "none":
                nxt = mx.argmax(logits, axis=-1)
                launch(nxt)
                wait(y)
            elif schedule.startswith("fill_first"):
                nxt = mx.argmax(masked(logits, fill(wait(y)), compiled), axis=-1)
                launch(nxt)
            else:
                pending = worker.submit(fill, wait(y))
                launch(logits)
                nxt = mx.argmax(masked(logits, pending.result(), compiled), axis=-1)
                launch(nxt)
            y = nxt
            times.append(time.perf_counter() - begin)
        mx.eval(y)
        return {"step_ms": statistics.median(times) * 1000,
                **{k: v * 1000 / steps for k, v in host.items()}}

    for schedule in SCHEDULES:
        run(schedule)  # warm-up: kernels, the grammar tokenizer, every schema compiled
    results: dict[str, list[dict[str, float]]] = {s: [] for s in SCHEDULES}
    for repeat in range(repeats):
        for schedule in SCHEDULES if repeat % 2 == 0 else reversed(SCHEDULES):
            results[schedule].append(run(schedule))
    base = statistics.median(r["step_ms"] for r in results["none"])
    for schedule, runs in results.items():
        step_ms = [r["step_ms"] for r in runs]
        print(json.dumps({
            "batch": batch, "schedule": schedule, "step_ms": round(statistics.median(step_ms), 3),
            "min": round(min(step_ms), 3), "max": round(max(step_ms), 3),
            "vs_none": round(base / statistics.median(step_ms), 3),
            **{f"host_{k}_ms": round(statistics.median(r[k] for r in runs), 3)
               for k in ("wait", "fill", "launch")}}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""``python -m bench.grammar_steps MODEL_DIR [BATCH] [STEPS] [REPEATS]``: what a grammar mask
costs one decode step, in process, with no server.

A ``ConstrainedGenerator`` (the engine's) decodes BATCH sequences, each under one of the bench's
JSON schemas (``bench.schemas``), and the median step time is compared with the same batch
unconstrained, rounds interleaved. Two ways of unpacking the bitmasks are compared: on the host
(numpy, the CPU default) and on the device (MLX, the GPU default). Isolates the engine's share
of ``bench.structured``'s HTTP figures; used to choose the device unpack on the GPU.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from bench.engine import load
from bench.schemas import SCHEMAS

KINDS = ("none", "host", "device")


def main(argv: list[str]) -> int:
    model_dir = Path(argv[0])
    batch, steps, repeats = (int(a) for a in (argv[1:] + ["64", "48", "3"][len(argv) - 1:])[:3])
    model, tokenizer, facts = load(model_dir, "auto")
    import mlx.core as mx

    from triton_mlx.engine import batch_generator
    from triton_mlx.engine.constraints import GrammarCache
    from triton_mlx.engine.types import GenerationRequest, SamplingParams
    from triton_mlx.serving.structured import response_format_grammar

    print(json.dumps(facts), flush=True)
    eos = [tokenizer.eos_token_id]
    vocab = batch_generator.vocab_size(model)
    grammars = GrammarCache(tokenizer, eos)
    schema_grammars = [response_format_grammar({"type": "json_schema", "json_schema": {
        "name": s.name, "schema": s.schema}}) for s in SCHEMAS]

    def median_step_ms(kind: str) -> float:
        generator = batch_generator.new_generator(
            model, eos, batch, 512, mx.default_stream(mx.default_device()))
        generator.constraints.masker.unpack_on_device = kind == "device"
        for i in range(batch):
            grammar = None if kind == "none" else schema_grammars[i % len(schema_grammars)]
            request = GenerationRequest(
                prompt_tokens=tokenizer.encode(f"Request {i} ({kind}): the JSON for case {i}."),
                max_tokens=steps + 40, sampling=SamplingParams(temperature=0.0), grammar=grammar)
            batch_generator.insert(generator, request, None, 0, vocab, eos, grammars)
        started: set[int] = set()
        while len(started) < batch:  # every sequence has its first token
            _, responses = generator.next()
            started |= {r.uid for r in responses}
        times = []
        for _ in range(steps):
            begin = time.perf_counter()
            generator.next()
            times.append(time.perf_counter() - begin)
        return statistics.median(times) * 1000

    for kind in KINDS:  # warm-up: kernels, the grammar tokenizer, every schema compiled
        median_step_ms(kind)
    results: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for repeat in range(repeats):
        for kind in KINDS if repeat % 2 == 0 else reversed(KINDS):
            results[kind].append(median_step_ms(kind))
    base = statistics.median(results["none"])
    for kind, values in results.items():
        print(json.dumps({"batch": batch, "kind": kind,
                          "median_step_ms": round(statistics.median(values), 3),
                          "min": round(min(values), 3), "max": round(max(values), 3),
                          "tok_s_vs_none": round(base / statistics.median(values), 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

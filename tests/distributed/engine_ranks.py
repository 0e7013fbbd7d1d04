"""A rank of a tensor-parallel run of the engine's generator (``ConstrainedGenerator`` over
``DecodeBatch``) on the tiny model: the same inserts on every rank, tokens printed as JSON.

Usage (under ``mlx.launch`` or alone): python tests/distributed/engine_ranks.py MODEL_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import mlx.core as mx  # noqa: E402
from mlx_lm.utils import load  # noqa: E402

from triton_mlx.engine import batch_generator  # noqa: E402
from triton_mlx.engine.constraints import GrammarCache  # noqa: E402
from triton_mlx.engine.types import GenerationRequest, SamplingParams  # noqa: E402

EOS = [2]
REQUESTS = [  # greedy, seeded sampling, greedy with logprobs; different lengths
    ("Hello world", 12, SamplingParams(temperature=0.0, logit_bias={2: -100.0}), None),
    ("The quick brown fox jumps", 16,
     SamplingParams(temperature=0.8, seed=5, logit_bias={2: -100.0}), None),
    ("def add(a, b):", 20, SamplingParams(temperature=0.0, logit_bias={2: -100.0}), 2),
]


def main(model_dir: str) -> None:
    group = mx.distributed.init()
    model, tokenizer = load(model_dir)
    if group.size() > 1:
        model.shard(group)
    generator = batch_generator.new_generator(model, EOS, 8, 64,
                                              mx.default_stream(mx.default_device()))
    grammars = GrammarCache(tokenizer, EOS)
    vocab = batch_generator.vocab_size(model)
    uids = [batch_generator.insert(generator, GenerationRequest(
        tokenizer.encode(text), max_tokens, sampling, logprobs=logprobs), None, 0, vocab, EOS,
        grammars)[0] for text, max_tokens, sampling, logprobs in REQUESTS]
    tokens: dict[int, list[int]] = {uid: [] for uid in uids}
    top: dict[int, list[list[int]]] = {uid: [] for uid in uids}
    finished: set[int] = set()
    while len(finished) < len(uids):
        for response in generator.next()[1]:
            tokens[response.uid].append(response.token)
            if response.logprob is not None:
                top[response.uid].append([i for i, _ in response.logprob[1]])
            if response.finish_reason is not None:
                finished.add(response.uid)
    print(json.dumps({"rank": group.rank(), "size": group.size(),
                      "tokens": [tokens[u] for u in uids], "top": [top[u] for u in uids]}),
          flush=True)


if __name__ == "__main__":
    main(sys.argv[1])

"""Embeddings on a GPU: a check that the encoder and chat-model paths run there, and figures.

Run ON the lent GPU machine (``bench/gpu_run.sh --embeddings``). No real embedding model can
be carried there, so the encoder is all-MiniLM-L6-v2's shape with random weights (and the demo
tokenizer); the chat model is the random Llama-3.2-1B shape of the chat bench. Prints: the
rational GELU against MLX's exact one on the device, then sentences/s at batch 1 and 64 over
HTTP (``bench.embeddings.measure_http``) for both models, twice (cold and warm shapes), and
whether every vector is finite and unit length.

Usage: python bench/gpu_embeddings.py TOKENIZER_DIR LLAMA_DIR WORK_DIR
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from bench import servers
from bench.embeddings import make_sentences, measure_http
from triton_mlx.encoders import bert

MINILM_SHAPE = {
    "model_type": "bert", "architectures": ["BertModel"], "hidden_size": 384,
    "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536,
    "hidden_act": "gelu", "max_position_embeddings": 512, "type_vocab_size": 2,
    "layer_norm_eps": 1e-12, "vocab_size": 49152,  # the demo tokenizer's vocabulary
}


def random_encoder(tokenizer_dir: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text(json.dumps(MINILM_SHAPE))
    shutil.copy(tokenizer_dir / "tokenizer.json", dest / "tokenizer.json")
    model = bert.BertEncoder(MINILM_SHAPE)
    mx.eval(model.parameters())
    model.save_weights(str(dest / "model.safetensors"))


def main() -> int:
    tokenizer_dir, llama_dir, work = map(Path, sys.argv[1:4])
    x = mx.random.normal((64, 32, 1536)) * 3
    gelu_error = mx.abs(bert._gelu(x) - nn.gelu(x)).max().item()
    print(f"device {mx.default_device()}: rational GELU vs exact, max abs error {gelu_error:.2e}")
    repository = Path(tempfile.mkdtemp(dir=work))
    random_encoder(tokenizer_dir, repository / "minilm-shape-random")
    sentences = make_sentences()
    spec = servers.ours(llama_dir, repository, slots=16, extra=[])
    print("| model | pass | batch 1 sentences/s | batch 64 sentences/s | vectors |")
    print("|---|---|---|---|---|")
    with servers.running(spec, work):
        for name in ("minilm-shape-random", llama_dir.name):
            # The first pass meets every padded shape for the first time (kernels are built
            # per shape on a GPU); the second is what a long-running server sees.
            for label in ("first", "second"):
                rates, vectors = measure_http(spec.port, name, sentences)
                norms = np.linalg.norm(vectors, axis=1)
                ok = bool(np.isfinite(vectors).all() and np.allclose(norms, 1, atol=1e-3))
                print(f"| {name} | {label} | {rates[1]:.1f} | {rates[64]:.1f} | "
                      f"{vectors.shape[1]} dims, {'finite, unit length' if ok else 'BAD'} |")
    return 0 if gelu_error < 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())

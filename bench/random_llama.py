"""Write a model folder with random weights in the shape of Llama-3.2-1B (bf16) and the demo
tokenizer, for GPU benchmarks where no real 1B model can be downloaded.

``--tiny`` writes a mistral of 4 layers and hidden size 256 instead: its forward pass is so
cheap that the server's own per-step work shows, which is what the CPU runs of issue 14 use.

``--shape qwen2-8b`` writes a qwen2 with Llama-3.1-8B's layer sizes (32 layers, hidden 4096,
7.4B parameters with this vocabulary, 15 GB in bf16): the two-GPU runs of issue 16, which need
an architecture mlx-lm can split both tensor-parallel and as a pipeline (its llama has no
pipeline()). ``--shape qwen2-tiny`` is its 4-layer form, to try those runs on a CPU.

Usage: python bench/random_llama.py [--tiny | --shape NAME] TOKENIZER_DIR DEST_DIR
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

# Llama-3.2-1B's shape, with the demo tokenizer's vocabulary (49152) instead of 128256.
CONFIG = {
    "model_type": "llama",
    "hidden_size": 2048,
    "num_hidden_layers": 16,
    "intermediate_size": 8192,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "rms_norm_eps": 1e-5,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}
# The tiny shape: mlx-lm loads a "mistral" config with its llama classes.
TINY = {"model_type": "mistral", "hidden_size": 256, "num_hidden_layers": 4,
        "intermediate_size": 768, "num_attention_heads": 8, "num_key_value_heads": 4,
        "head_dim": 32, "tie_word_embeddings": False}
QWEN2 = {**CONFIG, "model_type": "qwen2", "hidden_size": 4096, "num_hidden_layers": 32,
         "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
         "tie_word_embeddings": False, "max_window_layers": 32, "use_sliding_window": False}
SHAPES = {"1b": CONFIG, "tiny": {**CONFIG, **TINY}, "qwen2-8b": QWEN2,
          "qwen2-tiny": {**QWEN2, **TINY, "model_type": "qwen2", "max_window_layers": 4}}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json")


def write_random_llama(tokenizer_dir: Path, dest: Path, tiny: bool = False,
                       shape: str = "1b") -> Path:
    import importlib

    import mlx.core as mx
    from mlx.utils import tree_flatten

    config = SHAPES["tiny" if tiny else shape]
    module = "llama" if config["model_type"] == "mistral" else config["model_type"]
    family = importlib.import_module(f"mlx_lm.models.{module}")
    dest.mkdir(parents=True, exist_ok=True)
    mx.random.seed(0)
    model = family.Model(family.ModelArgs.from_dict(config))
    # Small weights keep activations finite through many random layers; the norms stay at 1 and
    # the output projection gives logits a spread of about 3, like a trained model's: with
    # every weight scaled down, logits differed by ~1e-4, below what bf16 log-probabilities
    # resolve, so greedy decoding was a tie on every token. Nothing is evaluated before the
    # save, which frees each float32 draw once its bf16 copy exists.
    output = "model.embed_tokens.weight" if config["tie_word_embeddings"] else "lm_head.weight"
    weights = {}
    for name, value in tree_flatten(model.parameters()):
        if name == output:
            value = mx.random.normal(value.shape) * (3 / config["hidden_size"] ** 0.5)
        elif not name.endswith("norm.weight"):
            value = value * 0.02
        weights[name] = value.astype(mx.bfloat16)
    mx.save_safetensors(str(dest / "model.safetensors"), weights)
    # mlx-lm's sharded_load (a pipeline under mlx_lm.server) reads the index of a model's files
    index = {"metadata": {}, "weight_map": dict.fromkeys(sorted(weights), "model.safetensors")}
    (dest / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    eos = json.loads((tokenizer_dir / "generation_config.json").read_text())["eos_token_id"]
    (dest / "config.json").write_text(json.dumps({**config, "eos_token_id": eos}, indent=2))
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_dir / name, dest / name)
    return dest


if __name__ == "__main__":
    argv = sys.argv[1:]
    tiny = "--tiny" in argv
    shape = argv[argv.index("--shape") + 1] if "--shape" in argv else "1b"
    folders = [a for i, a in enumerate(argv)
               if a != "--tiny" and a != "--shape" and (i == 0 or argv[i - 1] != "--shape")]
    print(write_random_llama(Path(folders[0]), Path(folders[1]), tiny=tiny, shape=shape))

"""Write a model folder with random weights in the shape of Llama-3.2-1B (bf16) and the demo
tokenizer, for GPU benchmarks where no real 1B model can be downloaded.

``--tiny`` writes a mistral of 4 layers and hidden size 256 instead: its forward pass is so
cheap that the server's own per-step work shows, which is what the CPU runs of issue 14 use.

Usage: python bench/random_llama.py [--tiny] TOKENIZER_DIR DEST_DIR
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
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json")


def write_random_llama(tokenizer_dir: Path, dest: Path, tiny: bool = False) -> Path:
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_map
    from mlx_lm.models import llama

    config = {**CONFIG, **TINY} if tiny else CONFIG
    dest.mkdir(parents=True, exist_ok=True)
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    # Small weights keep activations finite through 16 random layers.
    model.update(tree_map(lambda p: (p * 0.02).astype(mx.bfloat16), model.parameters()))
    mx.save_safetensors(str(dest / "model.safetensors"), dict(tree_flatten(model.parameters())))
    eos = json.loads((tokenizer_dir / "generation_config.json").read_text())["eos_token_id"]
    (dest / "config.json").write_text(json.dumps({**config, "eos_token_id": eos}, indent=2))
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_dir / name, dest / name)
    return dest


if __name__ == "__main__":
    tiny = "--tiny" in sys.argv[1:]
    folders = [a for a in sys.argv[1:] if a != "--tiny"]
    print(write_random_llama(Path(folders[0]), Path(folders[1]), tiny=tiny))

"""Tiny random-weight model folders of each architecture family mlx-lm serves, for tests that
check every family goes through the whole server, not only llama.

Each folder is what mlx-lm itself would load: ``config.json`` with the family's own fields,
``model.safetensors`` from mlx-lm 0.32's own ``Model`` class for that family (random weights,
so the weight names and shapes are exactly the ones its loader expects) and the tiny BPE
tokenizer of ``tests.tiny_model``. The quantized llamas go through ``mlx_lm.convert.convert``,
the path mlx-community folders are made by (4-bit, 8-bit and a mixed-precision recipe).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tests.tiny_model import build_tiny_model

HIDDEN = 64
LAYERS = 2
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS
GEMMA3_WINDOW = 24  # gemma3's sliding-window layers hold the last 24 tokens

_COMMON: dict[str, Any] = {
    "hidden_size": HIDDEN,
    "num_hidden_layers": LAYERS,
    "intermediate_size": 2 * HIDDEN,
    "num_attention_heads": HEADS,
    "num_key_value_heads": KV_HEADS,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    # transformers reads config.json too (for the tokenizer) and warns about its own defaults
    # (phi3's pad 32000, starcoder2's bos 50256) outside this vocabulary.
    "bos_token_id": None,
    "pad_token_id": None,
}

# Each family's config beyond _COMMON, and the mlx-lm module whose classes build its weights.
_FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("llama", {"tie_word_embeddings": True}),
    # mlx-lm loads a "mistral" config with its llama classes (utils.MODEL_REMAPPING).
    "mistral": ("llama", {"tie_word_embeddings": False, "head_dim": HEAD_DIM}),
    "mixtral": ("mixtral", {"num_local_experts": 4, "num_experts_per_tok": 2}),
    "phi3": ("phi3", {"max_position_embeddings": 4096,
                      "original_max_position_embeddings": 4096}),
    "qwen2": ("qwen2", {"tie_word_embeddings": True}),
    "qwen3": ("qwen3", {"tie_word_embeddings": True, "head_dim": HEAD_DIM}),
    "gemma2": ("gemma2", {"head_dim": HEAD_DIM, "query_pre_attn_scalar": HEAD_DIM}),
    # Two sliding-window layers (RotatingKVCache) then one global layer (KVCache).
    "gemma3": ("gemma3_text", {"model_type": "gemma3_text", "num_hidden_layers": 3,
                               "head_dim": HEAD_DIM, "query_pre_attn_scalar": HEAD_DIM,
                               "sliding_window": GEMMA3_WINDOW, "sliding_window_pattern": 3}),
    "cohere": ("cohere", {"layer_norm_eps": 1e-5, "logit_scale": 0.25}),
    "starcoder2": ("starcoder2", {"norm_epsilon": 1e-5, "tie_word_embeddings": True}),
}
FAMILIES = tuple(_FAMILIES)

# mlx-community's usual quantizations of a llama: (bits, mixed-precision recipe).
QUANTIZATIONS: dict[str, tuple[int, str | None]] = {
    "llama-4bit": (4, None),
    "llama-8bit": (8, None),
    "llama-mixed-3-6": (3, "mixed_3_6"),
}
QUANTIZED_LAYERS = 4  # the mixed recipe gives some layers (the last eighth) more bits


def family_config(family: str, vocab_size: int, eos_token_id: int,
                  context_length: int = 512) -> dict[str, Any]:
    """The ``config.json`` of a tiny ``family`` model."""
    module, extra = _FAMILIES[family]
    return {
        "model_type": family,
        **_COMMON,
        "vocab_size": vocab_size,
        "max_position_embeddings": context_length,
        "eos_token_id": eos_token_id,
        **extra,
    }


def build_family_model(dest: Path, family: str, *, seed: int = 0) -> Path:
    """Write an mlx-lm folder for a tiny random ``family`` model with the tiny BPE tokenizer."""
    import importlib

    import mlx.core as mx
    from mlx.utils import tree_flatten

    build_tiny_model(dest, seed=seed)  # the tokenizer files (and a llama we overwrite)
    llama_config = json.loads((dest / "config.json").read_text())
    config = family_config(family, llama_config["vocab_size"], llama_config["eos_token_id"],
                           llama_config["max_position_embeddings"])
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    arch = importlib.import_module(f"mlx_lm.models.{_FAMILIES[family][0]}")
    mx.random.seed(seed)
    model = arch.Model(arch.ModelArgs.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(dest / "model.safetensors"), weights, metadata={"format": "mlx"})
    return dest


def build_quantized_llama(dest: Path, bits: int, recipe: str | None = None, *,
                          seed: int = 0) -> Path:
    """A tiny llama quantized by ``mlx_lm.convert.convert`` (group size 64, affine), as
    mlx-community folders are; ``recipe`` is one of mlx-lm's mixed recipes (``mixed_3_6``...)."""
    from mlx_lm.convert import convert

    with tempfile.TemporaryDirectory() as scratch:
        source = build_tiny_model(Path(scratch) / "float", seed=seed)
        config = json.loads((source / "config.json").read_text())
        config["num_hidden_layers"] = QUANTIZED_LAYERS
        (source / "config.json").write_text(json.dumps(config, indent=2))
        _rebuild_llama_weights(source, config, seed)
        if dest.exists():
            shutil.rmtree(dest)
        convert(str(source), str(dest), quantize=True, q_bits=bits, q_group_size=64,
                quant_predicate=recipe)
    return dest


def _rebuild_llama_weights(folder: Path, config: dict[str, Any], seed: int) -> None:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())))


def build_family_repository(root: Path, families: tuple[str, ...] = FAMILIES,
                            quantizations: tuple[str, ...] = tuple(QUANTIZATIONS)) -> Path:
    """A repository with one folder per family (named after it) and per quantized llama."""
    for family in families:
        build_family_model(root / family, family)
    for name in quantizations:
        bits, recipe = QUANTIZATIONS[name]
        build_quantized_llama(root / name, bits, recipe)
    return root

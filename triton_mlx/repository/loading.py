"""Loading an mlx-lm model folder. Runs on the model's engine thread."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from triton_mlx.engine.runtime_profile import RuntimeProfile, prepare_model
from triton_mlx.repository.settings import ModelFolderError


def load_model_folder(
    path: Path,
    *,
    runtime_profile: str = "auto",
    max_memory_gb: float | None = None,
    on_profile: Callable[[RuntimeProfile], None] | None = None,
) -> tuple[Any, Any]:
    """Return (model, tokenizer) for a local mlx-lm folder; never reaches for a model hub.

    The weights are converted for the runtime profile chosen here (``runtime_profile``: auto,
    fast or small); ``on_profile`` receives the choice, since the engine's loader contract is
    (model, tokenizer) only.
    """
    from mlx_lm.utils import load_model, load_tokenizer

    if not (path / "config.json").is_file():
        raise ModelFolderError("config.json is missing")
    if not any(path.glob("*.safetensors")):
        raise ModelFolderError("no *.safetensors weight files")
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer.model").is_file():
        raise ModelFolderError("no tokenizer.json or tokenizer.model")
    model, config = load_model(path)
    profile = prepare_model(model, runtime_profile, max_memory_gb)
    if on_profile is not None:
        on_profile(profile)
    tokenizer = load_tokenizer(path, eos_token_ids=config.get("eos_token_id"))
    return model, tokenizer

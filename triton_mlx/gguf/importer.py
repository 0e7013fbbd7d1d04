"""Convert a GGUF file into an mlx-lm model folder, keeping its quantization where MLX can.

The flow: read the header (``reader``), check the architecture and every tensor's type
(``architectures``, ``kquants``), build config.json and the tokenizer files (``tokenizer``), then
decode and rename the tensors (``weights``) and write the folder atomically. ``import_gguf``
returns what it kept and expanded per tensor type, which the CLI prints.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import mlx.core as mx

from .architectures import ARCHITECTURES, Architecture, UnsupportedModelError
from .kquants import SUPPORTED, supported_type_names
from .reader import GGUFFormatError, GGUFHeader, read_header
from .tokenizer import UnsupportedTokenizerError, tokenizer_files
from .weights import ImportReport, load_weights, module_paths, quantization_config


class GGUFImportError(Exception):
    """A user-facing error: unsupported architecture/tensor type, bad file, etc."""


def import_gguf(
    gguf_path: str | os.PathLike, dest_dir: str | os.PathLike, *, overwrite: bool = False
) -> ImportReport:
    """Convert a GGUF file into an mlx-lm model folder at ``dest_dir``.

    The folder is built in a hidden temporary sibling and renamed into place, so a
    crash never leaves a half-written folder with a config.json (which the server
    would take for a model). Returns what was kept and expanded per tensor type.
    """
    gguf_path, dest = Path(gguf_path), Path(dest_dir)
    _check_destination(dest, overwrite)
    header = _read_header(gguf_path)
    arch = ARCHITECTURES[header.metadata["general.architecture"]]
    try:
        config = _model_config(arch, header)
        paths = module_paths(arch, header.tensors)
    except UnsupportedModelError as e:
        raise GGUFImportError(f"{gguf_path}: {e}") from None
    if quantization := quantization_config(header, paths):
        config["quantization"] = quantization
    try:
        files = tokenizer_files(header.metadata, model_max_length=config["max_position_embeddings"])
    except UnsupportedTokenizerError as e:
        raise GGUFImportError(f"{gguf_path}: {e}") from None
    try:  # the slow part: every check is done before it
        weights, report = load_weights(gguf_path, header, arch, paths, config)
    except (GGUFFormatError, ValueError) as e:
        raise GGUFImportError(f"{gguf_path}: could not read the tensor data: {e}") from None
    files["generation_config.json"] = _json(_generation_config(header.metadata))
    files["config.json"] = _json(config)  # written last: its presence marks a complete folder

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _hidden_sibling(dest, "importing")
    try:
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        _replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report.dest = dest
    return report


def _check_destination(dest: Path, overwrite: bool) -> None:
    """Refuse to clobber an existing import, or any non-empty folder, unless asked to."""
    if not dest.exists():
        return
    if not dest.is_dir():
        raise GGUFImportError(f"destination {dest} exists and is not a folder")
    if overwrite:
        return
    if (dest / "config.json").exists():
        raise GGUFImportError(
            f"destination {dest} already holds an imported model; pass overwrite=True to replace it"
        )
    if any(dest.iterdir()):
        raise GGUFImportError(
            f"destination {dest} exists and is not empty; pass overwrite=True to replace it"
        )


def _replace_dir(src: Path, dest: Path) -> None:
    """Rename ``src`` to ``dest``; an existing ``dest`` is moved aside first and then deleted."""
    if not dest.exists():
        src.rename(dest)
        return
    old = _hidden_sibling(dest, "replaced")
    dest.rename(old / dest.name)
    src.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def _hidden_sibling(dest: Path, purpose: str) -> Path:
    """A new empty hidden folder next to ``dest`` (same filesystem, so renames are atomic).
    Made with mkdir rather than mkdtemp so it gets the umask's permissions, not 0700."""
    path = dest.parent / f".{dest.name}.{purpose}-{secrets.token_hex(4)}"
    path.mkdir()
    return path


def _read_header(path: Path) -> GGUFHeader:
    if not path.is_file():
        raise GGUFImportError(f"GGUF file not found: {path}")
    try:
        header = read_header(path)
    except GGUFFormatError as e:
        raise GGUFImportError(f"{path}: {e}") from None
    arch = header.metadata.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise GGUFImportError(
            f'unsupported architecture "{arch}"; supported: ' + ", ".join(ARCHITECTURES)
        )
    bad = [t for t in header.tensors if t.ggml_type not in SUPPORTED]
    if bad:
        more = f" (and {len(bad) - 1} more tensors of unsupported types)" if len(bad) > 1 else ""
        raise GGUFImportError(
            f"tensor {bad[0].name} has type {bad[0].type_name}, supported: "
            f"{supported_type_names()}{more}"
        )
    for t in header.tensors:
        if why := ARCHITECTURES[arch].refuse_tensors.get(t.name):
            raise GGUFImportError(f"{path}: {why} is not supported")
    return header


def _model_config(arch: Architecture, header: GGUFHeader) -> dict[str, Any]:
    """mlx-lm's config.json for ``arch``, from the ``{arch}.*`` metadata."""
    embed = next((t for t in header.tensors if t.name == "token_embd.weight"), None)
    if embed is None:
        raise UnsupportedModelError("GGUF has no token_embd.weight tensor")
    tied = not any(t.name == "output.weight" for t in header.tensors)
    return arch.config(header.metadata, embed.shape[0], tied)


def _generation_config(meta: dict[str, Any]) -> dict[str, Any]:
    """EOS ids for mlx-lm's stop condition; an end-of-turn token also ends generation."""
    eos = [
        meta[k] for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id") if k in meta
    ]
    config: dict[str, Any] = {"eos_token_id": list(dict.fromkeys(eos))}
    if "tokenizer.ggml.bos_token_id" in meta:
        config["bos_token_id"] = meta["tokenizer.ggml.bos_token_id"]
    return config


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2) + "\n"

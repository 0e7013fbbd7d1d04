"""Convert a llama-family GGUF file into an mlx-lm model folder, keeping its quantization.

MLX's own GGUF loader unpacks Q4_0, Q4_1 and Q8_0 blocks straight into its affine
quantized layout (uint32 ``weight`` + ``scales`` + ``biases``, group size 32), so
nothing is dequantized: the importer renames tensors to Hugging Face llama names,
undoes llama.cpp's rotary permutation of Q/K, and writes the config, weights and
tokenizer mlx-lm expects.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import mlx.core as mx

from .reader import GGUFFormatError, GGUFHeader, TensorInfo, read_header
from .tokenizer import UnsupportedTokenizerError, tokenizer_files

SUPPORTED_ARCHITECTURES = ("llama",)

# ggml type -> bits of MLX's affine layout (group size 32), or None for dense tensors.
_SUPPORTED_TYPES = {2: 4, 3: 4, 8: 8, 1: None, 0: None}  # Q4_0, Q4_1, Q8_0, F16, F32
_SUPPORTED_TYPE_NAMES = "Q4_0, Q4_1, Q8_0, F16, F32"
_GROUP_SIZE = 32

_LAYER_MODULES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_GLOBAL_MODULES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.weight")


class GGUFImportError(Exception):
    """A user-facing error: unsupported architecture/tensor type, bad file, etc."""


def import_gguf(
    gguf_path: str | os.PathLike, dest_dir: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Convert a llama-family GGUF file into an mlx-lm model folder at ``dest_dir``.

    The folder is built in a hidden temporary sibling and renamed into place, so a
    crash never leaves a half-written folder with a config.json (which the server
    would take for a model). Returns ``dest_dir``.
    """
    gguf_path, dest = Path(gguf_path), Path(dest_dir)
    _check_destination(dest, overwrite)
    header = _read_header(gguf_path)
    config = _model_config(header)
    modules = _module_paths(header.tensors)
    if quantization := _quantization_config(header.tensors, modules):
        config["quantization"] = quantization
    try:
        files = tokenizer_files(header.metadata, model_max_length=config["max_position_embeddings"])
    except UnsupportedTokenizerError as e:
        raise GGUFImportError(f"{gguf_path}: {e}") from None
    weights = _load_weights(gguf_path, header, modules, config)  # the slow part: checks first
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
    return dest


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
    if arch not in SUPPORTED_ARCHITECTURES:
        raise GGUFImportError(
            f'unsupported architecture "{arch}"; supported: ' + ", ".join(SUPPORTED_ARCHITECTURES)
        )
    bad = [t for t in header.tensors if t.ggml_type not in _SUPPORTED_TYPES]
    if bad:
        more = f" (and {len(bad) - 1} more tensors of unsupported types)" if len(bad) > 1 else ""
        raise GGUFImportError(
            f"tensor {bad[0].name} has type {bad[0].type_name}, supported: "
            f"{_SUPPORTED_TYPE_NAMES}{more}; use a GGUF quantized to Q4_0, Q4_1 or Q8_0 "
            "(K-quants such as Q4_K_M are not supported)"
        )
    return header


def _model_config(header: GGUFHeader) -> dict[str, Any]:
    """The mlx-lm llama config.json, from the ``llama.*`` metadata."""
    meta = header.metadata

    def need(key: str) -> Any:
        if f"llama.{key}" not in meta:
            raise GGUFImportError(f"GGUF metadata lacks llama.{key}")
        return meta[f"llama.{key}"]

    if meta.get("llama.expert_count", 0):
        raise GGUFImportError("mixture-of-experts llama models are not supported")
    if any(t.name == "rope_freqs.weight" for t in header.tensors):
        raise GGUFImportError(
            "llama 3.1-style rope frequency scaling (rope_freqs) is not supported"
        )

    hidden, n_heads = need("embedding_length"), need("attention.head_count")
    head_dim = meta.get("llama.attention.key_length", hidden // n_heads)
    if meta.get("llama.attention.value_length", head_dim) != head_dim:
        raise GGUFImportError("attention with different key and value head sizes is not supported")
    if meta.get("llama.rope.dimension_count", head_dim) != head_dim:
        raise GGUFImportError("partial rotary embeddings (rope.dimension_count) are not supported")
    embed = next((t for t in header.tensors if t.name == "token_embd.weight"), None)
    if embed is None:
        raise GGUFImportError("GGUF has no token_embd.weight tensor")

    config: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": need("block_count"),
        "intermediate_size": need("feed_forward_length"),
        "num_attention_heads": n_heads,
        "num_key_value_heads": meta.get("llama.attention.head_count_kv", n_heads),
        "rms_norm_eps": need("attention.layer_norm_rms_epsilon"),
        "vocab_size": embed.shape[0],
        "max_position_embeddings": need("context_length"),
        "rope_theta": meta.get("llama.rope.freq_base", 10000.0),
        "tie_word_embeddings": not any(t.name == "output.weight" for t in header.tensors),
    }
    if head_dim != hidden // n_heads:
        config["head_dim"] = head_dim
    scaling = meta.get("llama.rope.scaling.type", "none")
    if scaling == "linear":
        config["rope_scaling"] = {"type": "linear", "factor": meta["llama.rope.scaling.factor"]}
    elif scaling != "none":
        raise GGUFImportError(f'unsupported rope scaling "{scaling}"; supported: none, linear')
    return config


def _module_paths(tensors: list[TensorInfo]) -> dict[str, str]:
    """GGUF tensor name -> Hugging Face module path (no ``.weight``); unknown names are refused."""
    paths = {}
    for t in tensors:
        if m := _LAYER_TENSOR.fullmatch(t.name):
            layer, part = m.groups()
            module = _LAYER_MODULES.get(part)
            path = module and f"model.layers.{layer}.{module}"
        else:
            path = _GLOBAL_MODULES.get(t.name.removesuffix(".weight"))
        if path is None or not t.name.endswith(".weight"):
            raise GGUFImportError(
                f"tensor {t.name} is not part of a llama model this importer knows"
            )
        paths[t.name] = path
    return paths


def _load_weights(
    path: Path, header: GGUFHeader, modules: dict[str, str], config: dict[str, Any]
) -> dict[str, mx.array]:
    """Load the tensors with ``mx.load`` and rename them, keeping quantized blocks packed.

    Scales, biases and norms become float32: MLX's CPU quantized matmul is far
    slower with float16 scales, and they are a small share of the bytes.
    """
    try:
        raw = mx.load(str(path))
    except (RuntimeError, ValueError) as e:
        raise GGUFImportError(f"{path}: could not read the tensor data: {e}") from None
    heads = {
        "self_attn.q_proj": config["num_attention_heads"],
        "self_attn.k_proj": config["num_key_value_heads"],
    }
    weights = {}
    for t in header.tensors:
        module = modules[t.name]
        stem = t.name.removesuffix(".weight")
        parts = ("weight", "scales", "biases") if _SUPPORTED_TYPES[t.ggml_type] else ("weight",)
        for part in parts:
            a = raw.pop(f"{stem}.{part}" if part != "weight" else t.name)
            if part != "weight" or module.endswith("norm"):
                a = a.astype(mx.float32)
            n_head = next((n for suffix, n in heads.items() if module.endswith(suffix)), None)
            if n_head is not None:
                a = _unpermute_rope_rows(a, n_head)
            weights[f"{module}.{part}"] = a
    return weights


def _unpermute_rope_rows(a: mx.array, n_head: int) -> mx.array:
    """Undo llama.cpp's Q/K row permutation (it interleaves each head's two rotary halves)."""
    rows = a.shape[0]
    return a.reshape(n_head, rows // n_head // 2, 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)


def _quantization_config(
    tensors: list[TensorInfo], modules: dict[str, str]
) -> dict[str, Any] | None:
    """mlx-lm's ``quantization`` section: a default for the most common bit width, plus an
    entry per module that differs (mlx-lm's class_predicate looks module paths up first;
    ``False`` keeps a module dense). None when nothing is quantized."""
    bits = {modules[t.name]: _SUPPORTED_TYPES[t.ggml_type] for t in tensors if len(t.shape) == 2}
    counts = Counter(b for b in bits.values() if b)
    if not counts:
        return None
    default = counts.most_common(1)[0][0]
    config: dict[str, Any] = {"group_size": _GROUP_SIZE, "bits": default}
    for module, b in bits.items():
        if b != default:
            config[module] = {"group_size": _GROUP_SIZE, "bits": b} if b else False
    return config


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

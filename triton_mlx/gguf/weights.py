"""The GGUF's tensors as mlx-lm weights: decoded, renamed, and accounted for.

Each tensor is decoded from the file's bytes (``kquants``): types MLX's affine layout holds
exactly stay packed (Q4_0/Q4_1/Q4_K as 4-bit, Q5_0/Q5_1/Q5_K as 5-bit, Q8_0 as 8-bit, group
size 32); Q2_K, Q3_K and Q6_K, whose sub-blocks of 16 weights it cannot hold, are dequantized
exactly in float32 and stored as float16 (a rounding of at most 2^-11 relative, far below
their own quantization step); floats stay as they are. Nothing is ever requantized. Scales,
biases, norms and other 1-D tensors are float32: MLX's CPU quantized matmul is far slower with
float16 scales, and they are a small share of the bytes.

``ImportReport`` says, per ggml type, how many tensors were kept packed or expanded and what
they occupy in the file and in the folder: the importer prints it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx

from .architectures import GLOBAL_MODULES, Architecture, UnsupportedModelError
from .kquants import DEQUANTIZED, GROUP_SIZE, KEPT_PACKED, Dense, Packed, decode_tensor
from .reader import GGUFHeader, TensorInfo

DEQUANTIZED_DTYPE = mx.float16
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")


@dataclass
class TypeLine:
    """One ggml type's share of an import."""

    tensors: int = 0
    file_bytes: int = 0
    folder_bytes: int = 0
    action: str = ""


@dataclass
class ImportReport:
    """What an import wrote: the folder, and per ggml type what was kept and expanded."""

    dest: Path | None = None
    by_type: dict[str, TypeLine] = field(default_factory=dict)

    def add(self, info: TensorInfo, action: str, stored: list[mx.array]) -> None:
        line = self.by_type.setdefault(info.type_name, TypeLine(action=action))
        line.tensors += 1
        line.file_bytes += info.nbytes
        line.folder_bytes += sum(a.nbytes for a in stored)

    def lines(self) -> list[str]:
        """One line per ggml type, then the totals."""
        out = []
        for name, line in sorted(self.by_type.items(), key=lambda kv: -kv[1].file_bytes):
            out.append(f"  {name:>5}: {line.tensors:4d} tensors {line.action}: "
                       f"{_mib(line.file_bytes)} in the file -> {_mib(line.folder_bytes)}")
        total_file = sum(line.file_bytes for line in self.by_type.values())
        total = sum(line.folder_bytes for line in self.by_type.values())
        out.append(f"  total: {_mib(total_file)} in the file -> {_mib(total)} of weights")
        return out


def module_paths(arch: Architecture, tensors: list[TensorInfo]) -> dict[str, str]:
    """GGUF tensor name -> mlx-lm parameter path; a name the architecture lacks is refused."""
    paths = {}
    for t in tensors:
        if m := _LAYER_TENSOR.fullmatch(t.name):
            layer, part, kind = m.groups()
            module = arch.layer_modules.get(part)
            if kind == "bias" and part not in arch.biases:
                module = None
            path = module and f"model.layers.{layer}.{module}.{kind}"
        else:
            stem, _, kind = t.name.rpartition(".")
            module = GLOBAL_MODULES.get(stem) if kind == "weight" else None
            path = module and f"{module}.weight"
        if path is None:
            raise UnsupportedModelError(
                f"tensor {t.name} is not part of a {arch.name} model this importer knows")
        paths[t.name] = path
    return paths


def load_weights(path: Path, header: GGUFHeader, arch: Architecture, paths: dict[str, str],
                 config: dict[str, Any]) -> tuple[dict[str, mx.array], ImportReport]:
    """Every tensor decoded and renamed, with llama.cpp's changes undone (see
    ``architectures``); and the report of what was kept and expanded."""
    heads = {"self_attn.q_proj": config["num_attention_heads"],
             "self_attn.k_proj": config["num_key_value_heads"]}
    weights: dict[str, mx.array] = {}
    report = ImportReport()
    for info in header.tensors:
        target = paths[info.name]
        module = target.rpartition(".")[0]
        decoded = decode_tensor(path, header, info)
        if isinstance(decoded, Packed):
            parts = {"weight": decoded.weight, "scales": decoded.scales.astype(mx.float32),
                     "biases": decoded.biases.astype(mx.float32)}
            action = f"kept as {decoded.bits}-bit"
        else:
            array = _dense(decoded, info)
            if module.endswith("norm") and arch.norm_shift:
                array = array - arch.norm_shift
            parts = {"weight": array}
            action = ("dequantized to float16" if info.ggml_type in DEQUANTIZED
                      else f"kept as {array.dtype}".replace("mlx.core.", ""))
        n_head = next((n for suffix, n in heads.items() if module.endswith(suffix)), None)
        for part, array in parts.items():
            if arch.permute_rope and n_head is not None:
                array = _unpermute_rope_rows(array, n_head)
            name = target if part == "weight" else f"{module}.{part}"
            weights[name] = array
        mx.eval(list(parts.values()))
        report.add(info, action, [weights[target if p == "weight" else f"{module}.{p}"]
                                  for p in parts])
    return weights, report


def quantization_config(header: GGUFHeader, paths: dict[str, str]) -> dict[str, Any] | None:
    """mlx-lm's ``quantization`` section: a default for the most common bit width, plus an
    entry per module that differs (mlx-lm's class_predicate looks module paths up first;
    ``False`` keeps a module dense). None when nothing is quantized."""
    bits = {paths[t.name].rpartition(".")[0]: KEPT_PACKED.get(t.ggml_type)
            for t in header.tensors if len(t.shape) == 2}
    counts = Counter(b for b in bits.values() if b)
    if not counts:
        return None
    default = counts.most_common(1)[0][0]
    config: dict[str, Any] = {"group_size": GROUP_SIZE, "bits": default}
    for module, b in bits.items():
        if b != default:
            config[module] = {"group_size": GROUP_SIZE, "bits": b} if b else False
    return config


def _dense(decoded: Dense, info: TensorInfo) -> mx.array:
    array = decoded.array
    if len(info.shape) == 1:
        return array.astype(mx.float32)
    if info.ggml_type in DEQUANTIZED:
        return array.astype(DEQUANTIZED_DTYPE)
    return array


def _unpermute_rope_rows(a: mx.array, n_head: int) -> mx.array:
    """Undo llama.cpp's Q/K row permutation (it interleaves each head's two rotary halves)."""
    rows = a.shape[0]
    return a.reshape(n_head, rows // n_head // 2, 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"

"""Decode GGUF tensor data (legacy quants, K-quants, floats) straight from the file's bytes.

``mx.load`` keeps only Q4_0/Q4_1/Q8_0 packed and turns K-quants into float16 (and
fails outright on types such as Q5_0), so the importer decodes the raw ggml
blocks itself, vectorised with numpy over many blocks at a time:

* Types whose blocks are affine over groups of 32 weights map onto MLX's affine
  quantized layout *exactly* (``w = scale * q + bias``; every product is exact in
  float32 and both sides round the one addition alike): Q4_0, Q4_1, Q8_0 and Q4_K
  as 4/8-bit, Q5_0, Q5_1 and Q5_K as 5-bit, all with group size 32.
* Q2_K, Q3_K and Q6_K scale sub-blocks of 16 weights, which MLX's groups (>= 32)
  cannot hold, so they are dequantized to float32 exactly as ggml's
  ``dequantize_row_q*_K`` does; the caller picks the dtype it stores.
* F32, F16 and BF16 come back as arrays of their own dtype.

Block layouts follow ggml-common.h and the unpacking ggml-quants.c.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from .reader import (
    GGML_BLOCK_SIZES,
    GGML_TYPE_IDS,
    GGML_TYPE_NAMES,
    GGUFFormatError,
    GGUFHeader,
    TensorInfo,
)

GROUP_SIZE = 32  # the MLX group size of every packed result
_CHUNK_WEIGHTS = 1 << 22  # weights decoded per numpy pass: bounds the temporaries' memory

_T = GGML_TYPE_IDS
# ggml type -> bits of the MLX affine layout it is kept in, exactly.
KEPT_PACKED: dict[int, int] = {
    _T["Q4_0"]: 4, _T["Q4_1"]: 4, _T["Q4_K"]: 4,
    _T["Q5_0"]: 5, _T["Q5_1"]: 5, _T["Q5_K"]: 5,
    _T["Q8_0"]: 8,
}  # fmt: skip
# ggml types dequantized to float32 (sub-blocks of 16 weights).
DEQUANTIZED: frozenset[int] = frozenset({_T["Q2_K"], _T["Q3_K"], _T["Q6_K"]})
# ggml float types, returned as they are.
DENSE: frozenset[int] = frozenset({_T["F32"], _T["F16"], _T["BF16"]})
SUPPORTED: frozenset[int] = frozenset(KEPT_PACKED) | DEQUANTIZED | DENSE


class UnsupportedTensorTypeError(ValueError):
    """The tensor's ggml type is one this module cannot decode."""


@dataclass(frozen=True)
class Packed:
    """MLX affine quantization: ``mx.dequantize(weight, scales, biases, group_size, bits)``
    gives the tensor's values. ``weight`` is uint32 of shape ``(*rows, cols * bits // 32)``;
    ``scales`` and ``biases`` are float32 of shape ``(*rows, cols // group_size)``."""

    weight: mx.array
    scales: mx.array
    biases: mx.array
    bits: int
    group_size: int = GROUP_SIZE


@dataclass(frozen=True)
class Dense:
    """A plain array: float32 for dequantized K-quants, else the file's own float dtype."""

    array: mx.array


Decoded = Packed | Dense


def supported_type_names() -> str:
    """The ggml types ``decode_tensor`` handles, for error messages."""
    return ", ".join(GGML_TYPE_NAMES[t] for t in sorted(SUPPORTED))


def tensor_bytes(path: str | os.PathLike, header: GGUFHeader, info: TensorInfo) -> np.ndarray:
    """The tensor's raw data as a read-only uint8 memmap of the file.

    Raises GGUFFormatError if the data is misaligned or runs past the end of the file."""
    nbytes = info.nbytes
    start = header.data_offset + info.offset
    if info.offset % header.alignment:
        raise GGUFFormatError(
            f"tensor {info.name}: data offset {info.offset} is not a multiple of the "
            f"file's alignment {header.alignment}"
        )
    size = os.path.getsize(path)
    if start + nbytes > size:
        raise GGUFFormatError(
            f"tensor {info.name}: its {nbytes} bytes at offset {start} run past the end of "
            f"the file ({size} bytes); is it truncated?"
        )
    if nbytes == 0:
        return np.zeros(0, np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r", offset=start, shape=(nbytes,))


def decode_tensor(path: str | os.PathLike, header: GGUFHeader, info: TensorInfo) -> Decoded:
    """Read and decode one tensor of the GGUF file at ``path`` (see the module docstring)."""
    if info.ggml_type not in SUPPORTED:
        _unsupported(info.name, info.ggml_type)
    return decode_bytes(tensor_bytes(path, header, info), info.ggml_type, info.shape, info.name)


def decode_bytes(
    data: np.ndarray, ggml_type: int, shape: tuple[int, ...], name: str = "tensor"
) -> Decoded:
    """Decode raw ggml data (uint8, row-major ``shape`` in numpy order) of ``ggml_type``."""
    if ggml_type not in SUPPORTED:
        _unsupported(name, ggml_type)
    info = TensorInfo(name, tuple(shape), ggml_type, 0)
    if data.size != info.nbytes:
        raise GGUFFormatError(f"tensor {name}: {data.size} bytes given, {info.nbytes} expected")
    data = np.asarray(data, dtype=np.uint8)
    if ggml_type in DENSE:
        return Dense(_dense_float(data, ggml_type, info.shape))
    cols = info.shape[-1] if info.shape else 1
    rows = info.n_elements // cols
    block_weights, block_bytes = GGML_BLOCK_SIZES[ggml_type]
    row_bytes = cols // block_weights * block_bytes
    chunk_rows = max(1, _CHUNK_WEIGHTS // max(cols, 1))
    lead = info.shape[:-1]

    if ggml_type in DEQUANTIZED:
        out = np.empty((rows, cols), np.float32)
        for r0 in range(0, rows, chunk_rows):
            r1 = min(rows, r0 + chunk_rows)
            blocks = data[r0 * row_bytes : r1 * row_bytes].reshape(-1, block_bytes)
            out[r0:r1] = _DEQUANTIZERS[ggml_type](blocks).reshape(r1 - r0, cols)
        return Dense(mx.array(out.reshape(info.shape)))

    bits = KEPT_PACKED[ggml_type]
    weight = np.empty((rows, cols * bits // 32), np.uint32)
    scales = np.empty((rows, cols // GROUP_SIZE), np.float32)
    biases = np.empty_like(scales)
    for r0 in range(0, rows, chunk_rows):
        r1 = min(rows, r0 + chunk_rows)
        blocks = data[r0 * row_bytes : r1 * row_bytes].reshape(-1, block_bytes)
        q, s, b = _UNPACKERS[ggml_type](blocks)
        weight[r0:r1] = pack_bits(q.reshape(r1 - r0, cols), bits)
        scales[r0:r1] = s.reshape(r1 - r0, -1)
        biases[r0:r1] = b.reshape(r1 - r0, -1)
    return Packed(
        mx.array(weight.reshape(*lead, -1)),
        mx.array(scales.reshape(*lead, -1)),
        mx.array(biases.reshape(*lead, -1)),
        bits,
    )


def pack_bits(q: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned ``bits``-bit values (last axis, a multiple of 32 long) into MLX's
    uint32 layout: one little-endian bit stream, each value's least significant bit first."""
    q = np.ascontiguousarray(q, dtype=np.uint8)
    lead, n = q.shape[:-1], q.shape[-1]
    if bits == 8:
        return q.view("<u4")
    if bits == 4:
        pairs = q.reshape(*lead, n // 2, 2)
        return np.ascontiguousarray(pairs[..., 0] | (pairs[..., 1] << 4)).view("<u4")
    # Any width <= 8: eight values fill exactly ``bits`` bytes.
    eights = q.reshape(*lead, n // 8, 8).astype(np.uint64)
    word = np.zeros(eights.shape[:-1], np.uint64)
    for i in range(8):
        word |= eights[..., i] << np.uint64(bits * i)
    packed = word[..., None].view(np.uint8)[..., :bits]  # little-endian: low bytes first
    return np.ascontiguousarray(packed).reshape(*lead, n * bits // 8).view("<u4")


def _unsupported(name: str, ggml_type: int) -> None:
    type_name = GGML_TYPE_NAMES.get(ggml_type, "unknown")
    raise UnsupportedTensorTypeError(
        f"tensor {name} has ggml type {type_name} ({ggml_type}), which cannot be decoded; "
        f"supported: {supported_type_names()}"
    )


def _dense_float(data: np.ndarray, ggml_type: int, shape: tuple[int, ...]) -> mx.array:
    if ggml_type == _T["BF16"]:
        raw = mx.array(np.array(data).view("<u2").reshape(shape))
        return mx.view(raw, mx.bfloat16)
    dtype = "<f4" if ggml_type == _T["F32"] else "<f2"
    return mx.array(np.array(data).view(dtype).reshape(shape))


# --- block fields -------------------------------------------------------------------------


def _f16(blocks: np.ndarray, at: int) -> np.ndarray:
    """The fp16 at byte ``at`` of each block, as float32 of shape (n_blocks, 1)."""
    return np.ascontiguousarray(blocks[:, at : at + 2]).view("<f2").astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """Legacy 32-weight blocks: byte j holds weight j (low nibble) and j + 16 (high)."""
    return np.concatenate([qs & 0xF, qs >> 4], axis=-1)


def _high_bits_32(qh: np.ndarray) -> np.ndarray:
    """Q5_0/Q5_1: bit i of the little-endian u32 ``qh`` is weight i's fifth bit."""
    word = np.ascontiguousarray(qh).view("<u4")
    return ((word >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8) << 4


def _scale_min_k4(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml's get_scale_min_k4 for j = 0..7 at once: 12 bytes -> eight 6-bit scales, mins."""
    s0, s1, s2 = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = np.concatenate([s0 & 63, (s2 & 0xF) | ((s0 >> 6) << 4)], axis=1)
    m = np.concatenate([s1 & 63, (s2 >> 4) | ((s1 >> 6) << 4)], axis=1)
    return sc, m


def _crumbs(qs: np.ndarray) -> np.ndarray:
    """Q2_K/Q3_K low bits: each 32 bytes hold 128 weights, 2 bits each; weight 32j + l of
    that 128 is bits 2j..2j+1 of byte l. Returns (n_blocks, 2, 4, 32) values 0..3."""
    shifts = (2 * np.arange(4, dtype=np.uint8)).reshape(1, 1, 4, 1)
    return (qs.reshape(-1, 2, 1, 32) >> shifts) & 3


# --- packed types: (q in 0..2^bits-1 per weight, scale and bias per 32 weights) -----------

Unpacked = tuple[np.ndarray, np.ndarray, np.ndarray]


def _q4_0(b: np.ndarray) -> Unpacked:  # d | qs[16]: w = d * (q - 8)
    d = _f16(b, 0)
    return _nibbles(b[:, 2:18]), d, -8 * d


def _q4_1(b: np.ndarray) -> Unpacked:  # d | m | qs[16]: w = d * q + m
    return _nibbles(b[:, 4:20]), _f16(b, 0), _f16(b, 2)


def _q5_0(b: np.ndarray) -> Unpacked:  # d | qh[4] | qs[16]: w = d * (q - 16)
    d = _f16(b, 0)
    return _nibbles(b[:, 6:22]) | _high_bits_32(b[:, 2:6]), d, -16 * d


def _q5_1(b: np.ndarray) -> Unpacked:  # d | m | qh[4] | qs[16]: w = d * q + m
    return _nibbles(b[:, 8:24]) | _high_bits_32(b[:, 4:8]), _f16(b, 0), _f16(b, 2)


def _q8_0(b: np.ndarray) -> Unpacked:  # d | int8 qs[32]: w = d * q; stored as q + 128
    d = _f16(b, 0)
    return b[:, 2:34] ^ 0x80, d, -128 * d


def _k_affine(b: np.ndarray, q: np.ndarray) -> Unpacked:
    """Q4_K/Q5_K: sub-block s (32 weights) is w = d * sc[s] * q - dmin * m[s]."""
    sc, m = _scale_min_k4(b[:, 4:16])
    return q, _f16(b, 0) * sc, -(_f16(b, 2) * m)


def _q4_k(b: np.ndarray) -> Unpacked:  # d | dmin | scales[12] | qs[128]
    # Each 32 bytes hold 64 weights: low nibbles sub-block 2j, high nibbles 2j + 1.
    qs = b[:, 16:144].reshape(-1, 4, 1, 32)
    q = np.concatenate([qs & 0xF, qs >> 4], axis=2)
    return _k_affine(b, q.reshape(-1, 256))


def _q5_k(b: np.ndarray) -> Unpacked:  # d | dmin | scales[12] | qh[32] | qs[128]
    qs = b[:, 48:176].reshape(-1, 4, 1, 32)
    low = np.concatenate([qs & 0xF, qs >> 4], axis=2).reshape(-1, 8, 32)
    # Bit s of qh[l] is the fifth bit of weight l of sub-block s.
    high = (b[:, None, 16:48] >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)) & 1
    return _k_affine(b, (low | (high << 4)).reshape(-1, 256))


# --- dequantized K-quants: float32 (n_blocks, 256), as ggml computes them -----------------


def _q2_k(b: np.ndarray) -> np.ndarray:  # scales[16] | qs[64] | d | dmin
    scales = b[:, 0:16]
    dl = _f16(b, 80) * (scales & 0xF)
    ml = _f16(b, 82) * (scales >> 4)
    q = _crumbs(b[:, 16:80]).reshape(-1, 16, 16).astype(np.float32)
    return (dl[..., None] * q - ml[..., None]).reshape(-1, 256)


def _q3_k(b: np.ndarray) -> np.ndarray:  # hmask[32] | qs[64] | scales[12] | d
    s = b[:, 96:108]
    low = np.concatenate([s[:, :8] & 0xF, s[:, :8] >> 4], axis=1)
    high = (s[:, None, 8:12] >> (2 * np.arange(4, dtype=np.uint8)).reshape(1, 4, 1)) & 3
    sc = (low | (high.reshape(-1, 16) << 4)).astype(np.float32) - 32
    # Bit 4n + j of hmask[l] is the high bit of weight 128n + 32j + l; clear means -4.
    hbit = (b[:, None, None, 0:32] >> np.arange(8, dtype=np.uint8).reshape(1, 2, 4, 1)) & 1
    q = _crumbs(b[:, 32:96]).astype(np.int8) - 4 * (1 - hbit.astype(np.int8))
    dl = _f16(b, 108) * sc
    return (dl[..., None] * q.reshape(-1, 16, 16).astype(np.float32)).reshape(-1, 256)


def _q6_k(b: np.ndarray) -> np.ndarray:  # ql[128] | qh[64] | int8 scales[16] | d
    # Per 128 weights: ql[64], qh[32]. Weight 32k + l takes the low nibble of ql[l + 32 (k % 2)]
    # (k < 2) or its high nibble (k >= 2), and bits 2k..2k+1 of qh[l] as bits 4..5.
    ql = b[:, 0:128].reshape(-1, 2, 2, 32)
    low = np.concatenate([ql & 0xF, ql >> 4], axis=2)
    qh = b[:, 128:192].reshape(-1, 2, 1, 32)
    high = (qh >> (2 * np.arange(4, dtype=np.uint8)).reshape(1, 1, 4, 1)) & 3
    q = (low | (high << 4)).astype(np.int8) - 32
    sc = np.ascontiguousarray(b[:, 192:208]).view(np.int8).astype(np.float32)
    dl = _f16(b, 208) * sc
    return (dl[..., None] * q.reshape(-1, 16, 16).astype(np.float32)).reshape(-1, 256)


_UNPACKERS: dict[int, Callable[[np.ndarray], Unpacked]] = {
    _T["Q4_0"]: _q4_0, _T["Q4_1"]: _q4_1, _T["Q5_0"]: _q5_0, _T["Q5_1"]: _q5_1,
    _T["Q8_0"]: _q8_0, _T["Q4_K"]: _q4_k, _T["Q5_K"]: _q5_k,
}  # fmt: skip
_DEQUANTIZERS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    _T["Q2_K"]: _q2_k, _T["Q3_K"]: _q3_k, _T["Q6_K"]: _q6_k,
}  # fmt: skip

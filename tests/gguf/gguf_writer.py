"""Write an mlx-lm model folder as a GGUF the way llama.cpp's ``convert_hf_to_gguf.py`` does.

The importer undoes what llama.cpp's converter changes (``triton_mlx.gguf.architectures``);
to test that on every architecture without downloading a model of each, this redoes the
converter's side on a tiny mlx-lm folder (whose weight names are the Hugging Face ones), with
llama.cpp's own Python package (``gguf``, test-only): its ``GGUFWriter`` and metadata helpers,
its tensor-name tables (``get_tensor_name_map``, what the converter's ``map_tensor_name``
uses) and its quantizer. Per architecture, as the converter's model classes do:

- ``LlamaModel``: Q and K rows permuted for ggml's rotary layout (``permute``); the vocabulary
  size and the rotary dimension count are written.
- ``Qwen2Model``, ``Qwen3Model``: the generic ``TextModel`` metadata, tensors as they are.
- ``GemmaModel``, ``Gemma2Model``: every ``*norm.weight`` stored as ``1 + w``; their own
  metadata (no rope base; Gemma 2 adds the soft-capping values and the sliding window).
- ``Gemma3Model``: ``1 + w`` norms too; generic metadata plus the sliding window.
- ``Phi3MiniModel``: the fused ``qkv_proj`` and ``gate_up_proj`` kept fused (``attn_qkv``,
  ``ffn_up``); its own metadata (original context length, rotary dimension count, a sliding
  window of 0 when the config has none).

The tokenizer is written as ``_set_vocab_gpt2`` writes a byte-level BPE: tokens by id, types
(special added tokens are CONTROL), merges and special ids (``gguf.SpecialVocab``), under the
pre-tokenizer name "gpt-2".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf.quants import dequantize, quantize

GGUF_ARCH = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma": "gemma",
             "gemma2": "gemma2", "gemma3_text": "gemma3", "phi3": "phi3"}
"""mlx-lm ``model_type`` -> GGUF ``general.architecture``."""

Config = dict[str, Any]


def write_like_llama_cpp(model_dir: Path, dest: Path,
                         quantized: dict[str, gguf.GGMLQuantizationType] | None = None) -> Path:
    """Write the mlx-lm folder ``model_dir`` (float weights) as the GGUF ``dest``; every tensor
    is F32 except those named (by mlx-lm / Hugging Face name) in ``quantized``."""
    import mlx.core as mx

    config = json.loads((model_dir / "config.json").read_text())
    arch = GGUF_ARCH[config["model_type"]]
    writer = gguf.GGUFWriter(str(dest), arch)
    _METADATA[arch](writer, config)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    _write_vocab(writer, model_dir)

    model_arch = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(model_arch, config["num_hidden_layers"])
    weights = mx.load(str(model_dir / "model.safetensors"))
    for name in sorted(weights):
        data = np.array(weights[name].astype(mx.float32))
        data = _modify_tensor(arch, name, data, config)
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(f"llama.cpp's {arch} has no tensor for {name}")
        qtype = (quantized or {}).get(name)
        if qtype is None:
            writer.add_tensor(gguf_name, data)
        else:
            writer.add_tensor(gguf_name, quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dest


def round_trip(data: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """``data`` quantized to ``qtype`` and back: what a reader of the GGUF sees."""
    return dequantize(quantize(data.astype(np.float32), qtype), qtype).reshape(data.shape)


def permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """``LlamaModel.permute``, verbatim in numpy."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


def _modify_tensor(arch: str, name: str, data: np.ndarray, config: Config) -> np.ndarray:
    """What each converter class's ``modify_tensors`` does to a tensor before naming it."""
    if arch == "llama":
        n_head, n_kv_head = config["num_attention_heads"], config.get("num_key_value_heads")
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            return permute(data, n_head, n_head)
        if name.endswith(("k_proj.weight", "k_proj.bias")):
            return permute(data, n_head, n_kv_head)
    if arch in ("gemma", "gemma2", "gemma3") and name.endswith("norm.weight"):
        return data + 1
    return data


# --- metadata: each converter class's set_gguf_parameters -------------------------------


def _text_model(w: gguf.GGUFWriter, c: Config) -> None:
    """``TextModel.set_gguf_parameters`` for the keys a plain decoder config has."""
    w.add_block_count(c["num_hidden_layers"])
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"])
    w.add_head_count_kv(c["num_key_value_heads"])
    if "rope_theta" in c:
        w.add_rope_freq_base(c["rope_theta"])
    scaling = c.get("rope_scaling") or {}
    if scaling.get("rope_type", scaling.get("type")) == "linear" and "factor" in scaling:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(scaling["factor"])
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    if "head_dim" in c:
        w.add_key_length(c["head_dim"])
        w.add_value_length(c["head_dim"])


def _llama(w: gguf.GGUFWriter, c: Config) -> None:
    _text_model(w, c)
    w.add_vocab_size(c["vocab_size"])
    w.add_rope_dimension_count(c.get("head_dim", c["hidden_size"] // c["num_attention_heads"]))


def _gemma(w: gguf.GGUFWriter, c: Config) -> None:
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_block_count(c["num_hidden_layers"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"])
    w.add_head_count_kv(c.get("num_key_value_heads", c["num_attention_heads"]))
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_key_length(c["head_dim"])
    w.add_value_length(c["head_dim"])


def _gemma2(w: gguf.GGUFWriter, c: Config) -> None:
    _gemma(w, c)
    w.add_attn_logit_softcapping(c["attn_logit_softcapping"])
    w.add_final_logit_softcapping(c["final_logit_softcapping"])
    w.add_sliding_window(c["sliding_window"])


def _gemma3(w: gguf.GGUFWriter, c: Config) -> None:
    _text_model(w, c)  # which writes rope_theta, the global layers' base, when given
    if "rope_theta" not in c:
        w.add_rope_freq_base(1_000_000.0)
    if final_logit_softcap := c.get("final_logit_softcapping"):
        w.add_final_logit_softcapping(final_logit_softcap)
    if c.get("sliding_window_pattern") != 1:
        w.add_sliding_window(c["sliding_window"])


def _phi3(w: gguf.GGUFWriter, c: Config) -> None:
    n_embd, n_head = c["hidden_size"], c["num_attention_heads"]
    w.add_context_length(c["max_position_embeddings"])
    w.add_rope_scaling_orig_ctx_len(c["original_max_position_embeddings"])
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_block_count(c["num_hidden_layers"])
    w.add_head_count(n_head)
    w.add_head_count_kv(c["num_key_value_heads"])
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_rope_dimension_count(int(c.get("partial_rotary_factor", 1.0) * n_embd) // n_head)
    w.add_rope_freq_base(c["rope_theta"])
    w.add_sliding_window(c.get("sliding_window") or 0)


_METADATA: dict[str, Callable[[gguf.GGUFWriter, Config], None]] = {
    "llama": _llama, "qwen2": _text_model, "qwen3": _text_model, "gemma": _gemma,
    "gemma2": _gemma2, "gemma3": _gemma3, "phi3": _phi3,
}


def _write_vocab(w: gguf.GGUFWriter, model_dir: Path) -> None:
    """``_set_vocab_gpt2`` for a byte-level BPE tokenizer.json."""
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    by_id = {i: t for t, i in tokenizer["model"]["vocab"].items()}
    special = {}
    for added in tokenizer["added_tokens"]:
        by_id[added["id"]] = added["content"]
        special[added["id"]] = added["special"]
    tokens = [by_id[i] for i in range(len(by_id))]
    types = [gguf.TokenType.CONTROL if special.get(i) else gguf.TokenType.NORMAL
             for i in range(len(tokens))]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    gguf.SpecialVocab(model_dir, load_merges=True).add_to_gguf(w, quiet=True)

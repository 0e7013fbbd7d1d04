"""What each GGUF architecture is in mlx-lm: its config.json and its tensors' names.

llama.cpp's converter (``convert_hf_to_gguf.py``) renames Hugging Face tensors to ggml names and
changes some on the way; importing undoes exactly that:

- **llama** (also Mistral 7B and SmolLM, which llama.cpp writes as ``llama``): Q and K rows are
  permuted for ggml's rotary layout; undone (``permute_rope``).
- **gemma, gemma2, gemma3**: RMSNorm weights are stored as ``1 + w`` (ggml multiplies by the
  weight, Gemma's norm by ``1 + w``); mlx-lm's Gemma norms add the 1 themselves, so it is taken
  off again (``norm_shift``). Gemma 2/3's extra norms around attention and the MLP keep their
  Hugging Face names.
- **qwen2**: biases on Q, K and V. **qwen3**: RMSNorm on Q and K per head.
- **phi3**: Q, K and V are one fused tensor, and so are the MLP's gate and up projections:
  mlx-lm's phi3 has the same fused modules, so nothing is split.

Anything the config needs that the file does not say (a rope-scaling kind, LongRoPE factors, a
mixture of experts) is refused by name rather than guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Metadata = dict[str, Any]


class UnsupportedModelError(Exception):
    """The GGUF describes a model this importer cannot rebuild exactly; the message says why."""


_COMMON_LAYER = {
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
_QK_NORMS = {"attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}
_GEMMA2_NORMS = {  # llama.cpp's names for Gemma 2/3's four norms per layer
    "attn_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
GLOBAL_MODULES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}


@dataclass(frozen=True)
class Architecture:
    """One GGUF ``general.architecture`` and how it becomes an mlx-lm model folder."""

    name: str
    layer_modules: dict[str, str]
    """ggml tensor stem inside ``blk.N.`` -> module path inside ``model.layers.N.``."""
    config: Callable[[Metadata, int, bool], dict[str, Any]]
    """(metadata, vocabulary size, tied embeddings) -> config.json."""
    permute_rope: bool = False
    norm_shift: float = 0.0
    biases: frozenset[str] = frozenset()
    """Layer tensor stems that also have a ``.bias`` (qwen2's Q, K and V)."""
    refuse_tensors: dict[str, str] = field(default_factory=dict)
    """Tensor names whose presence means a model we cannot rebuild, and why."""


def _reader(meta: Metadata, arch: str) -> Callable[..., Any]:
    def value(key: str, default: Any = ...) -> Any:
        full = f"{arch}.{key}"
        if full in meta:
            return meta[full]
        if default is ...:
            raise UnsupportedModelError(f"GGUF metadata lacks {full}")
        return default
    return value


def _base(meta: Metadata, arch: str, vocab: int, tied: bool) -> dict[str, Any]:
    """The fields every decoder shares, from ``{arch}.*``."""
    value = _reader(meta, arch)
    if value("expert_count", 0):
        raise UnsupportedModelError(f"mixture-of-experts {arch} models are not supported")
    hidden, heads = value("embedding_length"), value("attention.head_count")
    head_dim = value("attention.key_length", hidden // heads)
    if value("attention.value_length", head_dim) != head_dim:
        raise UnsupportedModelError("attention with different key and value head sizes")
    if value("rope.dimension_count", head_dim) != head_dim:
        raise UnsupportedModelError("partial rotary embeddings (rope.dimension_count)")
    config: dict[str, Any] = {
        "hidden_size": hidden,
        "num_hidden_layers": value("block_count"),
        "intermediate_size": value("feed_forward_length"),
        "num_attention_heads": heads,
        "num_key_value_heads": value("attention.head_count_kv", heads),
        "head_dim": head_dim,
        "rms_norm_eps": value("attention.layer_norm_rms_epsilon"),
        "vocab_size": vocab,
        "max_position_embeddings": value("context_length"),
        "rope_theta": value("rope.freq_base", 10000.0),
        "tie_word_embeddings": tied,
    }
    scaling = value("rope.scaling.type", "none")
    if scaling == "linear":
        config["rope_scaling"] = {"type": "linear", "factor": value("rope.scaling.factor")}
    elif scaling == "yarn" and arch in ("qwen2", "qwen3"):
        config["rope_scaling"] = {
            "type": "yarn", "factor": value("rope.scaling.factor"),
            "original_max_position_embeddings": value("rope.scaling.original_context_length"),
        }
    elif scaling != "none":
        raise UnsupportedModelError(f'rope scaling "{scaling}" for {arch}')
    return config


def _llama(meta: Metadata, vocab: int, tied: bool) -> dict[str, Any]:
    config = _base(meta, "llama", vocab, tied)
    if config["head_dim"] == config["hidden_size"] // config["num_attention_heads"]:
        del config["head_dim"]
    return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], **config}


def _qwen2(meta: Metadata, vocab: int, tied: bool) -> dict[str, Any]:
    config = _base(meta, "qwen2", vocab, tied)
    del config["head_dim"]  # qwen2 derives it
    return {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], **config}


def _qwen3(meta: Metadata, vocab: int, tied: bool) -> dict[str, Any]:
    return {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"],
            **_base(meta, "qwen3", vocab, tied)}


def _gemma(meta: Metadata, vocab: int, tied: bool) -> dict[str, Any]:
    config = _base(meta, "gemma", vocab, tied)
    _require_tied(config, "gemma")
    return {"model_type": "gemma", "architectures": ["GemmaForCausalLM"], **config}


def _gemma2(meta: Metadata, vocab: int, tied: bool) -> dict[str, Any]:
    value = _reader(meta, "gemma2")
    config = _base(meta, "gemma2", vocab, tied)
    _require_tied(config, "gemma2")
    config.update(
        attn_logit_softcapping=value("attn_logit_softcapping", 50.0),
        final_logit_softcapping=value("final_logit_softcapping", 30.0),
        query_pre_attn_scalar=_query_pre_attn_scalar(config),
    )
    # mlx-lm 0.32.2's gemma2 attends globally on every layer; Gemma 2's even layers see only a
    # window (4096). Within the window that is the same model, so the context stops there.
    window = value("attention.sliding_window", config["max_position_embeddings"])
    config["max_position_embeddings"] = min(config["max_position_embeddings"], window)
    return {"model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"], **config}


def _gemma3(meta: Metadata, vocab: int, tied: bool) -> dict[str, Any]:
    value = _reader(meta, "gemma3")
    config = _base(meta, "gemma3", vocab, tied)
    _require_tied(config, "gemma3")
    if "gemma3.final_logit_softcapping" in meta or "gemma3.attn_logit_softcapping" in meta:
        raise UnsupportedModelError("gemma3 with logit soft-capping")
    config.update(
        query_pre_attn_scalar=_query_pre_attn_scalar(config),
        sliding_window=value("attention.sliding_window"),
        sliding_window_pattern=_window_pattern(value("attention.sliding_window_pattern", 6),
                                               config["num_hidden_layers"]),
        rope_local_base_freq=value("rope.freq_base_swa", 10000.0),  # llama.cpp's defaults
    )
    return {"model_type": "gemma3_text", "architectures": ["Gemma3ForCausalLM"], **config}


def _phi3(meta: Metadata, vocab: int, tied: bool) -> dict[str, Any]:
    value = _reader(meta, "phi3")
    config = _base(meta, "phi3", vocab, tied)
    del config["head_dim"]
    config["original_max_position_embeddings"] = value(
        "rope.scaling.original_context_length", config["max_position_embeddings"])
    return {"model_type": "phi3", "architectures": ["Phi3ForCausalLM"], **config}


def _window_pattern(pattern: Any, layers: int) -> int:
    """mlx-lm's ``sliding_window_pattern`` p (layer i is global when (i + 1) % p == 0) from
    llama.cpp's key: that number, or per-layer flags (true: sliding) of that shape."""
    if isinstance(pattern, int):
        return pattern
    flags = [bool(f) for f in pattern]
    for p in range(1, layers + 2):
        if flags == [(i + 1) % p != 0 for i in range(layers)]:
            return p
    raise UnsupportedModelError("gemma3 with an irregular sliding-window layer pattern")


def _query_pre_attn_scalar(config: dict[str, Any]) -> int:
    # Not in GGUF metadata: llama.cpp scales by 1/sqrt(head_dim) except for Gemma 2/3 27B
    # (hidden / heads); which it is, it tells from the layer count.
    if config["num_hidden_layers"] in (46, 62):
        return config["hidden_size"] // config["num_attention_heads"]
    return config["head_dim"]  # an int, as transformers' config classes insist


def _require_tied(config: dict[str, Any], arch: str) -> None:
    if not config["tie_word_embeddings"]:
        raise UnsupportedModelError(f"{arch} with a separate output matrix")


ARCHITECTURES = {a.name: a for a in (
    Architecture("llama", _COMMON_LAYER, _llama, permute_rope=True,
                 refuse_tensors={"rope_freqs.weight": "llama 3.1-style rope frequency scaling "
                                                      "(rope_freqs)"}),
    Architecture("qwen2", _COMMON_LAYER, _qwen2,
                 biases=frozenset({"attn_q", "attn_k", "attn_v"})),
    Architecture("qwen3", {**_COMMON_LAYER, **_QK_NORMS}, _qwen3),
    Architecture("gemma", _COMMON_LAYER, _gemma, norm_shift=1.0),
    Architecture("gemma2", {**_COMMON_LAYER, **_GEMMA2_NORMS}, _gemma2, norm_shift=1.0),
    Architecture("gemma3", {**_COMMON_LAYER, **_GEMMA2_NORMS, **_QK_NORMS}, _gemma3,
                 norm_shift=1.0),
    Architecture("phi3", {"attn_qkv": "self_attn.qkv_proj", "attn_output": "self_attn.o_proj",
                          "ffn_up": "mlp.gate_up_proj", "ffn_down": "mlp.down_proj",
                          "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"},
                 _phi3, refuse_tensors={"rope_factors_long.weight": "phi3 LongRoPE scaling",
                                        "rope_factors_short.weight": "phi3 LongRoPE scaling"}),
)}

"""Every architecture the GGUF importer supports, proven on a file written as llama.cpp writes it.

Only llama and gemma3 have real files in the tests; the other mappings (qwen2's biases, qwen3's
Q/K norms, Gemma's ``1 + w`` norms, Gemma 2's soft-capping, phi3's fused tensors, the llama Q/K
permutation) would otherwise rest on reading llama.cpp's converter right. So for each
architecture a tiny random mlx-lm model is written as a GGUF by ``gguf_writer`` (which redoes
what ``convert_hf_to_gguf.py`` does, with llama.cpp's own ``gguf`` package), imported, and
judged twice:

- against the mlx-lm model it came from: the same logits up to float32 rounding (with a
  quantized tensor, against that model holding the tensor's dequantized values);
- against llama.cpp running the same file: the same top-1 token and a negligible KL
  divergence. llama.cpp is the independent judge: were the writer and the importer to share a
  misreading of the converter, llama.cpp would disagree with both.

Each architecture is written twice: all F32, and with one tensor quantized (a different ggml
type per architecture, on a tensor the importer transforms where there is one) to cover the
mixed path. llama.cpp quantizes activations in its quantized matmuls, so the strict comparison
for a mixed file is with llama.cpp running its float32 copy (weights dequantized by ``gguf``);
on the file itself it must still agree closely.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_unflatten

from tests.gguf import oracle
from tests.gguf.gguf_writer import round_trip, write_like_llama_cpp
from tests.tiny_families import family_config
from tests.tiny_model import build_tiny_model
from triton_mlx.gguf import import_gguf

FAMILIES = ("llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3")
POSITIONS = 64
Q = gguf.GGMLQuantizationType

# The tensor quantized in each family's mixed file: K of a GQA llama (permuted, then packed),
# qwen2's Q beside its float bias, Gemma's tied embedding (a quantized embedding and lm_head),
# phi3's fused QKV; a different ggml type each.
QUANTIZED: dict[str, tuple[str, gguf.GGMLQuantizationType]] = {
    "llama": ("model.layers.1.self_attn.k_proj.weight", Q.Q8_0),
    "qwen2": ("model.layers.0.self_attn.q_proj.weight", Q.Q5_0),
    "qwen3": ("model.layers.1.mlp.down_proj.weight", Q.Q4_1),
    "gemma": ("model.embed_tokens.weight", Q.Q8_0),
    "gemma2": ("model.layers.0.mlp.gate_proj.weight", Q.Q5_1),
    "gemma3": ("model.layers.0.self_attn.o_proj.weight", Q.Q4_0),
    "phi3": ("model.layers.0.self_attn.qkv_proj.weight", Q.Q8_0),
}


def tiny_config(family: str, vocab_size: int, eos_token_id: int) -> dict[str, Any]:
    """``tiny_families``' config for ``family``, with what makes each mapping observable:
    non-default rope bases and linear rope scaling (both written to the file), an untied
    llama (``output.weight``), Gemma 2 soft-capping that bites, and a Gemma 3 whose pattern
    llama.cpp can express (it hard-codes one global layer in six) with a window the 64
    positions exceed."""
    if family == "gemma":  # not in tiny_families: Gemma 2's shape without its extras
        config = family_config("gemma2", vocab_size, eos_token_id)
        config.pop("query_pre_attn_scalar")
        return {**config, "model_type": "gemma"}
    config = family_config(family, vocab_size, eos_token_id)
    if family == "llama":
        config.update(tie_word_embeddings=False, rope_theta=500_000.0,
                      rope_scaling={"type": "linear", "factor": 2.0})
    elif family == "gemma2":
        config.update(attn_logit_softcapping=1.0, final_logit_softcapping=2.0,
                      sliding_window=4096)
    elif family == "gemma3":
        config.update(num_hidden_layers=7, sliding_window_pattern=6, sliding_window=8,
                      rope_theta=1_000_000.0, rope_scaling={"type": "linear", "factor": 8.0},
                      tie_word_embeddings=True)
    return config


def build_source(dest: Path, family: str, seed: int = 0) -> Path:
    """A tiny random mlx-lm folder of ``family`` with the tiny BPE tokenizer. Every norm
    weight is random too (around 1, or around 0 for Gemma's ``1 + w`` norms), so a norm
    mapped to the wrong place, or shifted wrongly, shows."""
    build_tiny_model(dest, seed=seed)
    base = json.loads((dest / "config.json").read_text())
    config = tiny_config(family, base["vocab_size"], base["eos_token_id"])
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    arch = importlib.import_module(f"mlx_lm.models.{config['model_type']}")
    mx.random.seed(seed)
    weights = dict(tree_flatten(arch.Model(arch.ModelArgs.from_dict(config)).parameters()))
    if config.get("tie_word_embeddings"):
        weights.pop("lm_head.weight", None)  # a tied checkpoint has none (gemma3's class does)
    rng = np.random.default_rng(seed)
    offset = 0.0 if family.startswith("gemma") else 1.0
    for name, value in weights.items():
        if name.endswith("norm.weight"):
            weights[name] = mx.array(rng.uniform(-0.5, 0.5, value.shape) + offset, mx.float32)
    mx.save_safetensors(str(dest / "model.safetensors"), weights, metadata={"format": "mlx"})
    return dest


@dataclass
class Case:
    family: str
    variant: str  # "f32" or "mixed"
    quantized: tuple[str, gguf.GGMLQuantizationType] | None
    report: Any  # the importer's ImportReport
    reference: np.ndarray  # the source mlx-lm model's logits (dequantized tensor if mixed)
    ours: np.ndarray  # the imported model's logits
    llama_cpp_exact: np.ndarray  # llama.cpp on the file's exact weights, in float32
    llama_cpp_file: np.ndarray  # llama.cpp on the file itself


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    return {family: build_source(root / family, family) for family in FAMILIES}


@pytest.fixture(scope="module",
                params=[(f, v) for f in FAMILIES for v in ("f32", "mixed")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def case(request, sources, tmp_path_factory) -> Case:
    from mlx_lm.utils import load_model

    family, variant = request.param
    work = tmp_path_factory.mktemp(f"{family}-{variant}")
    source = sources[family]
    quantized = QUANTIZED[family] if variant == "mixed" else None
    gguf_path = write_like_llama_cpp(source, work / f"{family}.gguf",
                                     dict([quantized]) if quantized else None)
    report = import_gguf(gguf_path, work / "imported")
    ours, _ = oracle.our_model(report.dest)

    reference, _ = load_model(source)
    if quantized:
        name, qtype = quantized
        original = np.array(dict(tree_flatten(reference.parameters()))[name])
        reference.update(tree_unflatten([(name, mx.array(round_trip(original, qtype)))]))

    vocab = json.loads((source / "config.json").read_text())["vocab_size"]
    tokens = np.random.default_rng(1).integers(3, vocab, POSITIONS).tolist()  # no specials
    from_file = oracle.llama_cpp_logits(gguf_path, tokens)
    exact = (oracle.llama_cpp_logits(oracle.float32_copy(gguf_path, work / "f32.gguf"), tokens)
             if quantized else from_file)
    return Case(family, variant, quantized, report, oracle.our_logits(reference, tokens),
                oracle.our_logits(ours, tokens), exact, from_file)


def test_import_reproduces_the_mlx_lm_model(case):
    scale = np.abs(case.reference).max()
    diff = np.abs(case.ours - case.reference).max()
    assert diff <= 1e-4 * scale, (diff, scale)
    assert (case.ours.argmax(axis=1) == case.reference.argmax(axis=1)).all()


def test_import_agrees_with_llama_cpp(case):
    exact = oracle.agreement(case.llama_cpp_exact, case.ours)
    assert exact.top1 >= 0.99, exact
    assert exact.mean_kl <= 1e-5 and exact.max_kl <= 1e-4, exact
    if case.quantized:  # llama.cpp's quantized matmul also rounds the activations
        itself = oracle.agreement(case.llama_cpp_file, case.ours)
        assert itself.top1 >= 0.95 and itself.mean_kl <= 1e-3, itself


def test_import_report_says_what_was_kept(case):
    lines = {name: line.action for name, line in case.report.by_type.items()}
    if case.quantized is None:
        assert lines == {"F32": "kept as float32"}
    else:
        qtype = case.quantized[1]
        bits = {Q.Q8_0: 8, Q.Q5_0: 5, Q.Q5_1: 5, Q.Q4_0: 4, Q.Q4_1: 4}[qtype]
        assert lines == {"F32": "kept as float32", qtype.name: f"kept as {bits}-bit"}
        assert case.report.by_type[qtype.name].tensors == 1


# --- metadata llama.cpp reads that the tiny files above leave at their defaults ----------


def _gemma_meta(arch: str, **extra) -> dict:
    base = {"block_count": 6, "embedding_length": 64, "feed_forward_length": 128,
            "attention.head_count": 4, "attention.head_count_kv": 1, "attention.key_length": 16,
            "attention.value_length": 16, "attention.layer_norm_rms_epsilon": 1e-6,
            "context_length": 8192, "attention.sliding_window": 4096}
    return {f"{arch}.{k}": v for k, v in {**base, **extra}.items()}


def test_gemma3_reads_the_local_rope_base_and_the_window_pattern():
    from triton_mlx.gguf.architectures import ARCHITECTURES, UnsupportedModelError

    gemma3 = ARCHITECTURES["gemma3"].config
    default = gemma3(_gemma_meta("gemma3"), 300, True)
    assert (default["rope_local_base_freq"], default["sliding_window_pattern"]) == (10000.0, 6)
    flags = [True, True, False, True, True, False]  # every third layer global
    config = gemma3(_gemma_meta("gemma3", **{"rope.freq_base_swa": 1e6,
                                             "attention.sliding_window_pattern": flags}), 300, True)
    assert (config["rope_local_base_freq"], config["sliding_window_pattern"]) == (1e6, 3)
    irregular = [True, False, False, True, True, False]
    with pytest.raises(UnsupportedModelError, match="irregular"):
        gemma3(_gemma_meta("gemma3", **{"attention.sliding_window_pattern": irregular}), 300, True)


def test_gemma2_context_stops_at_its_window():
    """mlx-lm's gemma2 has no sliding window: past it the model would not be Gemma 2."""
    from triton_mlx.gguf.architectures import ARCHITECTURES

    config = ARCHITECTURES["gemma2"].config(_gemma_meta("gemma2"), 300, True)
    assert config["max_position_embeddings"] == 4096

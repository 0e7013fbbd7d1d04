"""Runtime profiles: the choice (pure), the float32 size estimate and the conversions."""

import os

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten
from mlx_lm.models import llama

from triton_mlx.engine.runtime_profile import (
    apply_profile,
    choose_profile,
    dense_float32_bytes,
    dequantize_layers,
    dequantized_bytes,
    is_quantized,
    memory_budget_bytes,
    prepare_model,
)

BLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"
MB = 1024**2


def choose(requested="auto", *, on_gpu=False, blas=BLAS, quantized=True,
           dense=538 * MB, budget=8 * 1024 * MB, cuda=False, dequantized=0):
    return choose_profile(requested, on_gpu=on_gpu, blas=blas, quantized=quantized,
                          dense_float32_bytes=dense, budget_bytes=budget, cuda=cuda,
                          dequantized_bytes=dequantized)


@pytest.mark.parametrize("cuda", [False, True])
@pytest.mark.parametrize("requested", ["auto", "fast", "small"])
def test_gpu_keeps_an_unquantized_model_as_stored_whatever_is_requested(requested, cuda):
    profile = choose(requested, on_gpu=True, blas=None, quantized=False, cuda=cuda)
    assert (profile.name, profile.device, profile.weights) == ("gpu", "gpu", "as stored")
    assert not profile.warning
    assert ("only changes quantized models" in profile.reason) == (requested != "auto")


GPU_BUDGET = 16 * 1024 * MB  # dense weights must fit half of it


@pytest.mark.parametrize("kwargs, name, words, warning", [
    ({"cuda": True, "dequantized": 8 * 1024 * MB}, "gpu-dense", ["auto", "CUDA", "8.0 GiB"],
     False),
    ({"cuda": True, "dequantized": 8 * 1024 * MB + 1}, "gpu", ["auto", "would exceed"], False),
    ({"cuda": False, "dequantized": MB}, "gpu", ["auto", "Metal"], False),
    ({"cuda": True, "dequantized": MB, "requested": "small"}, "gpu", ["forced"], False),
    ({"cuda": False, "dequantized": MB, "requested": "fast"}, "gpu-dense", ["forced"], False),
    ({"cuda": True, "dequantized": 9 * 1024 * MB, "requested": "fast"}, "gpu-dense",
     ["forced", "exceed"], True),
])
def test_gpu_choices_for_a_quantized_model(kwargs, name, words, warning):
    profile = choose(on_gpu=True, blas=None, budget=GPU_BUDGET, **kwargs)
    assert profile.name == name and profile.device == "gpu" and profile.warning is warning
    for word in words:
        assert word in profile.reason
    if name == "gpu":
        assert profile.weights == "as stored"
    else:
        assert profile.weights.startswith("quantized layers dequantized, ")


@pytest.mark.parametrize("kwargs, name, words, warning", [
    ({}, "cpu-fast", ["auto", "538 MiB", "8.0 GiB"], False),
    ({"dense": 9 * 1024 * MB}, "cpu-small", ["auto", "9.0 GiB", "exceed", "8.0 GiB"], False),
    ({"blas": None}, "cpu-small", ["auto", "no optimized BLAS"], False),
    ({"requested": "small"}, "cpu-small", ["forced"], False),
    ({"requested": "fast"}, "cpu-fast", ["forced"], False),
    ({"requested": "fast", "blas": None}, "cpu-fast", ["forced", "no optimized BLAS"], True),
    ({"requested": "fast", "dense": 9 * 1024 * MB}, "cpu-fast", ["forced", "exceed"], True),
])
def test_cpu_choices(kwargs, name, words, warning):
    profile = choose(**kwargs)
    assert profile.name == name and profile.device == "cpu" and profile.warning is warning
    for word in words:
        assert word in profile.reason
    assert profile.as_dict()["reason"] == profile.reason
    assert name in profile.describe() and profile.reason in profile.describe()


def test_weights_descriptions():
    assert choose().weights == "dense float32, 538 MiB"
    assert "quantized as stored" in choose("small").weights
    assert choose("small", quantized=False).weights.startswith("as stored")


def test_unknown_request_is_refused():
    with pytest.raises(ValueError, match="medium"):
        choose("medium")


def test_memory_budget():
    assert memory_budget_bytes(2.5) == int(2.5 * 1024**3)
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert memory_budget_bytes(None) == physical // 2


def tiny_llama(dtype=mx.float32) -> llama.Model:
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs(
        model_type="llama", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=96,
        tie_word_embeddings=True))
    model.set_dtype(dtype)
    mx.eval(model.parameters())
    return model


def quantize(model: nn.Module) -> nn.Module:
    """4-bit everywhere but an 8-bit embedding, like the demo model."""
    nn.quantize(model, group_size=32, bits=4, class_predicate=lambda path, module: (
        {"group_size": 32, "bits": 8} if isinstance(module, nn.Embedding)
        else hasattr(module, "to_quantized")))
    mx.eval(model.parameters())
    return model


def params(model) -> dict[str, mx.array]:
    return dict(tree_flatten(model.parameters()))


def test_dense_float32_bytes_counts_quantized_layers_as_dense():
    model = tiny_llama()
    dense = sum(p.nbytes for p in params(model).values())
    assert dense_float32_bytes(model) == dense
    quantize(model)
    assert is_quantized(model) and model.model.embed_tokens.bits == 8
    assert dense_float32_bytes(model) == dense
    assert dense_float32_bytes(tiny_llama(mx.float16)) == dense


def test_cpu_fast_dequantizes_to_float32_with_the_same_logits():
    model = quantize(tiny_llama())
    tokens = mx.array([[1, 5, 9, 17, 33]])
    expected = model(tokens)
    apply_profile(model, choose("fast"))
    assert not is_quantized(model)
    assert all(p.dtype == mx.float32 for p in params(model).values())
    assert isinstance(model.model.layers[0].self_attn.q_proj, nn.Linear)
    logits = model(tokens)
    relative = mx.abs(logits - expected).max() / mx.abs(expected).max()
    assert relative.item() < 1e-4


def test_cpu_small_keeps_quantized_layers_with_float32_scales():
    model = quantize(tiny_llama(mx.float16))
    assert model.model.layers[0].mlp.up_proj.scales.dtype == mx.float16
    apply_profile(model, choose("small"))
    layer = model.model.layers[0]
    assert isinstance(layer.mlp.up_proj, nn.QuantizedLinear)
    assert layer.mlp.up_proj.weight.dtype == mx.uint32
    assert layer.mlp.up_proj.scales.dtype == mx.float32
    assert layer.mlp.up_proj.biases.dtype == mx.float32
    assert model.model.embed_tokens.scales.dtype == mx.float32
    assert layer.input_layernorm.weight.dtype == mx.float32
    assert model(mx.array([[1, 2, 3]])).dtype == mx.float32


def test_cpu_small_keeps_half_precision_matrices_of_an_unquantized_model():
    model = tiny_llama(mx.bfloat16)
    apply_profile(model, choose("small", quantized=False))
    layer = model.model.layers[0]
    assert layer.self_attn.q_proj.weight.dtype == mx.bfloat16
    assert model.model.embed_tokens.weight.dtype == mx.bfloat16
    assert layer.post_attention_layernorm.weight.dtype == mx.float32
    assert model.model.norm.weight.dtype == mx.float32


def test_dequantized_bytes_counts_quantized_weights_in_their_scales_dtype():
    model = tiny_llama(mx.bfloat16)
    dense = sum(p.nbytes for p in params(model).values())
    quantize(model)
    assert model.model.layers[0].mlp.up_proj.scales.dtype == mx.bfloat16
    assert dequantized_bytes(model) == dense
    apply_profile(model, choose(on_gpu=True, cuda=True, dequantized=dense,
                                budget=4 * dense))
    assert not is_quantized(model)
    assert sum(p.nbytes for p in params(model).values()) == dense


def test_gpu_dense_dequantizes_in_the_scales_dtype_with_the_same_logits():
    model = quantize(tiny_llama(mx.float16))
    tokens = mx.array([[1, 5, 9, 17, 33]])
    expected = model(tokens).astype(mx.float32)
    profile = choose(on_gpu=True, cuda=True, dequantized=MB, budget=GPU_BUDGET)
    assert profile.name == "gpu-dense"
    apply_profile(model, profile)
    assert not is_quantized(model)
    assert isinstance(model.model.layers[0].self_attn.q_proj, nn.Linear)
    assert model.model.layers[0].mlp.down_proj.weight.dtype == mx.float16
    assert model.model.embed_tokens.weight.dtype == mx.float16
    logits = model(tokens).astype(mx.float32)
    relative = mx.abs(logits - expected).max() / mx.abs(expected).max()
    assert relative.item() < 1e-2  # float16 accumulation in one path, not the other


def test_dequantize_layers_makes_tensor_parallel_layers_dense_too():
    from mlx.nn.layers.distributed import (
        AllToShardedLinear,
        ShardedToAllLinear,
        shard_linear,
    )

    group = mx.distributed.init()  # one process: a group of one, whose all-sum is the identity
    mx.random.seed(1)
    block = nn.Module()
    block.up = nn.QuantizedLinear(64, 128, bias=True, group_size=32, bits=4)
    block.down = nn.QuantizedLinear(128, 64, bias=False, group_size=32, bits=4)
    x = mx.random.normal((3, 64))
    expected = block.down(block.up(x))
    block.up = shard_linear(block.up, "all-to-sharded", group=group)
    block.down = shard_linear(block.down, "sharded-to-all", group=group)
    assert is_quantized(block)
    dequantize_layers(block)
    assert type(block.up) is AllToShardedLinear and type(block.down) is ShardedToAllLinear
    assert not is_quantized(block)
    assert block.up.weight.dtype == mx.float32 and "bias" in block.up
    assert mx.allclose(block.down(block.up(x)), expected, atol=1e-4).item()


def test_gpu_profile_converts_nothing():
    model = quantize(tiny_llama(mx.float16))
    before = {k: (v.dtype, v.shape) for k, v in params(model).items()}
    apply_profile(model, choose(on_gpu=True))
    assert {k: (v.dtype, v.shape) for k, v in params(model).items()} == before


def test_prepare_model_reports_what_it_applied():
    model = quantize(tiny_llama())
    profile = prepare_model(model, "small", max_memory_gb=1.0)
    assert profile.name in ("cpu-small", "gpu") and is_quantized(model)


@pytest.mark.parametrize("max_memory_gb, name", [(None, "gpu-dense"), (1e-4, "gpu")])
def test_prepare_model_on_cuda_dequantizes_a_quantized_model_that_fits(monkeypatch,
                                                                       max_memory_gb, name):
    from triton_mlx.engine import kv_budget, runtime_profile

    monkeypatch.setattr(runtime_profile, "on_gpu", lambda: True)
    monkeypatch.setattr(runtime_profile, "on_cuda", lambda: True)
    monkeypatch.setattr(kv_budget, "default_memory_budget", lambda: 8 * 1024 * MB)
    model = quantize(tiny_llama(mx.float16))
    profile = prepare_model(model, "auto", max_memory_gb=max_memory_gb)
    assert profile.name == name
    assert is_quantized(model) == (name == "gpu")
    if name == "gpu-dense":
        assert "4.0 GiB" in profile.reason  # half of the device's 8 GiB


def test_on_cuda_is_false_here_and_without_mlx_cuda(monkeypatch):
    from triton_mlx.engine import runtime_profile

    assert runtime_profile.on_cuda() is False  # this machine: MLX's CPU backend
    monkeypatch.delattr(mx, "cuda", raising=False)
    assert runtime_profile.on_cuda() is False

"""The unfused prompt attention used on CUDA: the same numbers as MLX's own attention, and the
cases it leaves to MLX's fused kernel. (On this CPU, MLX's attention is its unfused fallback,
so the two must agree to the last bit in float32.)"""

from __future__ import annotations

import mlx.core as mx
import pytest

from triton_mlx.engine import cuda_attention
from triton_mlx.engine.cuda_attention import prompt_attention, unfused_attention


def _qkv(batch: int, q_heads: int, kv_heads: int, length: int, keys: int):
    mx.random.seed(7)
    return (mx.random.normal((batch, q_heads, length, 16)),
            mx.random.normal((batch, kv_heads, keys, 16)),
            mx.random.normal((batch, kv_heads, keys, 16)))


def _bool_mask(shape: tuple[int, ...]) -> mx.array:
    mx.random.seed(3)
    mask = mx.random.uniform(shape=shape) > 0.3
    return mx.logical_or(mask, mx.arange(shape[-1]) == 0)  # every query sees one key at least


MASKS = {
    "none": lambda b, h, q, k: None,
    "causal": lambda b, h, q, k: "causal",
    "bool per row": lambda b, h, q, k: _bool_mask((b, 1, q, k)),
    "bool per head": lambda b, h, q, k: _bool_mask((b, h, q, k)),
    "bool 2-d": lambda b, h, q, k: _bool_mask((q, k)),
    "additive per row": lambda b, h, q, k: mx.where(_bool_mask((b, 1, q, k)), 0.0, -1e9),
}


@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize(("q_heads", "kv_heads", "length", "keys"), [
    (8, 2, 6, 6),    # grouped-query, a fresh prompt
    (8, 2, 5, 11),   # grouped-query, after a cached prefix (causal aligned to the last key)
    (4, 4, 7, 7),    # multi-head
    (6, 1, 3, 9),    # multi-query
])
def test_unfused_attention_matches_mlx(mask_kind, q_heads, kv_heads, length, keys):
    q, k, v = _qkv(3, q_heads, kv_heads, length, keys)
    mask = MASKS[mask_kind](3, q_heads, length, keys)
    expected = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask=mask)
    got = unfused_attention(q, k, v, 0.25, mask)
    assert got.shape == expected.shape
    assert mx.allclose(got, expected, atol=1e-5).item()


def test_unfused_attention_keeps_the_dtype():
    q, k, v = (a.astype(mx.bfloat16) for a in _qkv(2, 8, 2, 5, 5))
    got = unfused_attention(q, k, v, 0.25, "causal")
    expected = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask="causal")
    assert got.dtype == mx.bfloat16
    assert mx.allclose(got.astype(mx.float32), expected.astype(mx.float32), atol=2e-2).item()


def test_an_unknown_mask_name_is_refused():
    q, k, v = _qkv(1, 2, 2, 3, 3)
    with pytest.raises(ValueError, match="sliding"):
        unfused_attention(q, k, v, 0.25, "sliding")


@pytest.fixture
def fused_calls(monkeypatch):
    """MLX's fused attention, recording each call that reaches it."""
    calls = []
    original = mx.fast.scaled_dot_product_attention

    def fused(q, k, v, **kwargs):
        calls.append(q.shape)
        return original(q, k, v, **kwargs)

    monkeypatch.setattr(cuda_attention, "_fused", fused)
    return calls


def test_a_small_prompt_is_computed_unfused(fused_calls):
    q, k, v = _qkv(2, 8, 2, 6, 6)
    out = prompt_attention(q, k, v, scale=0.25, mask="causal")
    assert fused_calls == []
    expected = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask="causal")
    assert mx.allclose(out, expected, atol=1e-5).item()


@pytest.mark.parametrize("case", ["decode", "sinks", "stream", "large"])
def test_the_fused_kernel_keeps_what_it_does_best(case, fused_calls, monkeypatch):
    length = 1 if case == "decode" else 6
    q, k, v = _qkv(2, 8, 2, length, 6)
    kwargs = {}
    if case == "sinks":
        kwargs["sinks"] = mx.zeros((8,))
    elif case == "stream":
        kwargs["stream"] = mx.cpu
    elif case == "large":  # 2 x 8 x 6 x 6 scores, one over the limit
        monkeypatch.setattr(cuda_attention, "MAX_SCORES", 2 * 8 * 6 * 6 - 1)
    prompt_attention(q, k, v, scale=0.25, mask=None, **kwargs)
    assert fused_calls == [q.shape]


def test_install_replaces_mlx_attention_once(monkeypatch):
    original = mx.fast.scaled_dot_product_attention
    monkeypatch.setattr(cuda_attention, "_fused", None)
    monkeypatch.setattr(mx.fast, "scaled_dot_product_attention", original)
    cuda_attention.install()
    cuda_attention.install()
    assert mx.fast.scaled_dot_product_attention is prompt_attention
    assert cuda_attention._fused is original  # not the wrapper: no call loops back to itself

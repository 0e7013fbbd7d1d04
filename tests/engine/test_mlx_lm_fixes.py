"""The patches of ``mlx_lm_fixes``: each works, and each is still needed.

A "still needed" test runs mlx-lm's own unpatched code and asserts that it is still broken.
When one fails, the installed mlx-lm has fixed the bug: remove that patch (and its tests)."""

import inspect

import mlx.core as mx
import pytest
from mlx_lm.models import gemma2
from mlx_lm.models.cache import BatchKVCache

from triton_mlx.engine import mlx_lm_fixes

PROMPTS = [[5, 9, 17, 33, 2, 8, 11], [40, 41], [7, 7, 7, 60, 3]]


def tiny_gemma2() -> gemma2.Model:
    mx.random.seed(0)
    model = gemma2.Model(gemma2.ModelArgs(
        model_type="gemma2", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
        vocab_size=96, query_pre_attn_scalar=16))
    mx.eval(model.parameters())
    return model


def batch_matches_solo(model, prompts) -> bool:
    """Whether a left-padded batch (as mlx-lm's BatchGenerator builds it) gives every row the
    logits that row gets alone, for the prefill and for one decode step after it."""
    longest = max(len(p) for p in prompts)
    padding = [longest - len(p) for p in prompts]
    cache = [BatchKVCache(padding) for _ in model.layers]
    tokens = mx.array([[0] * pad + p for pad, p in zip(padding, prompts, strict=True)])
    try:
        prefill = model(tokens, cache=cache)[:, -1]
        step = model(mx.array([[1]] * len(prompts)), cache=cache)[:, -1]
        mx.eval(prefill, step)
    except ValueError:  # [broadcast_shapes] ...
        return False
    for row, prompt in enumerate(prompts):
        alone = model(mx.array([prompt + [1]]))[0]
        if not (mx.allclose(prefill[row], alone[-2], atol=1e-4)
                and mx.allclose(step[row], alone[-1], atol=1e-4)):
            return False
    return True


@pytest.fixture
def unpatched_gemma2(monkeypatch):
    mlx_lm_fixes.apply()
    monkeypatch.setattr(gemma2.Attention, "__call__", inspect.unwrap(gemma2.Attention.__call__))


@pytest.mark.parametrize("rows", [2, 3])  # 2 == kv heads: silently wrong; 3: an error
def test_gemma2_batched_attention_is_still_broken_in_mlx_lm(unpatched_gemma2, rows):
    assert not batch_matches_solo(tiny_gemma2(), PROMPTS[:rows]), (
        "mlx-lm's gemma2 attention now handles batched masks: remove the gemma2 patch from "
        "triton_mlx/engine/mlx_lm_fixes.py")


@pytest.mark.parametrize("rows", [1, 2, 3])
def test_patched_gemma2_batch_equals_solo(rows):
    mlx_lm_fixes.apply()
    mlx_lm_fixes.apply()  # idempotent: wraps once
    assert gemma2.Attention.__call__.__wrapped__ is inspect.unwrap(gemma2.Attention.__call__)
    assert batch_matches_solo(tiny_gemma2(), PROMPTS[:rows])

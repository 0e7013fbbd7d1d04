"""A lone sequence's decode step for mlx-lm's Llama and Qwen models, from compiled pieces.

Why. A batch-of-one decode step is bound by the host building its graph, not by the device: a
16-layer Llama creates ~400 MLX operations from Python per token (norms, projections, reshapes,
rotary embedding, cache update, attention, MLP, residuals), and on MLX's CUDA backend that
building took most of the ~2 ms per token of mlx-lm's ``generate_step`` and of our lone path
alike. Everything a layer does between two KV-cache updates (its MLP and residuals, then the
next layer's norm, projections and rotary embedding) depends only on arrays, so it compiles
(``mx.compile``): one call per layer replays it from C++, and MLX fuses its elementwise work.
Only the cache update (a slice assignment at a Python offset) and the attention stay outside.
Building a step of a 16-layer Llama took 4.4 ms stock and 2.8 ms this way on a 2-core CPU.

Where. Only for mlx-lm's ``llama`` (Llama, Mistral and their kin), ``qwen2`` and ``qwen3``
models, whose layers share one shape (Qwen3 adds a norm on each head's queries and keys): every
layer exactly its module's ``TransformerBlock`` with plain or quantized linear layers (a model
split across ranks has other ones), no sliding-window layers, decoding on plain ``KVCache``s;
``build`` checks the classes and then that one step gives the model's own logits, or returns
None.

Measured (``python -m bench.lone_decode MODEL --rounds 5 --max-tokens 128``, 2-core CPU, per
round against ``generate_step``): the demo SmolLM2-135M 1.20x against the stock step's 1.07x; a
16-layer, 256-wide Llama 1.27x against 0.96x; the tests' 4-layer one level. So the engine uses it
on the CPU by default (``Engine(lone_compiled=None)``); on a GPU, where it should matter most,
only when asked until it is measured there.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models import llama, qwen2, qwen3
from mlx_lm.models.cache import KVCache, make_prompt_cache

logger = logging.getLogger("triton_mlx.engine")

__all__ = ["LoneStep", "build"]

_LINEAR = (nn.Linear, nn.QuantizedLinear)
_MODULES = {llama.Model: llama, qwen2.Model: qwen2, qwen3.Model: qwen3}
"""The architectures whose layers ``_attention_inputs`` and ``_layer_output`` reproduce."""


def _attention_inputs(layer: Any, x: mx.array, offset: mx.array) -> tuple[mx.array, ...]:
    """The layer's queries, keys and values for one token: norm, projections, (Qwen3: each
    head's norm), rotary."""
    attention = layer.self_attn
    h = layer.input_layernorm(x)
    q = attention.q_proj(h).reshape(1, 1, attention.n_heads, -1)
    k = attention.k_proj(h).reshape(1, 1, attention.n_kv_heads, -1)
    v = attention.v_proj(h).reshape(1, 1, attention.n_kv_heads, -1).transpose(0, 2, 1, 3)
    if isinstance(attention, qwen3.Attention):
        q, k = attention.q_norm(q), attention.k_norm(k)
    q, k = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3)
    return attention.rope(q, offset=offset), attention.rope(k, offset=offset), v


def _layer_output(layer: Any, x: mx.array, attended: mx.array) -> mx.array:
    """The layer's output from its input and its attention's: projection, residuals, MLP."""
    h = x + layer.self_attn.o_proj(attended.transpose(0, 2, 1, 3).reshape(1, 1, -1))
    return h + layer.mlp(layer.post_attention_layernorm(h))


def _first(embed: Any, layer: Any, tokens: mx.array, offset: mx.array) -> tuple[mx.array, ...]:
    x = embed(tokens)
    return (x, *_attention_inputs(layer, x, offset))


def _between(layer: Any, following: Any, x: mx.array, attended: mx.array,
             offset: mx.array) -> tuple[mx.array, ...]:
    h = _layer_output(layer, x, attended)
    return (h, *_attention_inputs(following, h, offset))


def _last(layer: Any, norm: Any, head: Any, x: mx.array, attended: mx.array) -> mx.array:
    return head(norm(_layer_output(layer, x, attended)))[:, -1, :]


class LoneStep:
    """``step(tokens (1, 1), caches) -> logits (1, vocabulary)`` for one model."""

    def __init__(self, model: Any) -> None:
        inner = model.model
        layers = inner.layers
        head = inner.embed_tokens.as_linear if model.args.tie_word_embeddings else model.lm_head
        self._scales = [layer.self_attn.scale for layer in layers]
        self._first = mx.compile(partial(_first, inner.embed_tokens, layers[0]))
        self._between = [mx.compile(partial(_between, a, b))
                         for a, b in zip(layers, layers[1:], strict=False)]
        self._last = mx.compile(partial(_last, layers[-1], inner.norm, head))

    def __call__(self, tokens: mx.array, caches: list[KVCache]) -> mx.array:
        offset = mx.array(caches[0].offset, dtype=mx.int32)
        x, q, k, v = self._first(tokens, offset)
        last = len(caches) - 1
        for i, cache in enumerate(caches):
            k, v = cache.update_and_fetch(k, v)
            attended = mx.fast.scaled_dot_product_attention(q, k, v, scale=self._scales[i])
            if i == last:
                return self._last(x, attended)
            x, q, k, v = self._between[i](x, attended, offset)
        raise ValueError("a model without layers")


def _eligible(model: Any) -> bool:
    module = _MODULES.get(type(model))
    inner = getattr(model, "model", None)
    if (module is None or getattr(inner, "swa_idx", None) is not None
            or getattr(inner, "pipeline_size", 1) > 1):  # a pipeline's ranks pass activations
        return False
    for layer in inner.layers:
        attention, mlp = layer.self_attn, layer.mlp
        if (type(layer) is not module.TransformerBlock or type(attention) is not module.Attention
                or type(mlp) is not module.MLP):
            return False
        parts = (attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj,
                 mlp.gate_proj, mlp.up_proj, mlp.down_proj)
        if not all(type(p) in _LINEAR for p in parts):
            return False
    return True


def build(model: Any) -> LoneStep | None:
    """A ``LoneStep`` for ``model``, or None where it does not apply or does not agree with
    the model's own decode step (checked once, on a short prompt)."""
    if not _eligible(model):
        return None
    try:
        step = LoneStep(model)
        prompt, token = mx.array([[1, 2, 3]]), mx.array([[4]])
        caches = [make_prompt_cache(model), make_prompt_cache(model)]
        for cache in caches:
            model(prompt, cache=cache)
        own = model(token, cache=caches[0])[:, -1, :]
        fast = step(token, caches[1])
        agree = mx.allclose(own.astype(mx.float32), fast.astype(mx.float32),
                            rtol=2e-2, atol=2e-2).item()
    except Exception:  # noqa: BLE001 - any failure means: not this model
        logger.info("model decodes a lone sequence the stock way", exc_info=True)
        return None
    return step if agree else None

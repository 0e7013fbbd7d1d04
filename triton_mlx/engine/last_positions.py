"""A prompt's first token from its prefill: the logits at one position per row of a forward pass.

mlx-lm's ``BatchGenerator`` prefills a prompt less its last token, then feeds that token alone in
a pass of its own to get the logits its first token is sampled from: two forward passes, and on a
GPU two engine steps, before a user sees a token. Folding the last token into the prefill needs
the logits at each finishing row's last real position, and only there: the logits of every
position of a chunk are (rows x tokens x vocabulary), far more than the pass itself needs.

mlx-lm's language models (``models/``) run a backbone ``model.model`` to hidden states
(rows, tokens, hidden) and then their head (``lm_head``, or the tied embedding, a final
soft-cap, ...). ``logits_at`` runs the model with a stand-in for the backbone that keeps only
the wanted rows' hidden states at the wanted positions, so the model's own head code runs on
those alone. Whether a model keeps to that shape is checked once (``supported``): the stand-in's
logits must match the model's own at the last position; one that does not is never folded.
"""

from __future__ import annotations

import logging
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache

logger = logging.getLogger("triton_mlx.engine")

__all__ = ["logits_at", "supported"]


class _Gathered:
    """The backbone, returning only the hidden states at (``rows``, ``positions``)."""

    def __init__(self, backbone: Any, rows: mx.array, positions: mx.array) -> None:
        self._backbone = backbone
        self._rows = rows
        self._positions = positions

    def __call__(self, *args: Any, **kwargs: Any) -> mx.array:
        hidden = self._backbone(*args, **kwargs)
        return hidden[self._rows, self._positions][:, None, :]

    def __getattr__(self, name: str) -> Any:  # the head may read the backbone (tied embeddings)
        return getattr(self._backbone, name)


def logits_at(model: Any, inputs: mx.array, cache: list[Any], rows: list[int],
              positions: list[int]) -> mx.array:
    """A forward pass of ``inputs`` (batch, tokens) through ``cache``, returning only the logits
    (len(rows), vocabulary) at ``positions[i]`` of row ``rows[i]``. Call it only for a model
    that ``supported`` accepts."""
    backbone = model.model
    object.__setattr__(model, "model", _Gathered(backbone, mx.array(rows), mx.array(positions)))
    try:  # an instance attribute shadows the module's own entry, and leaves its parameters be
        return model(inputs, cache=cache)[:, -1, :]
    finally:
        object.__delattr__(model, "model")


def supported(model: Any) -> bool:
    """Whether ``logits_at`` gives ``model``'s own logits: two short prompts both ways, one
    row's logits at a position other than the last."""
    try:
        prompt = mx.array([[1, 2, 3], [3, 2, 1]])
        own = model(prompt, cache=make_prompt_cache(model))[1:, 1, :]
        folded = logits_at(model, prompt, make_prompt_cache(model), [1], [1])
        if own.shape != folded.shape:
            return False
        agree = mx.allclose(own.astype(mx.float32), folded.astype(mx.float32),
                            rtol=2e-2, atol=2e-2).item()
    except Exception:  # noqa: BLE001 - any failure means: not this model
        logger.info("model does not fold the prompt's last token into its prefill",
                    exc_info=True)
        return False
    return bool(agree)

"""The Rust tokenizer behind mlx-lm's ``TokenizerWrapper``, reached through public names only.

The wrapper forwards every public attribute to the Hugging Face tokenizer, and a fast Hugging
Face tokenizer exposes its Rust tokenizer as ``backend_tokenizer``. That one decodes fastest
(the detokenizer calls it for every token) and encodes a whole list in one call (2x faster
than a call per text). A slow (Python) tokenizer has no backend, and the wrapper serves.
llguidance reads the Rust tokenizer too (``grammar_tokenizer``), and needs it.
"""

from __future__ import annotations

import copy
from typing import Any

import llguidance

from triton_mlx.engine.detokenizer import Decoder


def fast_decoder(tokenizer: Any) -> Decoder:
    """The fastest ``decode(ids, skip_special_tokens=...)`` that ``tokenizer`` offers."""
    return getattr(tokenizer, "backend_tokenizer", tokenizer)


def encode_batch(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Each text's token ids with the tokenizer's own special tokens, as ``encode`` gives them.

    The Rust tokenizer keeps the padding a ``tokenizer.json`` may configure (the Hugging Face
    tokenizer turns it off per call), so padding, if any, is dropped here."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return [tokenizer.encode(text) for text in texts]
    encodings = backend.encode_batch(texts)
    if backend.padding is None:
        return [encoding.ids for encoding in encodings]
    return [[token for token, real in zip(e.ids, e.attention_mask, strict=True) if real]
            for e in encodings]


def grammar_tokenizer(tokenizer: Any, eos_ids: list[int]) -> llguidance.LLTokenizer:
    """llguidance's view of ``tokenizer`` (slow: about a second for 50k tokens), built as
    ``llguidance.hf.from_tokenizer`` does but from the public ``backend_tokenizer``, which the
    wrapper forwards. A grammar that is complete admits any of ``eos_ids`` (the tokens that end
    a sequence in the batch generator), or the tokenizer's own when there are none."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError("constrained decoding needs a fast (Rust) tokenizer")
    backend = copy.copy(backend)  # serialised without padding and truncation
    backend.no_padding()
    backend.no_truncation()
    eos: int | list[int] | None = list(eos_ids) or tokenizer.eos_token_id
    return llguidance.LLTokenizer(backend.to_str(), eos_token=eos)

"""Rebuild a Hugging Face tokenizer (tokenizer.json and its config files) from GGUF metadata.

GGUF stores the vocabulary, scores or merges and token types but not the pipeline
around them. Two models are rebuilt:

- "gpt2", byte-level BPE: llama.cpp names the pre-tokenizer in ``tokenizer.ggml.pre``
  and hard-codes its regex; those in ``_PRE_TOKENIZERS`` are supported.
- "llama", SentencePiece BPE with byte fallback (Llama 2, Mistral, Gemma): the merges
  are not stored, so they are derived from the piece scores, the way transformers'
  ``convert_slow_tokenizer`` does (SentencePiece merges the adjacent pair whose
  concatenation is the highest-scoring piece, so a merge's rank is its piece's score).

Anything else is refused rather than rebuilt approximately, because a subtly wrong
tokenizer still "works" and quietly degrades the model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    normalizers,
    pre_tokenizers,
    processors,
)
from tokenizers.models import BPE

# llama.cpp token types (llama_token_type), the same numbers as SentencePiece's piece types.
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

# Llama 3's split regex, as in its tokenizer.json (llama.cpp: LLAMA_VOCAB_PRE_TYPE_LLAMA3).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# tokenizer.ggml.pre -> (pre-tokenizer factory, BPE ignore_merges), matching the
# tokenizer.json of the models llama.cpp's converter recognises under that name.
_PRE_TOKENIZERS: dict[str, tuple[Callable[[], pre_tokenizers.PreTokenizer], bool]] = {
    "gpt-2": (lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), False),
    "smollm": (
        lambda: pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        ),
        False,
    ),
    "llama-bpe": (
        lambda: pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        ),
        True,
    ),
}

# What llama.cpp (llama-vocab.cpp) assumes for a "llama" vocabulary when a key is absent.
_SPM_DEFAULTS = {
    "tokenizer.ggml.bos_token_id": 1,
    "tokenizer.ggml.eos_token_id": 2,
    "tokenizer.ggml.unknown_token_id": 0,
    "tokenizer.ggml.add_bos_token": True,
    "tokenizer.ggml.add_eos_token": False,
    "tokenizer.ggml.add_space_prefix": True,
}

_SPACE = "\u2581"  # "▁", SentencePiece's escaped space


class UnsupportedTokenizerError(ValueError):
    """The GGUF's tokenizer cannot be rebuilt faithfully."""


def build_tokenizer(metadata: dict[str, Any]) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` equivalent to the GGUF's tokenizer ("gpt2" or "llama")."""
    model = metadata.get("tokenizer.ggml.model")
    if model is None or "tokenizer.ggml.tokens" not in metadata:
        raise UnsupportedTokenizerError("the GGUF has no tokenizer (tokenizer.ggml.* metadata)")
    if model == "gpt2":
        return _build_byte_level_bpe(metadata)
    if model == "llama":
        return _build_sentencepiece_bpe(_with_defaults(metadata))
    raise UnsupportedTokenizerError(
        f'unsupported tokenizer model "{model}"; supported: gpt2 (byte-level BPE), '
        "llama (SentencePiece BPE)"
    )


def _with_defaults(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata with llama.cpp's defaults filled in for the keys a "llama" GGUF may omit."""
    if metadata.get("tokenizer.ggml.model") == "llama":
        return _SPM_DEFAULTS | metadata
    return metadata


def _build_byte_level_bpe(metadata: dict[str, Any]) -> Tokenizer:
    pre = metadata.get("tokenizer.ggml.pre")
    if pre not in _PRE_TOKENIZERS:
        raise UnsupportedTokenizerError(
            f'unsupported pre-tokenizer "{pre}"; supported: ' + ", ".join(_PRE_TOKENIZERS)
        )
    make_pre_tokenizer, ignore_merges = _PRE_TOKENIZERS[pre]

    tokens: list[str] = metadata["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in metadata.get("tokenizer.ggml.merges", [])]
    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = Tokenizer(BPE(vocab, merges, ignore_merges=ignore_merges))
    tokenizer.pre_tokenizer = make_pre_tokenizer()
    tokenizer.decoder = decoders.ByteLevel()
    template = _template_processing(metadata, tokens)
    tokenizer.post_processor = processors.Sequence(
        [processors.ByteLevel(trim_offsets=False), template]
    )

    # Control tokens (e.g. <|im_end|>) must never be split by BPE and are dropped by
    # skip_special_tokens; user-defined ones are also kept whole but stay visible.
    token_types = metadata.get("tokenizer.ggml.token_type", [])
    added = [
        AddedToken(tokens[i], special=bool(t == _CONTROL), normalized=False)
        for i, t in enumerate(token_types)
        if t in (_CONTROL, _USER_DEFINED)
    ]
    tokenizer.add_tokens(added)
    return tokenizer


def _build_sentencepiece_bpe(metadata: dict[str, Any]) -> Tokenizer:
    """SentencePiece BPE in tokenizers' terms: spaces become "▁" (one "▁" is prepended
    when add_space_prefix) and the text is merged as a single word.

    Control and user-defined tokens are matched whole first. Without a space prefix,
    user-defined ones are matched after normalization, as SentencePiece does. With one,
    that cannot be (tokenizers would prepend "▁" to the tokens too): they are matched in
    the raw text and, as in llama.cpp and transformers' legacy Llama tokenizer, the text
    after any control or user-defined token gets its own space prefix.
    """
    tokens, scores, types = _spm_vocab(metadata)
    for kind in ("bos", "eos", "padding"):
        if f"tokenizer.ggml.{kind}_token_id" in metadata:
            _token_id(metadata, kind, len(tokens))
    unk_id = _token_id(metadata, "unknown", len(tokens))
    prefix = bool(metadata["tokenizer.ggml.add_space_prefix"])
    merges = _spm_merges(tokens, scores, types)
    if not prefix:
        # llama.cpp's converter writes the "▁" of user-defined tokens as spaces, to find
        # them in the raw text; put it back to find them in the normalized text.
        user_defined = (types == _USER_DEFINED).tolist()
        tokens = [
            t.replace(" ", _SPACE) if u else t for t, u in zip(tokens, user_defined, strict=True)
        ]
        if len(set(tokens)) != len(tokens):
            raise UnsupportedTokenizerError("user-defined tokens clash once spaces are escaped")
    tokenizer = Tokenizer(
        BPE(
            {token: i for i, token in enumerate(tokens)},
            merges,
            unk_token=tokens[unk_id],
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    tokenizer.normalizer = normalizers.Sequence(
        ([normalizers.Prepend(_SPACE)] if prefix else []) + [normalizers.Replace(" ", _SPACE)]
    )
    # This exact decoder (with Strip for the prefix) is what mlx-lm recognises to pick
    # its fast SentencePiece streaming detokenizer.
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
        + ([decoders.Strip(content=" ", left=1, right=0)] if prefix else [])
    )
    tokenizer.post_processor = _template_processing(metadata, tokens)
    tokenizer.add_tokens(
        [
            AddedToken(
                tokens[i],
                special=t != _USER_DEFINED,
                normalized=not prefix and t == _USER_DEFINED,
            )
            for i, t in enumerate(types.tolist())
            if t in (_UNKNOWN, _CONTROL, _USER_DEFINED)
        ]
    )
    return tokenizer


def _spm_vocab(metadata: dict[str, Any]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Tokens, scores and types, refused unless tokenizers' BPE can merge them exactly
    as SentencePiece would."""
    pre = metadata.get("tokenizer.ggml.pre", "default")
    if pre != "default":
        raise UnsupportedTokenizerError(f'unsupported pre-tokenizer "{pre}" for a "llama" model')
    if metadata.get("tokenizer.ggml.remove_extra_whitespaces", False):
        raise UnsupportedTokenizerError("unsupported: tokenizer.ggml.remove_extra_whitespaces")
    if len(metadata.get("tokenizer.ggml.precompiled_charsmap", b"")):
        raise UnsupportedTokenizerError("unsupported: a SentencePiece precompiled_charsmap")
    tokens: list[str] = list(metadata["tokenizer.ggml.tokens"])
    n = len(tokens)
    for key in ("scores", "token_type"):
        if len(metadata.get(f"tokenizer.ggml.{key}", ())) != n:
            raise UnsupportedTokenizerError(f"tokenizer.ggml.{key} is missing or not one per token")
    scores = np.asarray(metadata["tokenizer.ggml.scores"], dtype=np.float32)
    types = np.asarray(metadata["tokenizer.ggml.token_type"], dtype=np.int64)
    if len(set(tokens)) != n:
        raise UnsupportedTokenizerError("the vocabulary has duplicate tokens")
    if not np.isin(types, np.arange(_NORMAL, _BYTE + 1)).all():
        raise UnsupportedTokenizerError("unknown token types in tokenizer.ggml.token_type")
    index = {token: i for i, token in enumerate(tokens)}
    byte_ids = [index.get(f"<0x{b:02X}>") for b in range(256)]
    missing = [b for b, i in enumerate(byte_ids) if i is None or types[i] != _BYTE]
    if missing:
        raise UnsupportedTokenizerError(
            f"byte-fallback tokens are missing (<0x{missing[0]:02X}> and {len(missing) - 1} more)"
        )

    normal = [tokens[i] for i in np.flatnonzero(types == _NORMAL) if len(tokens[i]) > 1]
    multi_scores = scores[[index[t] for t in normal]]
    if np.isnan(scores).any() or len(np.unique(multi_scores)) != len(multi_scores):
        # SentencePiece breaks ties by position in the text, which merge ranks cannot express.
        raise UnsupportedTokenizerError("distinct SentencePiece pieces share a score")
    # SentencePiece merges any characters, in the vocabulary or not, that spell a piece;
    # tokenizers only merges characters it has as plain vocabulary tokens.
    plain = {_NORMAL, _UNUSED, _USER_DEFINED}  # user-defined ones are never merged by either
    odd = {c for c in set().union(*normal) if c not in index or types[index[c]] not in plain}
    if odd:
        raise UnsupportedTokenizerError(f"pieces use characters that are not tokens: {sorted(odd)}")
    # SentencePiece can merge into an unused piece and then split it back; tokenizers cannot.
    symbols = {tokens[i] for i in np.flatnonzero((types == _NORMAL) | (types == _UNUSED))}
    for i in np.flatnonzero(types == _UNUSED):
        u = tokens[i]
        if any(u[:k] in symbols and u[k:] in symbols for k in range(1, len(u))):
            raise UnsupportedTokenizerError(f'the unused piece "{u}" can be formed by merges')
    return tokens, scores, types


def _spm_merges(tokens: list[str], scores: np.ndarray, types: np.ndarray) -> list[tuple[str, str]]:
    """Every (left, right) split of a normal piece into two mergeable pieces, ranked by the
    piece's score (highest first), as SentencePiece picks its next merge. Splits of one
    piece share its rank in SentencePiece; here they follow each other."""
    symbols = {tokens[i] for i in np.flatnonzero((types == _NORMAL) | (types == _UNUSED))}
    ids = np.flatnonzero(types == _NORMAL)
    merges = []
    for i in ids[np.lexsort((ids, -scores[ids]))].tolist():
        piece = tokens[i]
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in symbols and right in symbols:
                merges.append((left, right))
    return merges


def _token_id(metadata: dict[str, Any], kind: str, n_tokens: int) -> int:
    token_id = int(metadata[f"tokenizer.ggml.{kind}_token_id"])
    if not 0 <= token_id < n_tokens:
        raise UnsupportedTokenizerError(f"tokenizer.ggml.{kind}_token_id {token_id} is not a token")
    return token_id


def _template_processing(metadata: dict[str, Any], tokens: list[str]) -> processors.PostProcessor:
    """Add BOS/EOS as the GGUF asks; baked into tokenizer.json so it holds with any
    transformers version, not only those that honour ``add_bos_token``."""
    template = "$A"
    specials = []
    for kind, side in (("bos", "before"), ("eos", "after")):
        token_id = metadata.get(f"tokenizer.ggml.{kind}_token_id")
        if metadata.get(f"tokenizer.ggml.add_{kind}_token", False) and token_id is not None:
            token = tokens[token_id]
            template = f"{token} {template}" if side == "before" else f"{template} {token}"
            specials.append((token, token_id))
    return processors.TemplateProcessing(single=template, special_tokens=specials)


def tokenizer_files(metadata: dict[str, Any], *, model_max_length: int) -> dict[str, str]:
    """The text of tokenizer.json, tokenizer_config.json and special_tokens_map.json."""
    tokenizer = build_tokenizer(metadata)
    metadata = _with_defaults(metadata)
    special = {
        name: tokenizer.id_to_token(metadata[f"tokenizer.ggml.{key}_token_id"])
        for name, key in (
            ("bos_token", "bos"),
            ("eos_token", "eos"),
            ("unk_token", "unknown"),
            ("pad_token", "padding"),
        )
        if f"tokenizer.ggml.{key}_token_id" in metadata
    }
    config = {
        # Not LlamaTokenizerFast/GemmaTokenizerFast: transformers 5 rebuilds those from
        # their own defaults (e.g. Metaspace instead of this normalizer) rather than
        # loading tokenizer.json as written.
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "add_bos_token": bool(metadata.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(metadata.get("tokenizer.ggml.add_eos_token", False)),
        # transformers' clean-up rewrites " ." to "." etc., breaking exact round trips.
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
    }
    if "tokenizer.chat_template" in metadata:
        config["chat_template"] = metadata["tokenizer.chat_template"]
    return {
        "tokenizer.json": tokenizer.to_str(),
        "tokenizer_config.json": _json(config),
        "special_tokens_map.json": _json(special),
    }


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"

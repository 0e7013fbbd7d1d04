"""Rebuild a Hugging Face tokenizer (tokenizer.json and its config files) from GGUF metadata.

GGUF stores the vocabulary, merges and token types but not the pipeline around
them; llama.cpp names the pre-tokenizer in ``tokenizer.ggml.pre`` and hard-codes
its regex. Only the byte-level BPE ("gpt2") model is supported, with the
pre-tokenizers in ``_PRE_TOKENIZERS``; anything else is refused rather than
rebuilt approximately, because a subtly wrong tokenizer still "works" and
quietly degrades the model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import BPE

# llama.cpp token types (llama_token_type).
_CONTROL = 3
_USER_DEFINED = 4

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


class UnsupportedTokenizerError(ValueError):
    """The GGUF's tokenizer cannot be rebuilt faithfully."""


def build_tokenizer(metadata: dict[str, Any]) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` equivalent to the GGUF's byte-level BPE tokenizer."""
    model = metadata.get("tokenizer.ggml.model")
    if model is None or "tokenizer.ggml.tokens" not in metadata:
        raise UnsupportedTokenizerError("the GGUF has no tokenizer (tokenizer.ggml.* metadata)")
    if model != "gpt2":
        raise UnsupportedTokenizerError(
            f'unsupported tokenizer model "{model}"; supported: gpt2 (byte-level BPE)'
        )
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
    tokenizer.post_processor = _post_processor(metadata, tokens)

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


def _post_processor(metadata: dict[str, Any], tokens: list[str]) -> processors.PostProcessor:
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
    return processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=template, special_tokens=specials),
        ]
    )


def tokenizer_files(metadata: dict[str, Any], *, model_max_length: int) -> dict[str, str]:
    """The text of tokenizer.json, tokenizer_config.json and special_tokens_map.json."""
    tokens = metadata["tokenizer.ggml.tokens"]
    special = {
        name: tokens[metadata[f"tokenizer.ggml.{key}_token_id"]]
        for name, key in (
            ("bos_token", "bos"),
            ("eos_token", "eos"),
            ("unk_token", "unknown"),
            ("pad_token", "padding"),
        )
        if f"tokenizer.ggml.{key}_token_id" in metadata
    }
    config = {
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
        "tokenizer.json": build_tokenizer(metadata).to_str(),
        "tokenizer_config.json": _json(config),
        "special_tokens_map.json": _json(special),
    }


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"

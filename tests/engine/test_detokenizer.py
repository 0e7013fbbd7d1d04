from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from triton_mlx.engine.detokenizer import IncrementalDetokenizer


def byte_level_tokenizer() -> Tokenizer:
    """A byte-level BPE with no merges: every UTF-8 byte is its own token."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def test_multibyte_characters_split_over_tokens_are_never_emitted_broken():
    tokenizer = byte_level_tokenizer()
    text = "naïve 🚀 café 中文"
    ids = tokenizer.encode(text).ids
    assert len(ids) == len(text.encode())  # one token per byte: characters do span tokens
    detokenizer = IncrementalDetokenizer(tokenizer)
    pieces = [detokenizer.add(i) for i in ids] + [detokenizer.flush()]
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) == text


def test_flush_after_a_truncated_character_returns_what_is_left():
    tokenizer = byte_level_tokenizer()
    ids = tokenizer.encode("ok 🚀").ids[:-1]  # the rocket's last byte never arrives
    detokenizer = IncrementalDetokenizer(tokenizer)
    emitted = "".join(detokenizer.add(i) for i in ids)
    assert emitted == "ok "
    assert detokenizer.flush() == "\ufffd"


def test_special_tokens_are_kept_only_when_asked():
    """Tool-call markers that are special tokens ([TOOL_CALLS], <|python_tag|>) must reach the
    parser: such requests keep special tokens in the text."""
    from tokenizers import AddedToken

    tokenizer = byte_level_tokenizer()
    tokenizer.add_special_tokens([AddedToken("[TOOL_CALLS]", special=True)])
    ids = tokenizer.encode("[TOOL_CALLS]ok").ids
    kept = IncrementalDetokenizer(tokenizer, skip_special_tokens=False)
    skipped = IncrementalDetokenizer(tokenizer)
    assert "".join(kept.add(i) for i in ids) + kept.flush() == "[TOOL_CALLS]ok"
    assert "".join(skipped.add(i) for i in ids) + skipped.flush() == "ok"

"""Our MLX BERT encoder against sentence-transformers' own vectors (reference_minilm.json)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from triton_mlx.encoders import is_bert_config
from triton_mlx.encoders.bert import _rename
from triton_mlx.encoders.engine import EmbeddingEngine
from triton_mlx.encoders.pooling import PoolingConfig, read_pooling_config

REFERENCE = json.loads(Path(__file__).with_name("reference_minilm.json").read_text())


@pytest.fixture(scope="module")
def encoder(minilm):
    engine = EmbeddingEngine(minilm, name="minilm", token_budget=512)
    engine.start()
    engine.wait_loaded()
    yield engine
    engine.stop()


def _embed(engine: EmbeddingEngine, token_lists: list[list[int]]) -> np.ndarray:
    return asyncio.run(engine.embed(token_lists))


def test_matches_sentence_transformers(encoder):
    ours = _embed(encoder, encoder.tokenize(REFERENCE["sentences"]))
    reference = np.array(REFERENCE["embeddings"], dtype=np.float32)
    assert ours.shape == reference.shape == (8, 384)
    cosines = (ours * reference).sum(1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1))
    assert cosines.min() >= 0.9999, cosines
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_long_input_is_truncated_to_max_seq_length(encoder):
    assert encoder.max_seq_length == 256
    long_text = REFERENCE["sentences"][-1]
    assert len(encoder.tokenize([long_text])[0]) == 256
    assert len(encoder.truncate(list(range(1000)))) == 256


def test_batched_equals_one_at_a_time_and_splits_by_token_budget(encoder):
    texts = [("word " * n).strip() for n in (1, 50, 3, 200, 7, 120, 2, 90)]
    tokens = encoder.tokenize(texts)
    passes = encoder.forward_passes
    batched = _embed(encoder, tokens)
    assert encoder.forward_passes - passes > 1  # 512 padded tokens per pass: split
    single = np.stack([_embed(encoder, [t])[0] for t in tokens])
    assert np.abs(batched - single).max() < 1e-5


def test_concurrent_requests_share_forward_passes(encoder):
    tokens = encoder.tokenize(["alpha beta", "gamma", "delta epsilon zeta", "eta"])

    async def many():
        return await asyncio.gather(*(encoder.embed([t]) for t in tokens))

    results = asyncio.run(many())
    expected = _embed(encoder, tokens)
    for got, want in zip(results, expected, strict=True):
        assert np.abs(got[0] - want).max() < 1e-5


def test_config_detection_and_names(minilm):
    assert is_bert_config({"model_type": "bert"})
    assert is_bert_config({"architectures": ["BertModel"]})
    assert not is_bert_config({"model_type": "llama"})
    assert _rename("embeddings.word_embeddings.weight") == "word_embeddings.weight"
    assert _rename("encoder.layer.3.attention.self.query.bias") == "layers.3.query.bias"
    assert _rename("pooler.dense.weight") is None
    assert read_pooling_config(minilm) == PoolingConfig("mean", True, 256)


def test_pooling_defaults_and_cls(tmp_path):
    assert read_pooling_config(tmp_path) == PoolingConfig("mean", True, None)
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"}]))
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    assert read_pooling_config(tmp_path) == PoolingConfig("cls", False, None)


def test_max_rows_caps_the_inputs_of_one_forward_pass(minilm):
    """A model's max_batch_size bounds the rows of a pass, whatever the token budget allows."""
    engine = EmbeddingEngine(minilm, name="minilm-rows", max_rows=2)
    engine.start()
    engine.wait_loaded()
    try:
        passes = engine.forward_passes
        vectors = _embed(engine, engine.tokenize(["a", "b c", "d", "e f g", "h"]))
        assert vectors.shape == (5, 384)
        assert engine.forward_passes - passes == 3
    finally:
        engine.stop()

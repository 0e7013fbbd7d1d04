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
from tests.encoders.conftest import require_minilm
from tests.openai.http_client import request
from tests.tiny_model import build_tiny_model

MINILM = "all-MiniLM-L6-v2"
MATRYOSHKA = "minilm-matryoshka"  # the same weights, declared Matryoshka-trained
REFERENCE = json.loads(
    (Path(__file__).parents[1] / "encoders" / "reference_minilm.json").read_text())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = require_minilm()
    root = tmp_path_factory.mktemp("embedding-repository")
    build_tiny_model(root / TINY)
    (root / MINILM).symlink_to(path, target_is_directory=True)
    (root / MATRYOSHKA).mkdir()
    for file in path.iterdir():
        (root / MATRYOSHKA / file.name).symlink_to(file)
    (root / MATRYOSHKA / "triton_mlx.json").write_text('{"matryoshka": true}')
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


def test_dimensions_truncate_and_renormalise_matryoshka_models_only(client, server):
    full = client.embeddings.create(model=MATRYOSHKA, input="Hello world",
                                    encoding_format="float")
    short = client.embeddings.create(model=MATRYOSHKA, input="Hello world", dimensions=64,
                                     encoding_format="float")
    vector = np.array(short.data[0].embedding)
    assert vector.shape == (64,) and abs(np.linalg.norm(vector) - 1) < 1e-5
    assert _cosine(vector, full.data[0].embedding[:64]) > 0.99999
    for bad in (0, 385, "64", True):
        status, _, body = _post(server, {"model": MATRYOSHKA, "input": "x", "dimensions": bad})
        assert status == 400 and body["error"]["param"] == "dimensions", bad
    # all-MiniLM-L6-v2 was not trained for shorter vectors: only its full size is accepted.
    same = client.embeddings.create(model=MINILM, input="Hello world", dimensions=384,
                                    encoding_format="float")
    assert np.allclose(same.data[0].embedding, full.data[0].embedding, atol=1e-6)
    status, _, body = _post(server, {"model": MINILM, "input": "x", "dimensions": 64})
    assert status == 400 and body["error"]["param"] == "dimensions"
    assert "matryoshka" in body["error"]["message"]
    cards = {c["id"]: c for c in request(server.port, "GET", "/v1/models")[2]["data"]}
    assert cards[MATRYOSHKA]["matryoshka"] is True and cards[MINILM]["matryoshka"] is False


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
    ({"model": TINY, "input": "x", "dimensions": 8}, "dimensions"),
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
    assert cards[TINY]["embeddings"] == {"dimensions": 64, "max_seq_length": 512,
                                         "pooling": "mean", "normalized": True,
                                         "matryoshka": False}
    card = cards[MINILM]
    assert card["kind"] == "embedding" and card["state"] == "READY"
    assert card["dimensions"] == 384 and card["max_seq_length"] == 256
    assert request(server.port, "GET", "/v1/metrics")[0] == 200


def test_chat_model_embeds_its_mean_pooled_last_hidden_state(client, server):
    """Mixed lengths in one request (padded together, long ones run in chunks through a KV
    cache) give what one plain forward pass of each input alone gives."""
    import mlx.core as mx

    texts = ["hi", "a somewhat longer sentence for the tiny model",
             " ".join(["many words to pass the prefill chunk"] * 40)]
    result = client.embeddings.create(model=TINY, input=texts, encoding_format="float")
    assert [d.index for d in result.data] == [0, 1, 2]
    engine = server.engine(TINY)
    token_lists = engine.tokenize(texts)
    assert len(token_lists[2]) > 128 and result.usage.prompt_tokens == sum(map(len, token_lists))

    async def direct() -> list[np.ndarray]:  # one unpadded, unchunked pass per input
        vectors = []
        for ids in token_lists:
            hidden = engine._model.model(mx.array([ids]))
            mean = np.array(hidden.astype(mx.float32)).mean(axis=1)[0]
            vectors.append(mean / np.linalg.norm(mean))
        return vectors

    for data, expected in zip(result.data, server.call(direct()), strict=True):
        vector = np.array(data.embedding)
        assert vector.shape == (64,) and abs(np.linalg.norm(vector) - 1) < 1e-5
        assert _cosine(vector, expected) > 0.9999
    single = client.embeddings.create(model=TINY, input=texts[1], encoding_format="float")
    assert np.allclose(single.data[0].embedding, result.data[1].embedding, atol=1e-5)


def test_chat_model_embeds_while_it_generates(client, server):
    with ThreadPoolExecutor(4) as pool:
        chat = pool.submit(client.completions.create, model=TINY, prompt="count", max_tokens=40,
                           temperature=0)
        embeddings = [pool.submit(client.embeddings.create, model=TINY, input=[f"text {i}"] * 5)
                      for i in range(6)]
        assert chat.result().usage.completion_tokens == 40
        assert all(len(e.result().data) == 5 for e in embeddings)
    stats = server.engine(TINY).stats()
    assert stats.running == 0 and stats.queued == 0


def test_triton_infer_on_an_embedding_model(server):
    import tritonclient.http as httpclient

    url = f"127.0.0.1:{server.http_port}"
    triton = httpclient.InferenceServerClient(url)
    metadata = triton.get_model_metadata(MINILM)
    assert metadata["inputs"] == [{"name": "text_input", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
    config = triton.get_model_config(MINILM)
    assert config["model_transaction_policy"] == {"decoupled": False}
    sentences = REFERENCE["sentences"]
    for binary in (True, False):
        text = httpclient.InferInput("text_input", [len(sentences)], "BYTES")
        text.set_data_from_numpy(np.array([s.encode() for s in sentences], dtype=np.object_),
                                 binary_data=binary)
        output = httpclient.InferRequestedOutput("embedding", binary_data=binary)
        vectors = triton.infer(MINILM, [text], outputs=[output]).as_numpy("embedding")
        assert vectors.shape == (len(sentences), 384) and vectors.dtype == np.float32
        for vector, reference in zip(vectors, REFERENCE["embeddings"], strict=True):
            assert _cosine(vector, reference) >= 0.9999
    stats = triton.get_inference_statistics(MINILM)["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] >= 2


@pytest.mark.parametrize("body, fragment", [
    ({"inputs": []}, "expected 1 inputs"),
    ({"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1, 1], "data": ["x"]}]},
     "unexpected shape"),
    ({"inputs": [{"name": "text_input", "datatype": "INT32", "shape": [1], "data": [1]}]},
     "data-type"),
    ({"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1], "data": [""]}]},
     "empty string"),
    ({"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1], "data": ["x"]}],
      "outputs": [{"name": "text_output"}]}, "unexpected inference output"),
    ({"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1], "data": ["x"]}],
      "parameters": {"temperature": 0}}, "temperature"),
])
def test_triton_infer_errors_on_an_embedding_model(server, body, fragment):
    status, _, answer = request(server.http_port, "POST", f"/v2/models/{MINILM}/infer", body)
    assert status == 400 and fragment in answer["error"], answer


def test_triton_generate_refuses_embedding_models(server):
    for path in ("generate", "generate_stream"):
        status, _, answer = request(server.http_port, "POST", f"/v2/models/{MINILM}/{path}",
                                    {"text_input": "hi"})
        assert status == 400 and "embedding" in answer["error"], (path, answer)
    assert request(server.http_port, "GET", f"/v2/models/{MINILM}/ready")[0] == 200
    assert request(server.http_port, "GET", "/v2/models/stats")[0] == 200


def test_broken_encoder_folder_is_unavailable_with_the_reason(tmp_path, start_server):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    build_tiny_model(tmp_path / TINY)
    build_tiny_model(tmp_path / "flag")
    (tmp_path / "flag" / "triton_mlx.json").write_text('{"matryoshka": "yes"}')
    # Settings that mean nothing for an encoder are refused, not ignored.
    (tmp_path / "encoder").mkdir()
    for file in require_minilm().iterdir():
        (tmp_path / "encoder" / file.name).symlink_to(file)
    (tmp_path / "encoder" / "triton_mlx.json").write_text('{"max_tokens": 5}')
    running = start_server(tmp_path)
    cards = {c["id"]: c for c in request(running.port, "GET", "/v1/models")[2]["data"]}
    assert cards["bert"]["state"] == "UNAVAILABLE"
    assert "safetensors" in cards["bert"]["reason"]
    assert cards["flag"]["state"] == "UNAVAILABLE" and "matryoshka" in cards["flag"]["reason"]
    assert cards["encoder"]["state"] == "UNAVAILABLE"
    assert "max_tokens" in cards["encoder"]["reason"]
    assert cards[TINY]["state"] == "READY"


def test_readme_embedding_examples_run_as_written(server):
    """The README's embeddings examples (OpenAI SDK and tritonclient), only the ports changed."""
    import re
    import subprocess
    import sys

    text = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    start = text.index("### Embeddings")
    section = text[start:text.index("\n## ", start)]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2
    printed = []
    for block in blocks:
        code = block.replace("localhost:9000", f"127.0.0.1:{server.port}").replace(
            "localhost:8000", f"127.0.0.1:{server.http_port}")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        printed.append(result.stdout.strip())
    assert printed == ["384", "(2, 384)"]

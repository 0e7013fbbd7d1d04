"""/v1/models, health, metrics and API keys."""

import json

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TINY
from tests.openai.http_client import request
from tests.tiny_model import build_tiny_model


def test_models_list_and_get(tiny_server):
    client = openai.OpenAI(base_url=tiny_server.base_url, api_key="x", max_retries=0)
    models = client.models.list()
    assert [m.id for m in models.data] == [TINY]
    model = client.models.retrieve(TINY)
    assert model.id == TINY and model.owned_by == "triton-mlx"
    card = request(tiny_server.port, "GET", f"/v1/models/{TINY}")[2]
    assert card["runtime_profile"]["name"] in ("cpu-fast", "cpu-small", "gpu")
    status, _, body = request(tiny_server.port, "GET", "/v1/models/nope")
    assert status == 404 and body["error"]["code"] == "model_not_found"


def test_health_routes(tiny_server):
    assert request(tiny_server.port, "GET", "/v1/health/live")[0] == 200
    status, _, body = request(tiny_server.port, "GET", "/v1/health/ready")
    assert status == 200 and body["models"] == {TINY: "READY"}


def test_per_model_settings_and_broken_folders(tmp_path, start_server):
    build_tiny_model(tmp_path / "named")
    (tmp_path / "named" / "triton_mlx.json").write_text(json.dumps(
        {"display_name": "My Tiny Model", "max_batch_size": 2, "max_tokens": 5,
         "default_temperature": 0.0}))
    build_tiny_model(tmp_path / "typo")
    (tmp_path / "typo" / "triton_mlx.json").write_text(json.dumps({"max_batchsize": 2}))
    (tmp_path / "empty").mkdir()  # no config.json: not a model at all
    (tmp_path / "nojson").mkdir()
    (tmp_path / "nojson" / "config.json").write_text("{broken")
    server = start_server(tmp_path, max_concurrent_requests=4)

    status, _, body = request(server.port, "GET", "/v1/models")
    cards = {card["id"]: card for card in body["data"]}
    assert set(cards) == {"named", "typo", "nojson"}
    assert cards["named"]["display_name"] == "My Tiny Model"
    assert cards["named"]["max_batch_size"] == 2 and server.engine("named").slots == 2
    assert cards["typo"]["state"] == "UNAVAILABLE" and "max_batchsize" in cards["typo"]["reason"]
    assert cards["nojson"]["state"] == "UNAVAILABLE" and "config.json" in cards["nojson"]["reason"]

    # max_tokens caps requests; default_temperature 0 makes the default greedy.
    status, _, body = request(server.port, "POST", "/v1/completions",
                              {"model": "named", "prompt": "Hi", "max_tokens": 6})
    assert status == 400 and body["error"]["param"] == "max_tokens"
    body = {"model": "named", "prompt": "Hi", "logit_bias": {"2": -100}}
    answers = {
        request(server.port, "POST", "/v1/completions", body)[2]["choices"][0]["text"]
        for _ in range(2)
    }
    assert len(answers) == 1
    # A server with some broken folders is still ready: the good model serves.
    assert request(server.port, "GET", "/v1/health/ready")[0] == 200


def test_not_ready_without_any_model(tmp_path, start_server):
    server = start_server(tmp_path)
    status, _, body = request(server.port, "GET", "/v1/health/ready")
    assert status == 503
    assert request(server.port, "GET", "/v1/health/live")[0] == 200


def _gap_count(port: int) -> float:
    _, _, text = request(port, "GET", "/v1/metrics")
    family = {f.name: f for f in text_string_to_metric_families(text)}.get(
        "triton_mlx_inter_token_latency_seconds")
    samples = family.samples if family else []
    return sum(s.value for s in samples
               if s.name.endswith("_count") and s.labels["model"] == TINY)


def test_metrics_count_tokens_and_parse_as_prometheus(tiny_server):
    client = openai.OpenAI(base_url=tiny_server.base_url, api_key="x", max_retries=0)
    gaps_before = _gap_count(tiny_server.port)
    # logprobs tell how many tokens each streamed chunk carries: tokens held back (partial
    # characters) arrive together, and only tokens after the first chunk's have a gap.
    chunks = client.chat.completions.create(
        model=TINY, messages=[{"role": "user", "content": "Hello"}], max_tokens=8,
        logit_bias={"2": -100}, logprobs=True, stream=True)
    per_chunk = [len(c.choices[0].logprobs.content) for c in chunks
                 if c.choices and c.choices[0].logprobs]
    assert sum(per_chunk) == 8
    status, headers, text = request(tiny_server.port, "GET", "/v1/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    generated = {
        s.labels["model"]: s.value for s in families["triton_mlx_generation_tokens"].samples
    }
    assert generated[TINY] >= 8
    for name in ("triton_mlx_request_duration_seconds", "triton_mlx_time_to_first_token_seconds",
                 "triton_mlx_requests_running", "triton_mlx_requests_queued",
                 "triton_mlx_memory_bytes", "triton_mlx_prompt_tokens",
                 "triton_mlx_request_generation_tokens_per_second",
                 "triton_mlx_inter_token_latency_seconds"):
        assert name in families, name
    assert _gap_count(tiny_server.port) - gaps_before == 8 - per_chunk[0]
    memory = {s.labels["kind"]: s.value for s in families["triton_mlx_memory_bytes"].samples}
    assert memory["mlx_active"] > 0 and memory["process_resident"] > 0


def _histogram(text: str, name: str) -> tuple[float, float]:
    """(sum, count) of the tiny model's series of histogram ``name``."""
    family = {f.name: f for f in text_string_to_metric_families(text)}[name]
    values = {s.name: s.value for s in family.samples if s.labels.get("model") == TINY}
    return values.get(name + "_sum", 0.0), values.get(name + "_count", 0.0)


def test_time_to_first_token_splits_into_queue_and_prefill(tiny_server):
    """Each answered request adds one wait for a batch slot and one prefill, which together
    make its time to first token."""
    names = ("triton_mlx_request_queue_seconds", "triton_mlx_request_prefill_seconds",
             "triton_mlx_time_to_first_token_seconds")
    before = [_histogram(request(tiny_server.port, "GET", "/v1/metrics")[2], n) for n in names]
    client = openai.OpenAI(base_url=tiny_server.base_url, api_key="x", max_retries=0)
    for _ in range(2):
        client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "Hi"}],
                                       max_tokens=3)
    after = [_histogram(request(tiny_server.port, "GET", "/v1/metrics")[2], n) for n in names]
    (queue, prefill, ttft) = [(a[0] - b[0], a[1] - b[1]) for a, b in zip(after, before,
                                                                        strict=True)]
    assert queue[1] == prefill[1] == ttft[1] == 2
    assert queue[0] >= 0 and prefill[0] > 0
    assert queue[0] + prefill[0] == pytest.approx(ttft[0], rel=1e-6, abs=1e-6)


def test_api_key_guards_every_route_but_health(tiny_repository, start_server):
    server = start_server(tiny_repository, api_key="s3cret")
    for method, path in [("GET", "/v1/models"), ("GET", "/v1/metrics"),
                         ("POST", "/v1/chat/completions"), ("GET", "/v1/does-not-exist")]:
        status, _, body = request(server.port, method, path, {})
        assert status == 401 and body["error"]["type"] == "authentication_error", path
        status, _, _ = request(server.port, method, path, {},
                               headers={"Authorization": "Bearer wrong"})
        assert status == 401
    assert request(server.port, "GET", "/v1/health/live")[0] == 200
    assert request(server.port, "GET", "/v1/health/ready")[0] == 200
    client = openai.OpenAI(base_url=server.base_url, api_key="s3cret", max_retries=0)
    assert [m.id for m in client.models.list().data] == [TINY]
    bad = openai.OpenAI(base_url=server.base_url, api_key="nope", max_retries=0)
    try:
        bad.models.list()
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError:
        pass

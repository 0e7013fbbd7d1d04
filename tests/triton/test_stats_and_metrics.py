"""Triton's statistics and Prometheus metrics count requests from both ports."""

import json
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.conftest import TINY
from tests.openai.http_client import request as openai_request
from tests.openai.test_errors import wait_for
from tests.triton.wire import client, error, open_stream, request

NO_EOS = {"2": -100}


def generate(server, **extra) -> None:
    status, _, data = request(server.http_port, "POST", f"/v2/models/{TINY}/generate",
                              {"text_input": "Hello", "max_tokens": 3, **extra})
    assert status == 200, data


def stats_of(server) -> dict:
    (stat,) = client(server).get_inference_statistics(TINY)["model_stats"]
    return stat


def test_statistics_shape_and_counts(tiny_repository, start_server):
    server = start_server(tiny_repository)
    assert stats_of(server)["inference_count"] == 0
    generate(server)
    generate(server)
    stat = stats_of(server)
    assert stat["name"] == TINY and stat["version"] == "1" and stat["batch_stats"] == []
    infer = stat["inference_stats"]
    assert set(infer) >= {"success", "fail", "queue", "compute_input", "compute_infer",
                          "compute_output"}
    assert all(set(d) == {"count", "ns"} for d in infer.values())
    assert stat["inference_count"] == 2 and stat["execution_count"] == 2
    assert infer["success"]["count"] == 2 and infer["success"]["ns"] > 0
    assert infer["queue"]["ns"] > 0 and infer["compute_infer"]["count"] == 2
    assert infer["fail"] == {"count": 0, "ns": 0}
    assert stat["last_inference"] > 1_700_000_000_000  # milliseconds since the epoch
    assert client(server).get_inference_statistics()["model_stats"][0]["name"] == TINY
    assert client(server).get_inference_statistics(TINY, "1")["model_stats"] == [stat]


def test_openai_requests_count_in_triton_statistics(tiny_repository, start_server):
    server = start_server(tiny_repository)
    for path, body in (("/v1/completions", {"prompt": "Hi"}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]})):
        status, _, _ = openai_request(server.port, "POST", path,
                                      {"model": TINY, "max_tokens": 2, **body})
        assert status == 200
    generate(server)
    stat = stats_of(server)
    assert stat["inference_count"] == 3 and stat["inference_stats"]["success"]["count"] == 3
    families = scrape(server.metrics_port)
    assert sample(families, "nv_inference_request_success", model=TINY) == 3


def test_statistics_of_unknown_models_and_versions(tiny_server):
    with pytest.raises(InferenceServerException) as info:
        client(tiny_server).get_inference_statistics("nope")
    assert info.value.message() == "requested model 'nope' is not available"
    with pytest.raises(InferenceServerException) as info:
        client(tiny_server).get_inference_statistics(TINY, "3")
    assert info.value.message() == f"requested model version is not available for model '{TINY}'"


def test_a_cancelled_request_counts_as_a_failure(tiny_repository, start_server):
    server = start_server(tiny_repository)
    engine = server.engine()
    sock = open_stream(server.http_port, f"/v2/models/{TINY}/generate_stream", {
        "text_input": "Hello", "stream": True, "max_tokens": 400,
        "logit_bias": json.dumps(NO_EOS)})
    received = b""
    while received.count(b"data:") < 2:
        received += sock.recv(4096)
    sock.close()
    wait_for(lambda: engine.stats().running == 0)
    wait_for(lambda: stats_of(server)["inference_stats"]["fail"]["count"] == 1)
    families = scrape(server.metrics_port)
    assert sample(families, "nv_inference_request_failure", reason="CANCELED") == 1


def scrape(port: int, path: str = "/metrics") -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}") as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(families: dict, family: str, **labels) -> float:
    values = [s.value for s in families[family].samples
              if all(s.labels.get(k) == v for k, v in labels.items())
              and not s.name.endswith(("_bucket", "_created"))]
    return sum(values)


def test_metrics_port_serves_tritons_families(tiny_repository, start_server):
    server = start_server(tiny_repository)
    generate(server)
    generate(server)
    families = scrape(server.metrics_port)
    for name in ("nv_inference_request_success", "nv_inference_request_failure",
                 "nv_inference_count", "nv_inference_exec_count",
                 "nv_inference_pending_request_count", "nv_inference_request_duration_us",
                 "nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us",
                 "nv_inference_first_response_histogram_ms", "nv_cpu_memory_used_bytes"):
        assert name in families, name
    labels = {"model": TINY, "version": "1"}
    assert sample(families, "nv_inference_request_success", **labels) == 2
    assert sample(families, "nv_inference_count", **labels) == 2
    assert sample(families, "nv_inference_exec_count", **labels) == 2
    assert sample(families, "nv_inference_request_duration_us", **labels) > 0
    assert sample(families, "nv_inference_pending_request_count", **labels) == 0
    histogram = [s for s in families["nv_inference_first_response_histogram_ms"].samples
                 if s.name.endswith("_count")]
    assert histogram[0].value == 2
    assert sample(families, "nv_cpu_memory_used_bytes") > 0
    # The raw text keeps Triton's names: no _total suffix on the counters.
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics") as response:
        text = response.read().decode()
    assert f'nv_inference_request_success{{model="{TINY}",version="1"}} 2' in text
    # The OpenAI port's /v1/metrics is the same registry.
    assert "nv_inference_request_success" in scrape(server.port, "/v1/metrics")


def test_metrics_port_errors(tiny_server):
    status, _, data = request(tiny_server.metrics_port, "GET", "/nothing")
    assert status == 404 and error(data) == "Not Found"
    status, _, data = request(tiny_server.metrics_port, "POST", "/metrics")
    assert status == 405 and error(data) == "Method Not Allowed"

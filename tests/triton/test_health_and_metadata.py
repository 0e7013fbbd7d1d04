"""Health, server and model metadata, model config and the repository API, as Triton answers."""

import json
import shutil

import pytest
from tritonclient.utils import InferenceServerException

from tests.conftest import TINY
from tests.tiny_model import build_tiny_model
from tests.triton.wire import client, error, request


def test_live_and_ready_through_tritonclient(tiny_server):
    triton = client(tiny_server)
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready(TINY) and triton.is_model_ready(TINY, "1")
    assert not triton.is_model_ready(TINY, "2") and not triton.is_model_ready("nope")


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready", f"/v2/models/{TINY}/ready",
                                  f"/v2/models/{TINY}/versions/1/ready"])
def test_health_answers_are_200_with_an_empty_body(tiny_server, path):
    status, headers, body = request(tiny_server.http_port, "GET", path)
    assert (status, body, headers["content-length"]) == (200, b"", "0")


def test_model_not_ready_is_400_with_tritons_message(tiny_server):
    status, _, body = request(tiny_server.http_port, "GET", "/v2/models/nope/ready")
    assert status == 400 and error(body) == "Model version not ready"


def test_server_metadata_lists_only_working_extensions(tiny_server):
    meta = client(tiny_server).get_server_metadata()
    assert meta["name"] == "triton-mlx" and meta["version"]
    assert set(meta["extensions"]) == {"binary_tensor_data", "parameters", "statistics",
                                       "model_configuration", "model_repository", "generate"}


def test_model_metadata_is_the_vllm_signature(tiny_server):
    meta = client(tiny_server).get_model_metadata(TINY)
    assert meta["name"] == TINY and meta["versions"] == ["1"]
    assert meta["inputs"] == [
        {"name": "text_input", "datatype": "BYTES", "shape": [1]},
        {"name": "stream", "datatype": "BOOL", "shape": [1]},
        {"name": "sampling_parameters", "datatype": "BYTES", "shape": [1]},
        {"name": "exclude_input_in_output", "datatype": "BOOL", "shape": [1]},
    ]
    assert meta["outputs"] == [{"name": "text_output", "datatype": "BYTES", "shape": [-1]}]
    assert client(tiny_server).get_model_metadata(TINY, "1") == meta


def test_model_config_uses_config_types_and_is_decoupled(tiny_server):
    config = client(tiny_server).get_model_config(TINY)
    assert config["name"] == TINY and config["max_batch_size"] == 0
    assert config["model_transaction_policy"] == {"decoupled": True}
    inputs = {i["name"]: i for i in config["input"]}
    assert inputs["text_input"]["data_type"] == "TYPE_STRING"
    assert inputs["text_input"]["dims"] == [1] and not inputs["text_input"]["optional"]
    assert inputs["stream"]["data_type"] == "TYPE_BOOL" and inputs["stream"]["optional"]
    assert config["output"][0]["data_type"] == "TYPE_STRING"
    assert config["output"][0]["dims"] == [-1]


@pytest.mark.parametrize("call", ["get_model_metadata", "get_model_config"])
def test_unknown_model_is_tritons_error(tiny_server, call):
    with pytest.raises(InferenceServerException) as info:
        getattr(client(tiny_server), call)("nope")
    assert info.value.message() == "Request for unknown model: 'nope' is not found"
    assert info.value.status() == "400"  # Triton's core answers INVALID_ARG for an unknown name


def test_unknown_version_is_404(tiny_server):
    with pytest.raises(InferenceServerException) as info:
        client(tiny_server).get_model_metadata(TINY, "7")
    assert info.value.status() == "404"
    assert info.value.message() == f"Request for unknown model: '{TINY}' version 7 is not found"


def test_unknown_route_and_wrong_method(tiny_server):
    status, _, body = request(tiny_server.http_port, "GET", "/v2/nothing")
    assert status == 404 and error(body) == "Not Found"
    status, _, body = request(tiny_server.http_port, "GET", f"/v2/models/{TINY}/versions/x")
    assert status == 404 and error(body) == "Not Found"
    status, headers, body = request(tiny_server.http_port, "POST", "/v2/health/live")
    assert status == 405 and error(body) == "Method Not Allowed" and "GET" in headers["allow"]


def test_repository_index(tiny_server):
    triton = client(tiny_server)
    assert triton.get_model_repository_index() == [
        {"name": TINY, "version": "1", "state": "READY"}
    ]
    status, _, body = request(tiny_server.http_port, "POST", "/v2/repository/index",
                              {"ready": "yes"})
    assert status == 400 and "ready" in error(body)


@pytest.mark.parametrize("mode", ["none", "poll"])
def test_load_and_unload_are_refused_outside_explicit_mode(tiny_repository, start_server, mode):
    triton = client(start_server(tiny_repository, model_control_mode=mode))
    for call in (triton.load_model, triton.unload_model):
        with pytest.raises(InferenceServerException) as info:
            call(TINY)
        assert info.value.status() == "503"
        assert info.value.message() == (
            "explicit model load / unload is not allowed if polling is enabled"
        )


def test_a_model_that_failed_to_load_makes_the_server_not_ready(tmp_path, start_server):
    build_tiny_model(tmp_path / "good")
    shutil.copytree(tmp_path / "good", tmp_path / "broken")
    (tmp_path / "broken" / "model.safetensors").write_bytes(b"not weights")
    server = start_server(tmp_path)
    triton = client(server)
    assert triton.is_server_live() and not triton.is_server_ready()  # strict readiness
    status, _, body = request(server.http_port, "GET", "/v2/health/ready")
    assert (status, body) == (400, b"")
    index = {m["name"]: m for m in triton.get_model_repository_index()}
    assert index["broken"]["state"] == "UNAVAILABLE" and index["broken"]["reason"]
    assert triton.is_model_ready("good")
    with pytest.raises(InferenceServerException) as info:
        triton.get_model_metadata("broken")
    assert info.value.status() == "404"
    assert info.value.message() == "Request for unknown model: 'broken' has no available versions"
    status, _, body = request(server.http_port, "POST", "/v2/repository/index", {"ready": True})
    assert [m["name"] for m in json.loads(body)] == ["good"]

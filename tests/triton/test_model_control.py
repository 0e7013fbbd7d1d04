"""Explicit model control: Triton's repository API through tritonclient, and the OpenAI routes."""

from __future__ import annotations

import shutil

import pytest
from tritonclient.utils import InferenceServerException

from tests.conftest import TINY
from tests.openai.http_client import request as openai_request
from tests.tiny_model import build_tiny_model
from tests.triton.wire import client, request


@pytest.fixture
def two_models(tmp_path):
    build_tiny_model(tmp_path / TINY)
    shutil.copytree(tmp_path / TINY, tmp_path / "other")
    return tmp_path


def states(triton) -> dict[str, tuple[str, str]]:
    return {m["name"]: (m["state"], m.get("reason", ""))
            for m in triton.get_model_repository_index()}


def test_explicit_mode_loads_only_what_is_asked(two_models, start_server):
    server = start_server(two_models, model_control_mode="explicit", load_models=("other",))
    triton = client(server)
    assert states(triton) == {TINY: ("UNAVAILABLE", "unloaded"), "other": ("READY", "")}
    # Strict readiness counts only the models that should be loaded.
    assert triton.is_server_ready()
    assert not triton.is_model_ready(TINY) and triton.is_model_ready("other")

    triton.load_model(TINY)
    assert states(triton)[TINY] == ("READY", "")
    assert triton.is_model_ready(TINY)
    assert triton.infer(TINY, _inputs()).as_numpy("text_output") is not None

    # Loading a loaded model reloads it: a new engine, no gap in service.
    engine = server.engine(TINY)
    triton.load_model(TINY)
    assert server.engine(TINY) is not engine and triton.is_model_ready(TINY)

    triton.unload_model(TINY)
    assert states(triton)[TINY] == ("UNAVAILABLE", "unloaded")
    assert not triton.is_model_ready(TINY) and triton.is_server_ready()
    with pytest.raises(InferenceServerException) as info:
        triton.get_model_metadata(TINY)
    assert info.value.status() == "404"
    triton.unload_model(TINY)  # unloading an unloaded model is fine
    assert triton.is_model_ready("other")  # the other model never noticed

    status, _, body = request(server.http_port, "POST",
                                         f"/v2/repository/models/{TINY}/load")
    assert (status, body) == (200, b"")

    # A folder added later shows in the index as unloaded, and loads.
    shutil.copytree(two_models / TINY, two_models / "third")
    assert states(triton)["third"] == ("UNAVAILABLE", "unloaded")
    triton.load_model("third")
    assert triton.is_model_ready("third")


def test_explicit_mode_errors(two_models, start_server):
    (two_models / "broken").mkdir()
    (two_models / "broken" / "config.json").write_text("{}")
    server = start_server(two_models, model_control_mode="explicit")
    triton = client(server)
    assert set(states(triton).values()) == {("UNAVAILABLE", "unloaded")}
    with pytest.raises(InferenceServerException) as info:
        triton.load_model("missing")
    assert info.value.status() == "404"
    assert info.value.message() == "failed to load 'missing', failed to poll from model repository"
    with pytest.raises(InferenceServerException) as info:
        triton.load_model("broken")
    assert info.value.status() == "400"
    assert info.value.message().startswith(
        "load failed for model 'broken': version 1 is at UNAVAILABLE state: "
    )
    state, reason = states(triton)["broken"]
    assert state == "UNAVAILABLE" and reason and reason != "unloaded"
    assert not triton.is_server_ready()  # a model that should be loaded is not
    with pytest.raises(InferenceServerException) as info:
        triton.unload_model("missing")
    assert info.value.status() == "404"
    triton.unload_model("broken")
    assert triton.is_server_ready()
    status, _, _ = request(server.http_port, "POST", f"/v2/repository/models/{TINY}/load",
                           raw=b"[1]")
    assert status == 400
    # A config override on load is not implemented: refused, not ignored.
    status, _, body = request(server.http_port, "POST", f"/v2/repository/models/{TINY}/load",
                              raw=b'{"parameters": {"config": "{}"}}')
    assert status == 400 and b"config" in body
    triton.unload_model(TINY, unload_dependents=True)


def test_openai_load_and_unload_routes(two_models, start_server):
    server = start_server(two_models, model_control_mode="explicit")
    port = server.port
    status, _, body = openai_request(port, "POST", f"/v1/models/{TINY}/load")
    assert status == 200 and body["id"] == TINY and body["state"] == "READY"
    assert openai_request(port, "POST", "/v1/completions",
                          {"model": TINY, "prompt": "Hi", "max_tokens": 4})[0] == 200
    status, _, body = openai_request(port, "POST", f"/v1/models/{TINY}/unload")
    assert status == 200 and body["state"] == "UNAVAILABLE" and body["reason"] == "unloaded"
    status, _, body = openai_request(port, "POST", "/v1/completions",
                                     {"model": TINY, "prompt": "Hi", "max_tokens": 4})
    assert status == 503 and body["error"]["code"] == "model_not_ready"
    status, _, body = openai_request(port, "POST", "/v1/models/missing/load")
    assert status == 404 and body["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("mode", ["none", "poll"])
def test_openai_load_and_unload_are_refused_outside_explicit_mode(tiny_repository,
                                                                   start_server, mode):
    server = start_server(tiny_repository, model_control_mode=mode)
    for action in ("load", "unload"):
        status, _, body = openai_request(server.port, "POST", f"/v1/models/{TINY}/{action}")
        assert status == 403
        assert body["error"]["type"] == "permission_error"
        assert body["error"]["code"] == "model_control_not_allowed"
    assert openai_request(server.port, "GET", "/v1/health/ready")[0] == 200


def _inputs():
    import numpy as np
    from tritonclient import http as httpclient

    text = httpclient.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"Hello"], dtype=object))
    return [text]


def test_concurrent_load_and_unload_of_one_model_leave_a_consistent_state(two_models,
                                                                          start_server):
    from concurrent.futures import ThreadPoolExecutor

    server = start_server(two_models, model_control_mode="explicit")
    triton = client(server)
    paths = [f"/v2/repository/models/{TINY}/{action}" for action in ("load", "unload") * 3]
    with ThreadPoolExecutor(len(paths)) as pool:  # raw requests: tritonclient is not threadsafe
        futures = [pool.submit(request, server.http_port, "POST", path) for path in paths]
        assert [f.result()[0] for f in futures] == [200] * len(paths)
    entry = server.server.repository.get(TINY)
    if entry.state == "READY":
        assert entry.model is not None and triton.is_model_ready(TINY)
    else:
        assert (entry.state, entry.reason, entry.model) == ("UNAVAILABLE", "unloaded", None)
    triton.unload_model(TINY)
    triton.load_model(TINY)
    assert triton.is_model_ready(TINY)

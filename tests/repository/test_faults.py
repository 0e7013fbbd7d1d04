"""Poll mode under faults: a model folder removed or corrupted while it serves, and one that
is broken at start and fixed later. The other models, and the loaded version of a corrupted
one, keep serving throughout."""

from __future__ import annotations

import http.client
import json
import logging
import shutil

import pytest

from tests.conftest import TINY
from tests.openai.http_client import request
from tests.repository.test_poll_mode import POLL, Traffic, cards, index
from tests.tiny_model import build_tiny_model
from tests.waiting import wait_for
from triton_mlx.repository.repository import folder_fingerprint

NO_EOS = {"2": -100}


@pytest.fixture
def repository_log():
    """Records of the repository logger at WARNING and above."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("triton_mlx.repository")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def completion(server, model: str) -> tuple[int, dict]:
    status, _, body = request(server.port, "POST", "/v1/completions",
                              {"model": model, "prompt": "Hi", "max_tokens": 4})
    return status, body


def test_a_model_removed_mid_request_finishes_it_then_goes(tmp_path, start_server):
    root = tmp_path / "repo"
    build_tiny_model(root / TINY)
    build_tiny_model(root / "doomed", seed=1, context_length=2048)
    server = start_server(root, repository_poll_secs=POLL)
    engine = server.engine("doomed")
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    max_tokens = 2000  # a few seconds: still running when the removal is noticed
    connection.request("POST", "/v1/completions", body=json.dumps({
        "model": "doomed", "prompt": "Hello", "max_tokens": max_tokens, "temperature": 0,
        "logit_bias": NO_EOS, "stream": True, "stream_options": {"include_usage": True}}))
    response = connection.getresponse()
    assert response.status == 200 and response.readline().startswith(b"data: ")

    with Traffic(server, TINY) as traffic:
        shutil.rmtree(root / "doomed")
        # While it drains, new requests are refused as not ready; once gone, as unknown.
        wait_for(lambda: index(server).get("doomed", {}).get("state") != "READY",
                 what="the removal to be noticed")
        assert engine.stats().running == 1  # noticed mid-request
        status, body = completion(server, "doomed")
        assert (status, body["error"]["code"]) in {(503, "model_not_ready"),
                                                   (404, "model_not_found")}
        # The request in flight runs to its end on the engine being retired.
        data = response.read()
        connection.close()
        events = [json.loads(line[6:]) for line in data.split(b"\n")
                  if line.startswith(b"data: {")]
        assert data.rstrip().endswith(b"data: [DONE]")
        assert events[-1]["usage"]["completion_tokens"] == max_tokens
        assert events[-2]["choices"][0]["finish_reason"] == "length"
        wait_for(lambda: "doomed" not in index(server), what="the removed model to go")
        assert "doomed" not in cards(server)
        status, body = completion(server, "doomed")
        assert status == 404 and body["error"]["code"] == "model_not_found"
    assert traffic.statuses and set(traffic.statuses) == {200}
    assert engine.stats().running == 0 and engine.stats().kv_reserved_bytes == 0


def corrupt_config(folder):
    (folder / "config.json").write_bytes(b"\x00garbage{{")


def truncate_weights(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


@pytest.mark.parametrize("corrupt", [corrupt_config, truncate_weights])
def test_a_model_corrupted_while_serving_keeps_its_loaded_version(
    tmp_path, start_server, repository_log, corrupt
):
    """As Triton does: a failed reload leaves the loaded version serving (README: "A failed
    reload keeps the loaded model"), and the folder is retried once it changes again."""
    root = tmp_path / "repo"
    build_tiny_model(root / TINY)
    good = build_tiny_model(tmp_path / "good" / TINY)
    server = start_server(root, repository_poll_secs=POLL)
    repository = server.server.repository
    engine = server.engine()

    with Traffic(server, TINY) as traffic:
        corrupt(root / TINY)
        wait_for(lambda: repository.get(TINY).fingerprint == folder_fingerprint(root / TINY),
                 what="the reload attempt")
        assert server.engine() is engine
        assert index(server)[TINY]["state"] == "READY" and cards(server)[TINY]["state"] == "READY"
        assert completion(server, TINY)[0] == 200
        failed = [r for r in repository_log if r.levelno == logging.ERROR
                  and "reload of model tiny failed" in r.getMessage()]
        assert failed, [r.getMessage() for r in repository_log]

        # Fixed: the next scans load the good files in place of the old engine.
        shutil.rmtree(root / TINY)
        shutil.copytree(good, root / TINY)
        wait_for(lambda: server.engine() is not engine, what="the repaired model to reload")
        assert index(server)[TINY]["state"] == "READY"
        assert completion(server, TINY)[0] == 200
    assert traffic.statuses and set(traffic.statuses) == {200}


def test_a_model_broken_at_start_is_listed_then_loads_once_fixed(tmp_path, start_server):
    root = tmp_path / "repo"
    build_tiny_model(root / TINY)
    build_tiny_model(root / "late")
    truncate_weights(root / "late")
    server = start_server(root, repository_poll_secs=POLL)

    entry = index(server)["late"]
    assert entry["state"] == "UNAVAILABLE" and entry["reason"].startswith("failed to load")
    card = cards(server)["late"]
    assert card["state"] == "UNAVAILABLE" and card["reason"] == entry["reason"]
    status, body = completion(server, "late")
    assert status == 503 and body["error"]["code"] == "model_not_ready"
    assert completion(server, TINY)[0] == 200

    shutil.rmtree(root / "late")
    build_tiny_model(root / "late")
    wait_for(lambda: index(server)["late"]["state"] == "READY", what="the fixed model to load")
    assert cards(server)["late"].get("reason", "") == ""
    assert completion(server, "late")[0] == 200

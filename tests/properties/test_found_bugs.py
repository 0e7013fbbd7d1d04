"""Over real HTTP, the bugs the property tests found.

JSON may spell a UTF-16 surrogate with no partner (``"\\ud800"``); Python keeps it as a lone
surrogate, which no tokenizer takes and no UTF-8 response can echo: a prompt, an echoed key or
a Triton request id holding one was a 500 (a ``generate_stream`` id cut the stream right after
its 200 head). Such bodies are now a 400 naming the escape, on both front-ends, and so is one
inside ``sampling_parameters`` (it was accepted), so no string we take is invalid Unicode. A
``role`` that is a list or object (unhashable) was a 500 and is a 400. The server keeps serving.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import TINY
from tests.openai.http_client import request

LONE = '"x\\ud800y"'  # JSON text: a high surrogate with no low one after it


def post_raw(port: int, path: str, template: str):
    """POST the JSON ``template`` with its ``X`` (if any) replaced by the lone surrogate."""
    assert TINY == "tiny"
    return request(port, "POST", path, raw=template.replace("X", LONE).encode("ascii"))


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", '{"model": "tiny", "messages": [{"role": "user", "content": X}]}'),
    ("/v1/completions", '{"model": "tiny", "prompt": X, "max_tokens": 1}'),
    ("/v1/chat/completions", '{"model": "tiny", X: 1}'),  # an unknown key is echoed
    ("/v1/embeddings", '{"model": "tiny", "input": [X]}'),
])
def test_openai_lone_surrogate_is_a_400_that_names_it(tiny_server, path, body):
    status, _, answer = post_raw(tiny_server.port, path, body)
    assert status == 400, answer
    assert answer["error"]["type"] == "invalid_request_error"
    assert "\\ud800" in answer["error"]["message"] and "surrogate" in answer["error"]["message"]
    ok, _, _ = request(tiny_server.port, "GET", "/v1/models")
    assert ok == 200


@pytest.mark.parametrize("path, body", [
    ("/v2/models/tiny/generate", '{"text_input": X, "max_tokens": 1}'),
    ("/v2/models/tiny/generate_stream", '{"id": X, "text_input": "hi"}'),
    ("/v2/models/tiny/infer", json.dumps({"id": "X", "inputs": [
        {"name": "text_input", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]})
     .replace('"X"', "X")),
    ("/v2/models/tiny/infer", json.dumps({"inputs": [
        {"name": "text_input", "datatype": "BYTES", "shape": [1], "data": ["hi"]},
        {"name": "sampling_parameters", "datatype": "BYTES", "shape": [1],
         "data": ['{"stop": ' + LONE + "}"]}]})),  # JSON in JSON: no X
])
def test_triton_lone_surrogate_is_a_400_that_names_it(tiny_server, path, body):
    status, _, answer = post_raw(tiny_server.http_port, path, body)
    assert status == 400, answer
    assert "\\ud800" in answer["error"] and "surrogate" in answer["error"]
    ok, _, _ = request(tiny_server.http_port, "GET", f"/v2/models/{TINY}/ready")
    assert ok == 200


def test_a_paired_surrogate_escape_is_still_one_character(tiny_server):
    body = {"model": TINY, "prompt": "\U0001F680", "max_tokens": 1}  # json.dumps: \ud83d\ude80
    status, _, answer = request(tiny_server.port, "POST", "/v1/completions", body)
    assert status == 200, answer


@pytest.mark.parametrize("role", [["user"], {"a": 1}])
def test_unhashable_role_is_a_400(tiny_server, role):
    body = {"model": TINY, "messages": [{"role": role, "content": "hi"}]}
    status, _, answer = request(tiny_server.port, "POST", "/v1/chat/completions", body)
    assert status == 400, answer
    assert answer["error"]["param"] == "messages[0].role"

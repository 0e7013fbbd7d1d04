"""The generate extension over plain HTTP: ``/generate`` and ``/generate_stream`` framing."""

import json

import pytest

from tests.conftest import TINY
from tests.openai.test_errors import wait_for
from tests.triton.wire import error, open_stream, request, sse_events

NO_EOS = {"2": -100}
GENERATE = f"/v2/models/{TINY}/generate"
STREAM = f"/v2/models/{TINY}/generate_stream"


def test_generate_returns_one_json_object(tiny_server):
    body = {"text_input": "Hello", "parameters": {"max_tokens": 4, "temperature": 0}}
    status, headers, data = request(tiny_server.http_port, "POST", GENERATE, body)
    assert status == 200 and headers["content-type"] == "application/json"
    answer = json.loads(data)
    assert set(answer) == {"model_name", "model_version", "text_output"}
    assert answer["model_name"] == TINY and answer["model_version"] == "1"
    assert answer["text_output"].startswith("Hello")  # vLLM's default: the prompt first


def test_generate_maps_keys_to_inputs_and_parameters(tiny_server):
    engine = tiny_server.engine()
    before = engine.stats().generated_tokens
    body = {"text_input": "Hello", "exclude_input_in_output": True, "id": "req-1",
            "max_tokens": 5, "parameters": {"temperature": 0, "logit_bias": json.dumps(NO_EOS)}}
    status, _, data = request(tiny_server.http_port, "POST", GENERATE, body)
    answer = json.loads(data)
    assert status == 200 and answer["id"] == "req-1"
    assert engine.stats().generated_tokens - before == 5
    full = json.loads(request(tiny_server.http_port, "POST", GENERATE, {
        "text_input": "Hello", "max_tokens": 5,
        "parameters": {"temperature": 0, "logit_bias": json.dumps(NO_EOS)}})[2])
    assert full["text_output"] == "Hello" + answer["text_output"]


def test_generate_stream_sends_deltas_without_done(tiny_server):
    engine = tiny_server.engine()
    before = engine.stats().generated_tokens
    body = {"text_input": "Hello",
            "parameters": {"stream": True, "max_tokens": 8, "temperature": 0,
                           "logit_bias": json.dumps(NO_EOS)}}
    status, headers, data = request(tiny_server.http_port, "POST", STREAM, body)
    assert status == 200 and headers["content-type"] == "text/event-stream; charset=utf-8"
    assert b"[DONE]" not in data
    events = sse_events(data)
    assert len(events) > 1
    assert all(set(e) == {"model_name", "model_version", "text_output"} for e in events)
    text = "".join(e["text_output"] for e in events)
    assert engine.stats().generated_tokens - before == 8
    # The deltas add up to the non-streamed answer, without the prompt (vLLM's streaming).
    whole = json.loads(request(tiny_server.http_port, "POST", GENERATE, {
        "text_input": "Hello", "exclude_input_in_output": True,
        "parameters": {"max_tokens": 8, "temperature": 0, "logit_bias": json.dumps(NO_EOS)}})[2])
    assert text == whole["text_output"]


def test_generate_stream_without_stream_is_one_event_with_the_whole_answer(tiny_server):
    body = {"text_input": "Hello", "parameters": {"max_tokens": 4, "temperature": 0}}
    status, _, data = request(tiny_server.http_port, "POST", STREAM, body)
    events = sse_events(data)
    assert status == 200 and len(events) == 1 and events[0]["text_output"].startswith("Hello")


@pytest.mark.parametrize("path, body, status, words", [
    (GENERATE, b"{nope", 400, "failed to parse the request JSON buffer"),
    (GENERATE, {"parameters": {"max_tokens": 2}}, 400, "missing required inputs ['text_input']"),
    (GENERATE, {"text_input": 5}, 400, "expects a string"),
    (GENERATE, {"text_input": ["a", "b"]}, 400, "proper shape"),
    (GENERATE, {"text_input": "Hi", "stream": "yes"}, 400, "expects a boolean"),
    (GENERATE, {"text_input": "Hi", "temperature": [1]}, 400, "has invalid type"),
    (GENERATE, {"text_input": "Hi", "frobnicate": 1}, 400, "'frobnicate'"),
    (GENERATE, {"text_input": "Hi", "stream": True}, 400, "exactly 1 response"),
    (STREAM, {"text_input": "Hi", "stream": True, "exclude_input_in_output": False}, 400,
     "When streaming"),
    ("/v2/models/nope/generate_stream", {"text_input": "Hi"}, 400,
     "Request for unknown model: 'nope' is not found"),
])
def test_errors_before_the_stream_are_json_with_a_status(tiny_server, path, body, status, words):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    got, headers, data = request(tiny_server.http_port, "POST", path, raw=raw)
    assert got == status and headers["content-type"] == "application/json"
    assert words in error(data)


def test_disconnect_mid_stream_frees_the_slot(tiny_server):
    engine = tiny_server.engine()
    before = engine.stats().generated_tokens
    sock = open_stream(tiny_server.http_port, STREAM, {
        "text_input": "Hello", "stream": True, "max_tokens": 400,
        "logit_bias": json.dumps(NO_EOS)})
    received = b""
    while received.count(b"data:") < 3:
        received += sock.recv(4096)
    sock.close()
    wait_for(lambda: engine.stats().running == 0 and engine.stats().queued == 0)
    assert engine.stats().generated_tokens - before < 400


def test_disconnect_while_waiting_on_infer_frees_the_slot(tiny_server):
    engine = tiny_server.engine()
    before = engine.stats().generated_tokens
    sock = open_stream(tiny_server.http_port, f"/v2/models/{TINY}/infer", {
        "inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["Hello"]},
                   {"name": "sampling_parameters", "shape": [1], "datatype": "BYTES",
                    "data": [json.dumps({"max_tokens": 400, "logit_bias": NO_EOS})]}]})
    wait_for(lambda: engine.stats().generated_tokens > before)
    sock.close()
    wait_for(lambda: engine.stats().running == 0 and engine.stats().queued == 0)
    assert engine.stats().generated_tokens - before < 400


def test_engine_failure_mid_stream_is_an_error_event(tiny_repository, start_server):
    server = start_server(tiny_repository)
    engine = server.engine()
    sock = open_stream(server.http_port, STREAM, {
        "text_input": "Hello", "stream": True, "max_tokens": 400,
        "logit_bias": json.dumps(NO_EOS)})
    received = b""
    while received.count(b"data:") < 3:
        received += sock.recv(4096)

    def fail(*_args):
        raise RuntimeError("simulated failure inside the engine step")

    engine._generator.next = fail
    sock.settimeout(30)
    while not received.endswith(b"0\r\n\r\n"):
        chunk = sock.recv(4096)
        assert chunk, "connection closed before the stream ended"
        received += chunk
    sock.close()
    events = [line[len(b"data: "):] for line in received.split(b"\n")
              if line.startswith(b"data: ")]
    last = json.loads(events[-1])
    assert set(last) == {"error"} and "simulated" not in last["error"]
    assert b"[DONE]" not in received
    status, _, data = request(server.http_port, "POST", f"/v2/models/{TINY}/generate",
                              {"text_input": "Hi", "max_tokens": 2})
    assert status == 200  # the engine recovered

"""A client that goes away frees its batch slot at once, streaming or not."""

import json
import socket

import openai

from tests.conftest import TINY
from tests.openai.test_errors import wait_for

MAX_TOKENS = 400


def send(port: int, body: dict) -> socket.socket:
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 b"application/json\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
    return sock


def long_request(stream: bool) -> dict:
    return {"model": TINY, "messages": [{"role": "user", "content": "Hello"}],
            "max_tokens": MAX_TOKENS, "logit_bias": {"2": -100}, "stream": stream}


def test_disconnect_mid_stream_cancels_generation(tiny_server):
    engine = tiny_server.engine()
    before = engine.stats().generated_tokens
    sock = send(tiny_server.port, long_request(stream=True))
    received = b""
    while received.count(b"data:") < 3:  # the stream is under way
        received += sock.recv(4096)
    sock.close()
    wait_for(lambda: engine.stats().running == 0 and engine.stats().queued == 0)
    assert engine.stats().generated_tokens - before < MAX_TOKENS


def test_disconnect_while_waiting_for_a_non_streaming_answer_cancels_it(tiny_server):
    engine = tiny_server.engine()
    before = engine.stats().generated_tokens
    sock = send(tiny_server.port, long_request(stream=False))
    wait_for(lambda: engine.stats().generated_tokens > before)
    sock.close()
    wait_for(lambda: engine.stats().running == 0 and engine.stats().queued == 0)
    assert engine.stats().generated_tokens - before < MAX_TOKENS


def test_server_keeps_serving_after_disconnects(tiny_server):
    client = openai.OpenAI(base_url=tiny_server.base_url, api_key="x", max_retries=0)
    response = client.chat.completions.create(
        model=TINY, messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
        logit_bias={"2": -100},
    )
    assert response.usage.completion_tokens == 3


def test_engine_failure_mid_stream_is_an_in_band_error_then_done(tiny_repository, start_server):
    server = start_server(tiny_repository)
    engine = server.engine()
    sock = send(server.port, long_request(stream=True))
    received = b""
    while received.count(b"data:") < 3:
        received += sock.recv(4096)

    def fail(*_args):
        raise RuntimeError("simulated failure inside the engine step")

    engine._generator.next = fail  # the next step raises; the engine replaces its generator
    sock.settimeout(30)
    while not received.endswith(b"0\r\n\r\n"):  # the end of the chunked body
        chunk = sock.recv(4096)
        assert chunk, "connection closed before the stream ended"
        received += chunk
    sock.close()
    events = [line[len(b"data: "):].strip() for line in received.split(b"\n")
              if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "server_error" and "simulated" not in error["message"]
    # The engine survived and serves the next request.
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    response = client.chat.completions.create(
        model=TINY, messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
        logit_bias={"2": -100},
    )
    assert response.usage.completion_tokens == 3

"""The Responses route in a real ``python -m triton_mlx`` process: SIGTERM lets a response
stream in flight finish (as the chat route's), and ``--responses-store-size 0`` stores none."""

from __future__ import annotations

import http.client
import json
import signal

from tests.conftest import TINY
from tests.test_signals import ServerProcess, refused, repository, start  # noqa: F401 - fixtures
from tests.waiting import wait_for

MAX_TOKENS = 1500


def post(port: int, body: dict) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/v1/responses", body=json.dumps(body),
                       headers={"Content-Type": "application/json"})
    return connection.getresponse()


def test_sigterm_lets_a_response_stream_finish(repository, start):  # noqa: F811
    server: ServerProcess = start(repository, "--exit-timeout-secs", "120",
                                  "--responses-store-size", "0")
    port = server.ports["OpenAI API"]
    response = post(port, {"model": TINY, "input": "Hello", "stream": True, "temperature": 0,
                           "max_output_tokens": MAX_TOKENS})
    assert response.status == 200
    assert response.readline().startswith(b"event: response.created")  # under way
    server.process.send_signal(signal.SIGTERM)
    wait_for(lambda: refused(port), what="the port to refuse connections")
    data = response.read()
    events = [json.loads(line[6:]) for line in data.split(b"\n") if line.startswith(b"data: ")]
    final = events[-1]
    assert final["type"] in ("response.completed", "response.incomplete")
    assert final["response"]["usage"]["output_tokens"] > 0
    assert final["response"]["store"] is False  # the store is off: nothing was kept
    assert server.process.wait(60) == 0


def test_a_store_of_size_zero_keeps_nothing(repository, start):  # noqa: F811
    server: ServerProcess = start(repository, "--responses-store-size", "0")
    port = server.ports["OpenAI API"]
    response = post(port, {"model": TINY, "input": "Hello", "max_output_tokens": 2})
    body = json.loads(response.read())
    assert response.status == 200 and body["store"] is False
    again = post(port, {"model": TINY, "input": "Hi", "previous_response_id": body["id"]})
    error = json.loads(again.read())["error"]
    assert again.status == 404 and error["param"] == "previous_response_id"

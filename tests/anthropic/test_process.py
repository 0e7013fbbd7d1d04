"""The Messages route in a real ``python -m triton_mlx`` process: SIGTERM lets a message stream
in flight finish, as the chat route's does."""

from __future__ import annotations

import http.client
import json
import signal

from tests.conftest import TINY
from tests.test_signals import ServerProcess, refused, repository, start  # noqa: F401 - fixtures
from tests.waiting import wait_for


def test_sigterm_lets_a_message_stream_finish(repository, start):  # noqa: F811
    server: ServerProcess = start(repository, "--exit-timeout-secs", "120")
    port = server.ports["OpenAI API"]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/v1/messages", headers={"Content-Type": "application/json"},
                       body=json.dumps({"model": TINY, "max_tokens": 400, "stream": True,
                                        "messages": [{"role": "user", "content": "Hello"}]}))
    response = connection.getresponse()
    assert response.status == 200
    assert response.readline().startswith(b"event: message_start")  # under way
    server.process.send_signal(signal.SIGTERM)
    wait_for(lambda: refused(port), what="the port to refuse connections")
    events = [json.loads(line[6:]) for line in response.read().split(b"\n")
              if line.startswith(b"data: ")]
    assert events[-1]["type"] == "message_stop"
    delta = next(e for e in events if e["type"] == "message_delta")
    assert delta["usage"]["output_tokens"] > 0
    assert server.process.wait(60) == 0

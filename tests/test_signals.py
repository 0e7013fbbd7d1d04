"""SIGTERM and SIGINT against a real ``python -m triton_mlx`` process: the ports close at once,
in-flight requests finish within ``--exit-timeout-secs`` (or are cut when it ends), and the
process logs its shutdown and exits with status 0."""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import threading

import pytest

from tests.conftest import TINY
from tests.tiny_model import build_tiny_model
from tests.waiting import wait_for

NO_EOS = {"2": -100}
LISTENING = re.compile(r"(OpenAI API|Triton HTTP API|metrics) listening on http://[^:]+:(\d+)")


class ServerProcess:
    """``python -m triton_mlx`` on ports the OS picks, read back from its log."""

    def __init__(self, repository, *flags: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "triton_mlx", "--model-repository", str(repository),
             "--host", "127.0.0.1", "--openai-port", "0", "--http-port", "0",
             "--metrics-port", "0", "--model-control-mode", "none", *flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self.ports: dict[str, int] = {}
        self._ready = threading.Event()
        threading.Thread(target=self._read_log, daemon=True).start()
        if not self._ready.wait(120):
            self.process.kill()
            raise AssertionError("the server did not start:\n" + self.log)

    def _read_log(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)
            match = LISTENING.search(line)
            if match:
                self.ports[match[1]] = int(match[2])
            if "serving 1 model(s)" in line:
                self._ready.set()
        self._ready.set()  # exited: let the constructor report it

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("signals")
    build_tiny_model(root / TINY, context_length=8192)
    return root


@pytest.fixture
def start():
    processes: list[ServerProcess] = []

    def start_process(repository, *flags: str) -> ServerProcess:
        processes.append(ServerProcess(repository, *flags))
        return processes[-1]

    yield start_process
    for process in processes:
        process.stop()


def open_stream(port: int, max_tokens: int) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/v1/completions", body=json.dumps({
        "model": TINY, "prompt": "Hello", "max_tokens": max_tokens, "temperature": 0,
        "logit_bias": NO_EOS, "stream": True, "stream_options": {"include_usage": True}}),
        headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    assert response.readline().startswith(b"data: ")  # under way
    return response


def refused(port: int) -> bool:
    """Whether a new connection is turned away: refused, reset, closed unanswered, or 503."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except ConnectionRefusedError:
        return True
    with sock:
        try:
            sock.sendall(b"GET /v1/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = sock.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:  # accepted just before the close, answered late on a busy box
            return False  # not refused yet: wait_for asks again
    return answer == b"" or answer.startswith(b"HTTP/1.1 503")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_lets_the_request_in_flight_finish_then_exits_0(repository, start, sig):
    # The exit timeout is far longer than the request: exiting once it is done is the point.
    server = start(repository, "--exit-timeout-secs", "120")
    max_tokens = 3000
    response = open_stream(server.ports["OpenAI API"], max_tokens)
    server.process.send_signal(sig)
    for port in server.ports.values():
        wait_for(lambda port=port: refused(port), what=f"port {port} to refuse connections")
    assert server.process.poll() is None  # still finishing the request

    data = response.read()
    events = [json.loads(line[6:]) for line in data.split(b"\n") if line.startswith(b"data: {")]
    assert data.rstrip().endswith(b"data: [DONE]")
    assert events[-1]["usage"]["completion_tokens"] == max_tokens
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert server.process.wait(60) == 0
    assert "shutting down: finishing in-flight requests (up to 120 s)" in server.log
    assert server.log.rstrip().endswith("stopped"), server.log[-2000:]


def test_a_request_still_running_when_the_exit_timeout_ends_is_cut(repository, start):
    server = start(repository, "--exit-timeout-secs", "0.5")
    response = open_stream(server.ports["OpenAI API"], 8000)  # many seconds of tokens
    server.process.send_signal(signal.SIGTERM)
    with pytest.raises(http.client.IncompleteRead) as cut:
        response.read()
    assert b"[DONE]" not in cut.value.partial
    assert server.process.wait(60) == 0
    assert server.log.rstrip().endswith("stopped"), server.log[-2000:]


def test_a_second_signal_cuts_the_requests_in_flight_at_once(repository, start):
    server = start(repository, "--exit-timeout-secs", "120")
    response = open_stream(server.ports["OpenAI API"], 8000)  # many seconds of tokens
    server.process.send_signal(signal.SIGINT)
    wait_for(lambda: "shutting down" in server.log, what="the server to log its shutdown")
    server.process.send_signal(signal.SIGINT)  # Ctrl-C twice: do not wait 120 s
    with pytest.raises(http.client.IncompleteRead) as cut:
        response.read()
    assert b"[DONE]" not in cut.value.partial
    assert server.process.wait(30) == 0
    assert "second signal: cutting the requests still in flight" in server.log
    assert server.log.rstrip().endswith("stopped"), server.log[-2000:]

"""Hostile clients against a full server (the tiny model), on the OpenAI and the Triton ports.

The transport's own basics (431, 413, bad chunked framing, pipelining, HTTP/1.0, 100-continue,
one timeout at a time, the connection cap with a bare router) are in ``test_server.py``. Here:
hundreds of slow or idle connections held at once while real requests still get through;
absurd JSON bodies and parameter values, which must get a 4xx in the port's own error shape
(never a 500, never a hang) on a connection that keeps serving; the Content-Type rule; bad and
good requests pipelined on one connection. Request smuggling is in ``test_framing.py``.
"""

from __future__ import annotations

import json
import resource
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import openai
import pytest
import tritonclient.http as httpclient

from tests.conftest import TINY, RunningServer, make_config
from tests.waiting import wait_for

from .conftest import RawClient, RawResponse

HELLO = [{"role": "user", "content": "Hello"}]
BIG_INT = "1" + "0" * 9999  # beyond Python's 4300-digit int parsing limit
WIDE_INT = "1" + "0" * 400  # parses, but is beyond a float's range


def openai_error(response: RawResponse) -> dict:
    """The ``error`` object of an OpenAI error body, checking its shape."""
    assert response.headers.get("content-type") == "application/json", response
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    return error


def triton_error(response: RawResponse) -> str:
    """The message of Triton's ``{"error": "..."}`` body, checking its shape."""
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    return body["error"]


def post(client: RawClient, path: str, body: bytes, content_type: str | None = "application/json"):
    headers = [("Content-Type", content_type)] if content_type is not None else []
    client.request("POST", path, headers=headers, body=body)
    return client.read_response()


def still_serves(client: RawClient, path: str) -> None:
    """The same connection answers a good request after the bad one."""
    client.request("GET", path)
    assert client.read_response().status == 200
    client.sock.settimeout(0.05)  # and the server has not closed it meanwhile
    try:
        assert client.sock.recv(1) != b""
    except TimeoutError:
        pass
    finally:
        client.sock.settimeout(60)


# -- many slow and idle connections ------------------------------------------------------------

SLOW_TIMEOUT = 8.0  # header and body timeouts; far above the seconds the good requests take
SLOW_OPENAI = (200, 150, 150)  # idle, trickled head, trickled body: 500 on the OpenAI port
SLOW_TRITON = (40, 30, 30)  # and 100 on the Triton port


@pytest.fixture
def file_descriptors() -> Iterator[None]:
    """Two descriptors per connection (both ends live in this process), plus headroom."""
    needed = 2 * (sum(SLOW_OPENAI) + sum(SLOW_TRITON)) + 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        yield
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} file descriptors; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def slow_server(tiny_repository, file_descriptors) -> Iterator[RunningServer]:
    """Short header/body timeouts (--header-timeout-secs, --body-timeout-secs) and a
    connection cap (--max-connections) above the herd."""
    config = make_config(tiny_repository, header_timeout_secs=SLOW_TIMEOUT,
                         body_timeout_secs=SLOW_TIMEOUT, max_connections=1000)
    with RunningServer(config) as server:
        yield server


@dataclass
class Slow:
    sock: socket.socket
    kind: str  # "idle": sends nothing; "head": trickles a header line; "body": trickles a body
    triton: bool
    received: bytearray = field(default_factory=bytearray)
    done: bool = False  # the server closed it


def open_slow(port: int, kind: str, triton: bool) -> Slow:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    if kind == "head":
        path = "/v2/models" if triton else "/v1/models"
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: slow\r\nX-Slow: ".encode())
    elif kind == "body":
        path = f"/v2/models/{TINY}/generate" if triton else "/v1/chat/completions"
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\n"
            f"Content-Length: 100000\r\n\r\n{{".encode()
        )
    sock.setblocking(False)
    return Slow(sock, kind, triton)


def trickle(herd: list[Slow], stop: threading.Event) -> None:
    """One more byte to every slow head and body, twice a second, until the server hangs up."""
    while not stop.wait(0.5):
        for slow in herd:
            if slow.kind != "idle" and not slow.done:
                try:
                    slow.sock.send(b"a")
                except (BlockingIOError, OSError):
                    pass  # closed by the server (or its buffer is full): nothing to add


def read_until_closed(herd: list[Slow], timeout: float) -> list[Slow]:
    """Collect what the server sends each connection until it closes; return those still open."""
    selector = selectors.DefaultSelector()
    for slow in herd:
        selector.register(slow.sock, selectors.EVENT_READ, slow)
    deadline = time.monotonic() + timeout
    open_count = len(herd)
    while open_count and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            slow: Slow = key.data
            try:
                data = slow.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:  # reset after the answer was read: closed all the same
                data = b""
            if data:
                slow.received += data
            else:
                slow.done = True
                selector.unregister(slow.sock)
                open_count -= 1
    selector.close()
    return [slow for slow in herd if not slow.done]


def check_cut_off(slow: Slow) -> None:
    """Idle connections are closed without a word; slow heads and bodies get a 408 first."""
    if slow.kind == "idle":
        assert bytes(slow.received) == b"", slow.received[:200]
        return
    head, _, body = bytes(slow.received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), slow.received[:200]
    assert b"\r\nconnection: close" in head.lower()
    document = json.loads(body)
    phase = "headers" if slow.kind == "head" else "body"
    if slow.triton:
        assert document == {"error": f"timed out waiting for the request {phase}"}
    else:
        assert document["error"]["message"] == f"timed out waiting for the request {phase}"
        assert document["error"]["type"] == "timeout_error"


def good_requests(server: RunningServer) -> None:
    """A chat completion (OpenAI SDK), Triton readiness, and an infer (tritonclient)."""
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=60)
    chat = client.chat.completions.create(model=TINY, messages=HELLO, max_tokens=3)
    assert chat.choices[0].finish_reason in ("stop", "length")
    client.close()
    triton = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    assert triton.is_server_ready()
    text = httpclient.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"Hello"], dtype=object))
    result = triton.infer(TINY, [text])
    assert result.as_numpy("text_output")[0].decode().startswith("Hello")
    triton.close()


def test_slow_and_idle_connections_do_not_starve_others_and_are_cut_off(slow_server):
    herd = [
        open_slow(port, kind, triton)
        for port, counts, triton in (
            (slow_server.port, SLOW_OPENAI, False),
            (slow_server.http_port, SLOW_TRITON, True),
        )
        for kind, count in zip(("idle", "head", "body"), counts, strict=True)
        for _ in range(count)
    ]
    stop = threading.Event()
    trickler = threading.Thread(target=trickle, args=(herd, stop), daemon=True)
    trickler.start()
    try:
        openai_port, triton_port = slow_server.server.openai, slow_server.server.http
        wait_for(lambda: openai_port.active_connections >= sum(SLOW_OPENAI)
                 and triton_port.active_connections >= sum(SLOW_TRITON),
                 what="the herd to be connected")

        good_requests(slow_server)

        # The herd was still held while those were served: none has been answered or closed.
        assert openai_port.active_connections >= sum(SLOW_OPENAI)
        assert triton_port.active_connections >= sum(SLOW_TRITON)
        assert read_until_closed(herd, timeout=0) == herd

        # Then the timeouts cut every one of them off (a 408 after the linger, or silence).
        left = read_until_closed(herd, timeout=2 * SLOW_TIMEOUT + 30)
        assert not left, f"{len(left)} slow connections were never closed"
    finally:
        stop.set()
        trickler.join(5)
        for slow in herd:
            slow.sock.close()
    for slow in herd:
        check_cut_off(slow)
    wait_for(lambda: openai_port.active_connections == 0
             and triton_port.active_connections == 0, what="every connection to be gone")
    good_requests(slow_server)  # and the server is none the worse


# -- the connection cap -------------------------------------------------------------------------


def test_connection_cap_refuses_clearly_and_frees_up(tiny_repository):
    cap = 16
    # Long timeouts: the held connections must not be closed while the test runs.
    config = make_config(tiny_repository, header_timeout_secs=120.0, max_connections=cap)
    with RunningServer(config) as server:
        for port, http_server, path, triton in (
            (server.port, server.server.openai, "/v1/models", False),
            (server.http_port, server.server.http, "/v2/health/ready", True),
        ):
            held = [socket.create_connection(("127.0.0.1", port)) for _ in range(cap)]
            try:
                wait_for(lambda s=http_server: s.active_connections == cap,
                         what=f"{cap} connections held")
                refused = RawClient(port, timeout=30)
                refused.request("GET", path)
                response = refused.read_response()
                assert response.status == 503
                message = triton_error(response) if triton else openai_error(response)["message"]
                assert f"connection limit ({cap})" in message and "retry" in message
                assert refused.closed_by_server()
                refused.close()
                for sock in held[:4]:  # clients leave: their places are free again
                    sock.close()
                wait_for(lambda s=http_server: s.active_connections == cap - 4,
                         what="4 places freed")
                client = RawClient(port, timeout=30)
                client.request("GET", path)
                assert client.read_response().status == 200
                client.close()
            finally:
                for sock in held:
                    sock.close()


# -- hostile JSON bodies ------------------------------------------------------------------------

OPENAI_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
TRITON_ROUTES = (f"/v2/models/{TINY}/infer", f"/v2/models/{TINY}/generate",
                 f"/v2/models/{TINY}/generate_stream")

BAD_BODIES = {
    "not UTF-8": b'{"model": "tiny", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
    "100000 nested [": b"[" * 100_000,
    "100000 nested {": b'{"a":' * 100_000,
    "empty": b"",
    "whitespace": b" \r\n ",
    "array": b'[{"model": "tiny"}]',
    "string": b'"hello"',
    "null": b"null",
    "true": b"true",
    "number 1e999": b"1e999",
    "NaN": b"NaN",
    "10000-digit integer": BIG_INT.encode(),
    "truncated": b'{"model": "tiny", "messages": [',
    "trailing garbage": b'{"model": "tiny"} x',
    "lone surrogate escape": b'{"model": "\\ud800"}',
    "NUL byte": b'{"model": "tiny\x00"}',
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_bad_json_bodies_get_400_in_openai_shape(tiny_server, connect, name):
    client = connect(tiny_server.port, timeout=60)
    for path in OPENAI_ROUTES:
        response = post(client, path, BAD_BODIES[name])
        assert response.status == 400, (path, response)
        openai_error(response)
    still_serves(client, "/v1/models")


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_bad_json_bodies_get_400_in_triton_shape(tiny_server, connect, name):
    client = connect(tiny_server.http_port, timeout=60)
    for path in TRITON_ROUTES:
        response = post(client, path, BAD_BODIES[name])
        assert response.status == 400, (path, response)
        triton_error(response)
    still_serves(client, "/v2/health/ready")


BAD_NUMBERS = {  # JSON literal -> does it reach the validator (which then names the field)?
    "1e999": True,
    "-1e999": True,
    "NaN": True,
    "Infinity": True,
    "-Infinity": True,
    WIDE_INT: True,
    "-" + WIDE_INT: True,
    BIG_INT: False,  # refused by the JSON parser already
}
NUMBER_FIELDS = ("max_tokens", "temperature", "top_p", "top_k", "min_p", "seed",
                 "frequency_penalty", "presence_penalty", "repetition_penalty", "n")


def number_id(literal: str) -> str:
    digits = len(literal.lstrip("-"))
    return literal if digits < 12 else f"{literal[0] if literal[0] == '-' else ''}{digits}-digits"


def refused(name: str, literal: str) -> bool:
    """Whether the value is out of the field's range. A top_k beyond the vocabulary is no
    limit at all, as top_k=0 is: accepted (a huge integer included)."""
    return not (name == "top_k" and literal == WIDE_INT)


@pytest.mark.parametrize("literal", list(BAD_NUMBERS), ids=number_id)
def test_absurd_numbers_are_400_naming_the_parameter(tiny_server, connect, literal):
    client = connect(tiny_server.port, timeout=60)
    for path, base in (
        ("/v1/chat/completions", f'{{"model": "{TINY}", "messages": {json.dumps(HELLO)}'),
        ("/v1/completions", f'{{"model": "{TINY}", "prompt": "Hello"'),
    ):
        for name in NUMBER_FIELDS:
            length = "" if name == "max_tokens" else ', "max_tokens": 1'
            response = post(client, path, f'{base}, "{name}": {literal}{length}}}'.encode())
            if not refused(name, literal):
                assert response.status == 200, (path, name, response)
                continue
            assert response.status == 400, (path, name, response)
            error = openai_error(response)
            assert error["param"] == (name if BAD_NUMBERS[literal] else None), error
        response = post(client, path, f'{base}, "logit_bias": {{"1": {literal}}}}}'.encode())
        assert response.status == 400, (path, response)
    still_serves(client, "/v1/models")


@pytest.mark.parametrize("literal", list(BAD_NUMBERS), ids=number_id)
def test_absurd_numbers_are_400_on_the_triton_port(tiny_server, connect, literal):
    client = connect(tiny_server.http_port, timeout=60)
    generate = f"/v2/models/{TINY}/generate"
    for name in NUMBER_FIELDS[:-1]:  # (n is a no-op parameter there; checked below)
        # As a key of the generate request, and inside the sampling_parameters JSON string.
        length = "" if name == "max_tokens" else ', "max_tokens": 1'
        as_key = f'{{"text_input": "Hello", "{name}": {literal}{length}}}'
        inner = json.dumps(f'{{"{name}": {literal}{length}}}')
        as_string = f'{{"text_input": "Hello", "sampling_parameters": {inner}}}'
        for body in (as_key, as_string):
            response = post(client, generate, body.encode())
            if not refused(name, literal):
                assert response.status == 200, (body[:80], response)
                continue
            assert response.status == 400, (body[:80], response)
            triton_error(response)
    inner = json.dumps(f'{{"logit_bias": {{"1": {literal}}}, "n": {literal}}}')
    response = post(client, generate, f'{{"text_input": "Hi", "sampling_parameters": {inner}}}'
                    .encode())
    assert response.status == 400
    triton_error(response)
    still_serves(client, "/v2/health/ready")


def test_absurd_path_and_header_numbers_on_the_triton_port(tiny_server, connect):
    client = connect(tiny_server.http_port, timeout=60)
    client.request("GET", f"/v2/models/{TINY}/versions/{BIG_INT}")
    response = client.read_response()
    assert response.status == 404 and "not found" in triton_error(response)
    client.request("POST", f"/v2/models/{TINY}/infer", body=b"{}",
                   headers=[("Inference-Header-Content-Length", BIG_INT[:5000])])
    response = client.read_response()
    assert response.status == 400
    triton_error(response)
    inner = json.dumps(json.dumps({"logit_bias": {"1" * 5000: 1}}))
    response = post(client, f"/v2/models/{TINY}/generate",
                    f'{{"text_input": "Hi", "sampling_parameters": {inner}}}'.encode())
    assert response.status == 400 and "logit_bias" in triton_error(response)
    still_serves(client, "/v2/health/ready")


# -- the Content-Type rule ----------------------------------------------------------------------

# OpenAI's port: a missing (or empty) Content-Type is taken as JSON; a JSON media type is
# accepted whatever its parameters and case; anything else is a 415 naming what was sent (or a
# 400 if there is no body either). The Triton port, like Triton, does not look at Content-Type
# at all: tritonclient sends binary tensors after the JSON header in the same body.
ACCEPTED = (None, "", "application/json", "application/json; charset=utf-8",
            "Application/JSON;charset=UTF-8", "application/json ; charset=\"utf-8\"",
            "text/json", "application/vnd.example+json")
REFUSED = ("text/plain", "application/x-www-form-urlencoded",
           "multipart/form-data; boundary=x", "application/jsonx", "application/x-ndjson",
           "application/octet-stream", "json")


def test_content_type_rule_on_the_openai_port(tiny_server, connect):
    body = json.dumps({"model": TINY, "messages": HELLO, "max_tokens": 1}).encode()
    client = connect(tiny_server.port, timeout=60)
    for content_type in ACCEPTED:
        response = post(client, "/v1/chat/completions", body, content_type)
        assert response.status == 200, (content_type, response)
    for content_type in REFUSED:
        response = post(client, "/v1/chat/completions", body, content_type)
        assert response.status == 415, (content_type, response)
        assert content_type.lower() in openai_error(response)["message"]
        response = post(client, "/v1/chat/completions", b"", content_type)
        assert response.status == 400
        openai_error(response)
    still_serves(client, "/v1/models")


def test_the_triton_port_ignores_content_type_like_triton(tiny_server, connect):
    body = json.dumps({"text_input": "Hi", "max_tokens": 1}).encode()
    client = connect(tiny_server.http_port, timeout=60)
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
        response = post(client, f"/v2/models/{TINY}/generate", body, content_type)
        assert response.status == 200, (content_type, response)
        assert response.json()["text_output"]


# -- mixed pipelines ----------------------------------------------------------------------------


def test_bad_then_good_requests_pipelined_on_one_connection(tiny_server, connect):
    good_chat = json.dumps({"model": TINY, "messages": HELLO, "max_tokens": 2}).encode()
    good_generate = json.dumps({"text_input": "Hi", "max_tokens": 2}).encode()

    def request(method: str, path: str, body: bytes = b"", content_type: str = "application/json"):
        head = f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\n"
        return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body

    client = connect(tiny_server.port, timeout=60)
    client.send(
        request("POST", "/v1/chat/completions", b"[" * 100_000)
        + request("GET", "/v1/models")
        + request("POST", "/v1/chat/completions", good_chat, "text/plain")
        + request("POST", "/v1/completions", f'{{"model": "{TINY}", "prompt": "x", '
                  f'"max_tokens": {BIG_INT}}}'.encode())
        + request("POST", "/v1/chat/completions", good_chat)
        + request("GET", "/v1/nowhere")
        + request("GET", "/v1/health/ready")
    )
    statuses = [client.read_response().status for _ in range(7)]
    assert statuses == [400, 200, 415, 400, 200, 404, 200]
    still_serves(client, "/v1/models")

    client = connect(tiny_server.http_port, timeout=60)
    client.send(
        request("POST", f"/v2/models/{TINY}/generate", b"\xff")
        + request("GET", "/v2/health/ready")
        + request("POST", f"/v2/models/{TINY}/infer", b"null")
        + request("POST", f"/v2/models/{TINY}/generate", good_generate)
        + request("GET", f"/v2/models/{TINY}/versions/{BIG_INT}")
        + request("POST", f"/v2/models/{TINY}/generate_stream", good_generate)
    )
    responses = [client.read_response() for _ in range(6)]
    assert [r.status for r in responses] == [400, 200, 400, 200, 404, 200]
    assert responses[3].json()["text_output"] and responses[5].body.startswith(b"data: {")
    still_serves(client, "/v2/health/ready")

"""Request smuggling (RFC 9112 6.1, 6.3), on the OpenAI and the Triton ports.

Request heads whose body length two HTTP parsers could read differently: a proxy in front going
by one header and this server by another would disagree on where the next request starts. Each
must get a 400 in the port's error shape that closes the connection, so that nothing sent after
it (here: a request hidden in its body, and one pipelined behind it) is ever served.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import TINY

from .conftest import RawClient
from .test_hostile import openai_error, triton_error

AMBIGUOUS_FRAMING = {
    "Content-Length and chunked": ("1.1", "Content-Length: {length}\r\nTransfer-Encoding: chunked",
                                   "Content-Length"),
    "chunked and Content-Length": ("1.1", "Transfer-Encoding: chunked\r\nContent-Length: {length}",
                                   "Content-Length"),
    "chunked, chunked": ("1.1", "Transfer-Encoding: chunked, chunked", "Transfer-Encoding"),
    "gzip, chunked": ("1.1", "Transfer-Encoding: gzip, chunked", "Transfer-Encoding"),
    "two Transfer-Encoding headers": (
        "1.1", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", "Transfer-Encoding"),
    "two different Content-Lengths": ("1.1", "Content-Length: {length}\r\nContent-Length: 5",
                                      "Content-Length"),
    "a Content-Length list": ("1.1", "Content-Length: {length}, 5", "Content-Length"),
    "chunked in HTTP/1.0": ("1.0", "Transfer-Encoding: chunked", "Transfer-Encoding"),
}
CLEAR_FRAMING = {  # the same request framed one way only: served, and the connection kept
    "Content-Length": "Content-Length: {length}",
    "chunked": "Transfer-Encoding: chunked",
    "the same Content-Length twice": "Content-Length: {length}\r\nContent-Length: {length}",
}
PORTS = {  # (port attribute, route posted to, route smuggled and pipelined, error shape)
    "openai": ("port", "/v1/chat/completions", "/v1/models", False),
    "triton": ("http_port", f"/v2/models/{TINY}/generate", "/v2/health/ready", True),
}
GOOD_BODIES = {
    "openai": {"model": TINY, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1},
    "triton": {"text_input": "Hi", "max_tokens": 1},
}


@pytest.mark.parametrize("port_name", list(PORTS))
@pytest.mark.parametrize("case", list(AMBIGUOUS_FRAMING))
def test_ambiguous_body_length_is_refused_and_ends_the_connection(tiny_server, port_name, case):
    port_attr, path, other_path, triton = PORTS[port_name]
    version, framing, named = AMBIGUOUS_FRAMING[case]
    hidden = f"GET {other_path} HTTP/1.1\r\nHost: t\r\n\r\n"
    body = "0\r\n\r\n" + hidden  # chunked: empty, then a request; by Content-Length: all body
    attack = (f"POST {path} HTTP/{version}\r\nHost: t\r\nContent-Type: application/json\r\n"
              f"{framing.format(length=len(body))}\r\n\r\n{body}")
    pipelined = f"GET {other_path} HTTP/1.1\r\nHost: t\r\n\r\n"
    client = RawClient(getattr(tiny_server, port_attr), timeout=60)
    try:
        client.send((attack + pipelined).encode())
        client.buf = client.read_to_eof()  # everything the server sends, until it closes
        response = client.read_response()
        after = client.buf
    finally:
        client.close()
    assert response.status == 400, response
    assert after == b"", after[:300]  # exactly one response: nothing else was served
    assert response.headers["connection"] == "close"
    message = triton_error(response) if triton else openai_error(response)["message"]
    assert named in message, message


@pytest.mark.parametrize("port_name", list(PORTS))
@pytest.mark.parametrize("case", list(CLEAR_FRAMING))
def test_clear_body_length_is_served_and_keeps_the_connection(tiny_server, port_name, case):
    port_attr, path, other_path, _ = PORTS[port_name]
    document = json.dumps(GOOD_BODIES[port_name])
    body = f"{len(document):x}\r\n{document}\r\n0\r\n\r\n" if case == "chunked" else document
    request = (f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               f"{CLEAR_FRAMING[case].format(length=len(body))}\r\n\r\n{body}")
    pipelined = f"GET {other_path} HTTP/1.1\r\nHost: t\r\n\r\n"
    client = RawClient(getattr(tiny_server, port_attr), timeout=60)
    try:
        client.send((request + pipelined).encode())
        statuses = [client.read_response().status for _ in range(2)]
        client.request("GET", other_path)  # the connection still serves
        statuses.append(client.read_response().status)
    finally:
        client.close()
    assert statuses == [200, 200, 200]

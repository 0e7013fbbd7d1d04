"""Raw HTTP to the Triton port, for the tests that need exact control of bytes and headers."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

import tritonclient.http as httpclient


def client(server, **kwargs) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}", **kwargs)


def request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Send one request; return (status, lower-cased headers, body bytes)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    connection.request(method, path, body=payload, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def error(data: bytes) -> str:
    """The message of Triton's error body, checking its shape: exactly ``{"error": str}``."""
    body = json.loads(data)
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    return body["error"]


def sse_events(data: bytes) -> list[dict]:
    """The JSON of each ``data:`` event of an SSE body (every event must be JSON)."""
    text = data.decode("utf-8")
    assert text.endswith("\n\n"), text
    events = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: ") and "\n" not in block, block
        events.append(json.loads(block[len("data: "):]))
    return events


def open_stream(port: int, path: str, body: dict) -> socket.socket:
    """Start a POST on a raw socket, for tests that hang up mid-response."""
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload
    )
    return sock

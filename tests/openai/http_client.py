"""A few lines of raw HTTP for the tests that need exact control over what is sent."""

from __future__ import annotations

import http.client
import json


def request(port: int, method: str, path: str, body=None, headers=None, raw: bytes | None = None):
    """Send one request; return (status, headers dict, parsed JSON or text)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    connection.request(method, path, body=payload, headers=all_headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    text = data.decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    return response.status, {k.lower(): v for k, v in response.getheaders()}, parsed

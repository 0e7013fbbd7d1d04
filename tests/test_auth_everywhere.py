"""``--api-key`` on every port and every route, against path tricks and header tricks, and kept
out of the logs together with the prompts.

The routes come from the routers the server runs, so a route added later is covered without
touching this file. The only exemptions are the documented health routes. The metrics port
requires the key too (Prometheus sends it with ``authorization: {credentials: KEY}``).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import http.client
import json
import logging
import re
import socket
from collections.abc import Iterator

import numpy as np
import openai
import pytest
import tritonclient.http as httpclient

from tests.conftest import TINY, RunningServer, make_config
from tests.waiting import wait_for
from triton_mlx.auth import bearer_auth
from triton_mlx.http import Headers, Request, Response
from triton_mlx.observability.logs import HumanFormatter, JsonFormatter

KEY = "sk-key-QUOKKA-7781"
WRONG = "sk-wrong-WOMBAT-3316"
PROMPT = "PROMPT-PANGOLIN-5150"
BEARER = [("Authorization", f"Bearer {KEY}")]
# README: "require Authorization: Bearer KEY (health routes exempt)".
EXEMPT = {"/v1/health/live", "/v1/health/ready", "/v2/health/live", "/v2/health/ready"}


@pytest.fixture(scope="module")
def keyed(tiny_repository) -> Iterator[RunningServer]:
    with RunningServer(make_config(tiny_repository, api_key=KEY)) as server:
        yield server


def send(
    port: int, target: str, method: str = "GET", headers=(), body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """Exactly these bytes on a fresh connection: the target and the headers go unmodified."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        data = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def refused(port_kind: str, status: int, headers: dict[str, str], data: bytes) -> str:
    """Check a 401 in the port's own error shape, with its challenge; return the message."""
    assert status == 401, (status, data[:300])
    assert headers["www-authenticate"].startswith("Bearer"), headers
    body = json.loads(data)
    if port_kind == "openai" and body.get("type") == "error":  # Anthropic's, on /v1/messages
        assert set(body) == {"type", "error"} and set(body["error"]) == {"type", "message"}
        assert body["error"]["type"] == "authentication_error", body
        return body["error"]["message"]
    if port_kind == "openai":
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}, body
        assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
        return error["message"]
    assert set(body) == {"error"} and isinstance(body["error"], str), body  # Triton's shape
    return body["error"]


def ports(server: RunningServer) -> dict[str, tuple[int, object]]:
    return {
        "openai": (server.port, server.server.openai.app),
        "triton": (server.http_port, server.server.http.app),
        "metrics": (server.metrics_port, server.server.metrics_http.app),
    }


def concrete(pattern: str) -> str:
    """A path the pattern matches: version 1 of the tiny model."""
    return re.sub(r"\{(\w+)(?::\w+)?\}",
                  lambda m: "1" if m.group(1) == "version" else TINY, pattern)


def every_route(server: RunningServer) -> list[tuple[str, int, str, str]]:
    routes = []
    for kind, (port, router) in ports(server).items():
        for methods, pattern in router.routes():
            routes += [(kind, port, method, concrete(pattern)) for method in sorted(methods)]
    return routes


def test_every_route_on_every_port_needs_the_key(keyed):
    routes = every_route(keyed)
    counts = {kind: sum(r[0] == kind for r in routes) for kind in ("openai", "triton", "metrics")}
    assert counts["openai"] >= 10 and counts["triton"] >= 20 and counts["metrics"] >= 1, counts
    exempted = set()
    for kind, port, method, path in routes:
        where = f"{kind} {method} {path}"
        if path in EXEMPT:  # answered without a key, and with a wrong one
            for headers in ((), [("Authorization", f"Bearer {WRONG}")]):
                status, _, _ = send(port, path, method, headers)
                assert status in (200, 400, 503), where  # Triton says "not ready" with 400
            exempted.add(path)
            continue
        message = refused(kind, *send(port, path, method))
        assert "missing API key" in message, where
        wrong = [("Authorization", f"Bearer {WRONG}")]
        assert refused(kind, *send(port, path, method, wrong)) == "invalid API key", where
        status, _, data = send(port, path, method, BEARER)  # the route is real, and opens
        assert status not in (401, 500), (where, status, data[:200])
    assert exempted == EXEMPT  # each documented exemption exists, and there are no others


# Request targets that spell another route (or the models list) in ways that normalising
# proxies, or a server that normalised, would take for a health route or for /v1/models.
# None may get past the key: routing never normalises, and the exemption is an exact match.
OPENAI_TRICKS = [
    "//v1/models", "/v1//models", "/v1/models/", "/V1/MODELS", "/v1/./models", "/./v1/models",
    "/v1/health/ready/../../models", "/v1/health/live/../../models",
    "/v1/health/ready/%2e%2e/%2e%2e/models", "/v1/health/ready/%2E%2E/%2E%2E/models",
    "/v1/health/%2e%2e/models", "/v1/health/ready/..%2f..%2fmodels",
    "/v1/health/ready%2f..%2fmodels", "/v1/health/ready%2F..%2F..%2Fv1%2Fmodels",
    "/v1/health/ready%2f%2e%2e%2f%2e%2e%2fmodels", "/v1/health/ready%252f..%252fmodels",
    "/v1/health/ready/", "/v1/health/ready%00", "/v1/health/ready%00/../../models",
    "/v1/health/ready;/../../models", "/v1/models;.json", "/v1/health/ready;x",
    "/v1/health/ready\\..\\..\\models", "/v1/health/ready#/../../models",
    "/v1/models#/v1/health/ready", "/%76%31/models", "/v1/%6dodels",
    "http://127.0.0.1/v1/models", "http://127.0.0.1/v1/health/ready/../../models",
    "http://127.0.0.1:1/v1/models?x=/v1/health/ready", "//127.0.0.1/v1/models",
    "/v1/health/ready/../../chat/completions", "/v1/models/../models", "/v1/models/..",
    "/v1/models/%2e%2e", "/v1/health/ready/..;/..;/models",
]
TRITON_TRICKS = [
    f"/v2/health/ready/../../models/{TINY}", f"/v2/health/ready%2f..%2f..%2fmodels%2f{TINY}",
    f"/v2//models/{TINY}", f"/V2/MODELS/{TINY}", f"/v2/models/{TINY}/", f"/v2/./models/{TINY}",
    f"/v2/health/live;/../../models/{TINY}", f"http://127.0.0.1/v2/models/{TINY}",
    "/v2/health/ready/", "/v2/health/ready%00", "/v2/", "//v2", f"/v2/models/{TINY}%2fconfig",
    f"/v2/health/ready/../../models/{TINY}/versions/1/config", "/v2/models/stats/",
]
METRICS_TRICKS = ["/metrics/", "//metrics", "/METRICS", "/metrics;x", "/./metrics",
                  "/%6detrics", "http://127.0.0.1/metrics", "/metrics%00", "/metrics#x"]


def test_path_tricks_do_not_bypass_the_key(keyed):
    for kind, tricks in (("openai", OPENAI_TRICKS), ("triton", TRITON_TRICKS),
                         ("metrics", METRICS_TRICKS)):
        port = ports(keyed)[kind][0]
        for target in tricks:
            for method in ("GET", "POST", "HEAD"):
                status, headers, data = send(port, target, method)
                if method == "HEAD":  # no body to read the shape from
                    assert status == 401 and "www-authenticate" in headers, (target, status)
                else:
                    refused(kind, status, headers, data)
                # With the key, such a target is simply another path: never a server error.
                assert send(port, target, method, BEARER)[0] < 500, (target, method)
        for method in ("DELETE", "PUT", "OPTIONS", "PATCH"):  # before routing, so no 405
            target = {"openai": "/v1/models", "triton": f"/v2/models/{TINY}"}.get(kind, "/metrics")
            refused(kind, *send(port, target, method))
        refused(kind, *send(port, "*", "OPTIONS"))


def test_query_strings_and_decoded_spellings_reach_only_the_health_routes(keyed):
    # The path is what is exempt, not the target: a query string cannot change the route, and
    # a percent-encoded spelling of the health path is the health route itself.
    for target in ("/v1/health/ready?x=/../models", "/v1/health/ready?/v1/models",
                   "/v1/health/%72eady", "/v1/health/ready?api_key=x#../models"):
        status, _, data = send(keyed.port, target)
        assert status == 200 and json.loads(data)["status"] == "ready", target
    for target in (f"/v2/health/ready?x=/../../v2/models/{TINY}", "/v2/health/%72eady"):
        status, _, data = send(keyed.http_port, target)
        assert status == 200 and data == b"", target  # Triton's readiness: an empty 200
    refused("openai", *send(keyed.port, "/v1/models?x=/v1/health/ready"))


def test_header_tricks_are_refused(keyed):
    basic = base64.b64encode(f"user:{KEY}".encode()).decode()
    refusals = [
        [], [("Authorization", "")], [("Authorization", "Bearer")], [("Authorization", "Bearer ")],
        [("Authorization", f"Basic {basic}")], [("Authorization", f"Basic {KEY}")],
        [("Authorization", f"Token {KEY}")], [("Authorization", KEY)],
        [("Authorization", f"Bearer{KEY}")], [("Authorization", f"Bearer {KEY[:-1]}")],
        [("Authorization", f"Bearer {KEY}x")], [("Authorization", f"Bearer {KEY} {KEY}")],
        [("Authorization", f"Bearer {KEY.upper()}")], [("Authorization", f"Bearer\t{KEY}")],
        [("Authorization", f"Bearer {KEY},")], [("Authorization", f'Bearer "{KEY}"')],
        [("Authorization", f"Bearer {KEY}"), ("Authorization", f"Bearer {WRONG}")],
        [("Authorization", f"Bearer {WRONG}"), ("Authorization", f"Bearer {KEY}")],
        [("Authorization", f"Bearer {KEY}"), ("Authorization", f"Bearer {KEY}")],
        [("X-API-Key", KEY)], [("Api-Key", KEY)], [("Proxy-Authorization", f"Bearer {KEY}")],
        [("Authorization", f"Bearer {KEY}\x00")], [("Authorization", "Bearer \xe9" + KEY)],
    ]
    # The scheme is case-insensitive (RFC 9110 11.1); whitespace around the credentials is
    # not part of them, so a doubled space or a trailing one is forgiven. The key itself is
    # compared exactly.
    accepted = [f"Bearer {KEY}", f"bearer {KEY}", f"BEARER {KEY}", f"Bearer  {KEY}",
                f"Bearer {KEY} ", f" Bearer {KEY}"]
    for kind, (port, _) in ports(keyed).items():
        target = {"openai": "/v1/models", "triton": f"/v2/models/{TINY}"}.get(kind, "/metrics")
        for headers in refusals:
            status, response_headers, data = send(port, target, headers=headers)
            if status == 400:  # h11 refuses some bytes in a header value before we see it
                assert any("\x00" in v for _, v in headers), headers
                continue
            refused(kind, status, response_headers, data)
        refused(kind, *send(port, f"{target}?api_key={KEY}"))
        refused(kind, *send(port, f"{target}?key={KEY}&token={KEY}"))
        for value in accepted:
            assert send(port, target, headers=[("Authorization", value)])[0] == 200, value


def test_sdk_clients_with_the_key_work_and_without_fail(keyed):
    client = openai.OpenAI(base_url=keyed.base_url, api_key=KEY, max_retries=0)
    chat = client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "Hi"}],
                                          max_tokens=2)
    assert chat.choices[0].message.content is not None
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed.base_url, api_key=WRONG, max_retries=0).models.list()


def test_the_comparison_is_constant_time(monkeypatch):
    """The decision is hmac.compare_digest's: a spy that says no refuses even the right key."""
    calls: list[tuple[bytes, bytes]] = []
    verdict = {"value": True}

    def spy(a, b):
        calls.append((a, b))
        return verdict["value"]

    monkeypatch.setattr(hmac, "compare_digest", spy)
    middleware = bearer_auth(KEY, exempt_paths=(), unauthorized=lambda m: Response(401))

    async def handler(request: Request) -> Response:
        return Response(200)

    def status(authorization: str) -> int:
        request = Request(method="GET", path="/x", raw_path="/x", query={},
                          headers=Headers([(b"authorization", authorization.encode())]), body=b"",
                          request_id="r", client=None, http_version="1.1")
        return asyncio.run(middleware(request, handler)).status

    assert status(f"Bearer {WRONG}") == 200 and calls[-1] == (WRONG.encode(), KEY.encode())
    verdict["value"] = False
    assert status(f"Bearer {KEY}") == 401 and calls[-1] == (KEY.encode(), KEY.encode())


# -- logs -----------------------------------------------------------------------------------------


@pytest.fixture
def all_logs(caplog) -> pytest.LogCaptureFixture:
    """Every record from every logger at DEBUG, while the test makes its requests."""
    caplog.set_level(logging.DEBUG)
    for name in ("triton_mlx", "triton_mlx.access"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def rendered(record: logging.LogRecord) -> str:
    """The record as both formatters write it: message, extra fields, traceback."""
    text = JsonFormatter().format(record) + "\n" + HumanFormatter().format(record)
    return text + "\n" + repr(vars(record))


def test_key_and_prompt_stay_out_of_the_logs(keyed, all_logs):
    chat = {"model": TINY, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 2}
    openai_requests = [
        ("/v1/chat/completions", chat, BEARER),
        ("/v1/chat/completions", {**chat, "stream": True}, BEARER),
        ("/v1/completions", {"model": TINY, "prompt": PROMPT, "max_tokens": 2, "echo": True},
         BEARER),
        ("/v1/chat/completions", {**chat, "temperature": 7}, BEARER),  # a 400
        ("/v1/chat/completions", {**chat, "stop": [PROMPT] * 99}, BEARER),  # a 400
        ("/v1/chat/completions", {**chat, "model": PROMPT}, BEARER),  # a 404
        ("/v1/completions", {"model": TINY, "prompt": PROMPT * 300}, BEARER),  # beyond context
        ("/v1/embeddings", {"model": TINY, "input": [PROMPT] * 3000}, BEARER),  # too many
        ("/v1/chat/completions", chat, [("Authorization", f"Bearer {WRONG}")]),  # a 401
        ("/v1/chat/completions", chat, [("Authorization", f"Basic {KEY}")]),  # a 401
        (f"/v1/models?api_key={KEY}&prompt={PROMPT}", None, []),  # a 401
    ]
    statuses = []
    for path, body, headers in openai_requests:
        data = json.dumps(body).encode() if body is not None else b""
        method = "POST" if body is not None else "GET"
        statuses.append(send(keyed.port, path, method,
                             [*headers, ("Content-Type", "application/json")], data)[0])
    generate = {"text_input": PROMPT, "max_tokens": 2}
    for path, body, headers in (
        (f"/v2/models/{TINY}/generate", generate, BEARER),
        (f"/v2/models/{TINY}/generate_stream", generate, BEARER),
        (f"/v2/models/{TINY}/generate", {**generate, "temperature": 9}, BEARER),  # a 400
        (f"/v2/models/{TINY}/generate", generate, [("Authorization", f"Bearer {WRONG}")]),
    ):
        statuses.append(send(keyed.http_port, path, "POST", headers,
                             json.dumps(body).encode())[0])
    triton = httpclient.InferenceServerClient(f"127.0.0.1:{keyed.http_port}")
    text = httpclient.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([PROMPT.encode()], dtype=object))
    assert PROMPT in triton.infer(TINY, [text], headers=dict(BEARER)).as_numpy(
        "text_output")[0].decode()
    triton.close()
    statuses.append(send(keyed.metrics_port, "/metrics", headers=[
        ("Authorization", f"Bearer {WRONG}")])[0])
    assert statuses == [200, 200, 200, 400, 400, 404, 400, 400, 401, 401, 401,
                        200, 200, 400, 401, 401]

    def access() -> list[logging.LogRecord]:
        return [r for r in all_logs.records if r.name == "triton_mlx.access"]

    # The capture saw the requests (each access line is written just after its response).
    wait_for(lambda: len(access()) >= len(statuses) + 1, what="an access line per request")
    assert {getattr(r, "status", None) for r in access()} >= {200, 400, 401, 404}
    prompt_lines = []
    for record in all_logs.records:
        text = rendered(record)
        # Keys, right or wrong, at no level at all.
        assert KEY not in text and WRONG not in text, text
        # Prompts never at INFO or above; at DEBUG, the prompt as the model sees it.
        if PROMPT in text:
            assert record.levelno == logging.DEBUG, text
            prompt_lines.append(record)
    assert prompt_lines and all(r.name == "triton_mlx.generation" for r in prompt_lines)

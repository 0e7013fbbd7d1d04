"""End-to-end tests of the HTTP transport over loopback sockets."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading
import time

import pytest

from tests.waiting import wait_for
from triton_mlx.http import (
    BodyDecodeError,
    Headers,
    Request,
    Response,
    Router,
    StreamingResponse,
    json_response,
    text_response,
)
from triton_mlx.observability.logs import ACCESS_LOGGER_NAME

from .conftest import error_formatter

HEX32 = re.compile(r"[0-9a-f]{32}")


# -- basics ------------------------------------------------------------------------------------


def test_get_with_transport_headers(server, connect):
    c = connect(server.port)
    c.request("GET", "/hello")
    r = c.read_response()
    assert (r.status, r.body) == (200, b"hello")
    h = r.headers
    assert h["content-length"] == "5"
    assert h["content-type"] == "text/plain; charset=utf-8"
    assert h["server"] == "triton-mlx"
    assert "date" in h
    assert HEX32.fullmatch(h["x-request-id"])


def test_post_with_content_length(server, connect):
    c = connect(server.port)
    c.request("POST", "/echo", body=b"payload \x00\xff bytes")
    r = c.read_response()
    assert (r.status, r.body) == (200, b"payload \x00\xff bytes")


def test_chunked_request_body(server, connect):
    c = connect(server.port)
    c.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    )
    r = c.read_response()
    assert (r.status, r.body) == (200, b"hello world")


def test_keep_alive_serves_several_requests(server, connect):
    c = connect(server.port)
    for body in (b"first", b"second"):
        c.request("POST", "/echo", body=body)
        assert c.read_response().body == body
    assert server.server.active_connections == 1


def test_pipelined_requests_answered_in_order(server, connect, probe):
    c = connect(server.port)
    c.send(
        b"GET /gated HTTP/1.1\r\nHost: t\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nnext"
    )
    assert probe.gated_started.wait(30)  # the second request is sent and waits its turn
    server.open(probe.gate)
    assert c.read_response().body == b"done"
    assert c.read_response().body == b"next"


def test_http10_closes_after_response(server, connect):
    c = connect(server.port)
    c.send(b"GET /hello HTTP/1.0\r\n\r\n")
    r = c.read_response()
    assert (r.status, r.body) == (200, b"hello")
    assert r.headers["connection"] == "close"
    assert c.closed_by_server()


def test_http10_streaming_is_raw_then_close(server, connect):
    c = connect(server.port)
    c.send(b"GET /sse HTTP/1.0\r\n\r\n")
    r = c.read_response()
    assert r.status == 200 and "transfer-encoding" not in r.headers
    assert r.body == b"data: one\n\ndata: two\n\ndata: three\n\n"


def test_expect_100_continue(server, connect):
    c = connect(server.port)
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert c.read_response().status == 100
    c.send(b"hello")
    r = c.read_response()
    assert (r.status, r.body) == (200, b"hello")


def test_expect_100_continue_too_large_gets_413_without_100(serve, connect):
    st = serve(max_body_bytes=10)
    c = connect(st.port)
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
    r = c.read_response()
    assert r.status == 413
    assert "10 bytes" in r.json()["error"]["message"]
    assert c.closed_by_server()


def test_head_has_headers_but_no_body(server, connect):
    c = connect(server.port)
    c.request("HEAD", "/hello")
    r = c.read_response(head_request=True)
    assert r.status == 200 and r.headers["content-length"] == "5"
    c.request("GET", "/hello")  # no stray body bytes were sent before this response
    assert c.read_response().body == b"hello"


# -- routing errors ----------------------------------------------------------------------------


def test_404_uses_error_formatter_and_keeps_connection(server, connect):
    c = connect(server.port)
    c.request("GET", "/nope")
    r = c.read_response()
    assert r.status == 404
    assert r.json()["error"]["code"] == 404
    assert HEX32.fullmatch(r.headers["x-request-id"])
    c.request("GET", "/hello")
    assert c.read_response().status == 200


def test_405_lists_allowed_methods(server, connect):
    c = connect(server.port)
    c.request("DELETE", "/echo")
    r = c.read_response()
    assert r.status == 405
    assert r.headers["allow"] == "POST, PUT"
    assert r.json()["error"]["code"] == 405
    c.request("POST", "/hello", body=b"x")
    assert c.read_response().headers["allow"] == "GET, HEAD"


def test_path_is_percent_decoded_query_parsed_trailing_slash_distinct(server, connect):
    c = connect(server.port)
    c.request("GET", "/params/hello%20w%C3%B6rld?x=1&x=2&y=&z=a%2Bb")
    body = c.read_response().json()
    assert body["params"] == {"name": "hello wörld"}
    assert body["query"] == {"x": ["1", "2"], "y": [""], "z": ["a+b"]}
    assert body["raw_path"] == "/params/hello%20w%C3%B6rld"
    c.request("GET", "/files/org/model/v1")
    assert c.read_response().json()["params"] == {"rest": "org/model/v1"}
    for path in ("/params/x/", "/hello/", "//hello", "/params/../hello", "/params/a%2Fb"):
        c.request("GET", path)
        assert c.read_response().status == 404, path


def test_absolute_form_targets_are_served_like_origin_form(server, connect):
    """RFC 9112 3.2.2: a server must accept http://host/path; the authority is ignored."""
    c = connect(server.port)
    c.request("GET", "http://example.com:1/params/hello%20there?x=1")
    body = c.read_response().json()
    assert body["params"] == {"name": "hello there"} and body["query"] == {"x": ["1"]}
    assert body["raw_path"] == "/params/hello%20there"
    for target, status in (("HTTP://example.com/hello", 200), ("http://example.com", 404),
                           ("https://example.com?x=1", 404), ("http://x/params/../hello", 404)):
        c.request("GET", target)
        assert c.read_response().status == status, target


# -- limits and malformed input ----------------------------------------------------------------


def test_413_by_content_length(serve, connect):
    st = serve(max_body_bytes=16)
    c = connect(st.port)
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 17\r\n\r\n")
    r = c.read_response()
    assert r.status == 413 and r.headers["connection"] == "close"
    assert c.closed_by_server()


def test_413_by_chunked_overflow(serve, connect):
    st = serve(max_body_bytes=16)
    c = connect(st.port)
    chunk = b"a" * 10
    c.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"a\r\n" + chunk + b"\r\n" for _ in range(50))
        + b"0\r\n\r\n"
    )
    r = c.read_response()
    assert r.status == 413
    assert r.json()["error"]["code"] == 413


def test_413_reaches_a_client_still_uploading(serve, connect):
    # The server answers after 16 bytes while megabytes are still on their way; the 413
    # must reach the client and the uploads must not hang. (The server drains input before
    # closing so that a reset cannot destroy the response; Linux loopback rarely shows that
    # race, so this guards the behaviour rather than proving the drain is needed.)
    st = serve(max_body_bytes=16)
    c = connect(st.port)
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4000000\r\n")

    def upload():
        try:
            c.sock.sendall(b"\r\n" + b"a" * 4_000_000)
        except OSError:
            pass

    # Content-Length is checked up front, so use chunked for the in-flight case.
    c2 = connect(st.port)
    c2.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    big = b"100000\r\n" + b"a" * 0x100000 + b"\r\n"

    def upload_chunked():
        try:
            for _ in range(4):
                c2.sock.sendall(big)
        except OSError:
            pass

    threads = [threading.Thread(target=upload), threading.Thread(target=upload_chunked)]
    for t in threads:
        t.start()
    try:
        assert c.read_response().status == 413
        assert c2.read_response().status == 413
    finally:
        c.close()
        c2.close()
        for t in threads:
            t.join(5)


def test_431_header_too_large(server, connect):
    c = connect(server.port)
    c.request("GET", "/hello", headers=[("X-Big", "a" * 20_000)])  # whole head in one write
    assert c.read_response().status == 431
    c2 = connect(server.port)
    c2.send(b"GET /hello HTTP/1.1\r\nX-Big: " + b"a" * 40_000)  # head never ends
    assert c2.read_response().status == 431


def test_400_on_garbage(server, connect):
    c = connect(server.port)
    c.send(b"THIS IS NOT HTTP\r\n\r\n")
    r = c.read_response()
    assert r.status == 400
    assert r.json()["error"]["code"] == 400
    assert HEX32.fullmatch(r.headers["x-request-id"])
    assert c.closed_by_server()


def test_400_on_bad_chunked_encoding(server, connect):
    c = connect(server.port)
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n")
    assert c.read_response().status == 400
    assert c.closed_by_server()


def test_header_timeout_gives_408(serve, connect):
    st = serve(header_timeout=0.3)
    c = connect(st.port)
    c.send(b"GET /hello HTTP/1.1\r\nHost: t\r\n")
    r = c.read_response()
    assert r.status == 408 and "headers" in r.json()["error"]["message"]
    assert c.closed_by_server()
    silent = connect(st.port)  # never sends a byte: closed without a response
    assert silent.closed_by_server()


def test_body_timeout_gives_408(serve, connect):
    st = serve(body_timeout=0.3)
    c = connect(st.port)
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
    r = c.read_response()
    assert r.status == 408 and "body" in r.json()["error"]["message"]


def test_idle_keep_alive_connection_is_closed(serve, connect):
    st = serve(keepalive_timeout=0.3)
    c = connect(st.port)
    sent = time.monotonic()  # the idle time starts after this request is served
    c.request("GET", "/hello")
    assert c.read_response().status == 200
    assert c.closed_by_server()
    assert time.monotonic() - sent >= 0.3  # not before the keep-alive timeout
    wait_for(lambda: st.server.active_connections == 0, what="the connection to be gone")


def test_connection_limit_answers_503(serve, connect):
    st = serve(max_connections=1)
    first = connect(st.port)
    first.request("GET", "/hello")
    assert first.read_response().status == 200
    second = connect(st.port)
    second.request("GET", "/hello")
    r = second.read_response()
    assert r.status == 503
    assert "connection limit" in r.json()["error"]["message"]
    assert second.closed_by_server()
    first.request("GET", "/hello")  # the existing connection is unaffected
    assert first.read_response().status == 200


def test_slow_reader_is_dropped_after_write_timeout(serve, connect):
    done = threading.Event()

    async def firehose(request: Request) -> StreamingResponse:
        async def body():
            try:
                while True:
                    yield b"x" * 65536
            finally:
                done.set()

        return StreamingResponse(body(), content_type="application/octet-stream")

    router = Router(error_formatter)
    router.add("GET", "/firehose", firehose)
    st = serve(router, write_timeout=0.3)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", st.port))
    try:
        sock.sendall(b"GET /firehose HTTP/1.1\r\nHost: t\r\n\r\n")  # then never read
        assert done.wait(30)
        wait_for(lambda: st.server.active_connections == 0, what="the connection to be gone")
    finally:
        sock.close()


# -- request ids -------------------------------------------------------------------------------


def test_request_id_echoed_generated_and_bound(server, connect):
    c = connect(server.port)
    c.request("GET", "/rid", headers=[("X-Request-ID", "abc-1.2:3_Z")])
    r = c.read_response()
    assert r.headers["x-request-id"] == "abc-1.2:3_Z"
    assert r.json() == {"bound": "abc-1.2:3_Z", "request_id": "abc-1.2:3_Z"}
    for bad in ("has space", "x" * 129, "semi;colon", ""):
        c.request("GET", "/rid", headers=[("X-Request-ID", bad)])
        r = c.read_response()
        rid = r.headers["x-request-id"]
        assert HEX32.fullmatch(rid), bad
        assert r.json()["bound"] == rid
    c.request("GET", "/missing", headers=[("X-Request-ID", "on-errors-too")])
    assert c.read_response().headers["x-request-id"] == "on-errors-too"


def test_request_id_on_transport_errors(serve, connect):
    st = serve(max_body_bytes=4)
    c = connect(st.port)
    c.request("POST", "/echo", headers=[("X-Request-ID", "big-1")], body=b"too large")
    r = c.read_response()
    assert (r.status, r.headers["x-request-id"]) == (413, "big-1")


# -- handler failures and disconnects ----------------------------------------------------------


def test_handler_exception_gives_500_and_server_keeps_serving(server, connect, caplog):
    caplog.set_level(logging.ERROR, logger="triton_mlx.http")
    c = connect(server.port)
    c.request("GET", "/boom")
    r = c.read_response()
    assert r.status == 500
    rid = r.headers["x-request-id"]
    assert r.json()["error"]["message"] == f"internal server error (request id {rid})"
    assert b"secret" not in r.body
    c.request("GET", "/hello")
    assert c.read_response().status == 200
    errors = [rec for rec in caplog.records if rec.name == "triton_mlx.http"]
    assert errors and errors[0].exc_info and "secret" in str(errors[0].exc_info[1])


def test_client_disconnect_cancels_handler(server, connect, probe):
    c = connect(server.port)
    c.request("GET", "/hang")
    assert probe.hang_started.wait(30)
    c.close()
    # /hang never returns on its own: only noticing the disconnect can end it.
    assert probe.hang_cancelled.wait(30)
    assert probe.hang_finally.wait(30)
    assert probe.hang_saw_disconnect == [True]
    wait_for(lambda: server.server.active_connections == 0, what="the connection to be gone")


def test_client_disconnect_cancels_stream(server, connect, probe):
    c = connect(server.port)
    c.request("GET", "/stream-hang")
    assert c.read_head().status == 200
    assert c.read_chunk() == b"data: first\n\n"
    assert probe.stream_started.wait(30)
    c.close()
    assert probe.stream_finally.wait(30)  # the stream never ends on its own


def test_stream_error_after_start_ends_stream_cleanly(server, connect, caplog):
    caplog.set_level(logging.ERROR, logger="triton_mlx.http")
    c = connect(server.port)
    c.request("GET", "/stream-boom")
    r = c.read_response()
    assert (r.status, r.body) == (200, b"data: partial\n\n")  # terminating chunk arrived
    assert c.closed_by_server()
    assert any("stream failed" in str(rec.exc_info[1]) for rec in caplog.records if rec.exc_info)


# -- streaming ---------------------------------------------------------------------------------


def test_sse_events_are_flushed_one_by_one(server, connect, probe):
    c = connect(server.port)
    c.request("GET", "/sse-stepped")
    head = c.read_head()
    h = head.headers
    assert h["content-type"] == "text/event-stream"
    assert h["cache-control"] == "no-cache"
    assert h["x-accel-buffering"] == "no"
    assert h["transfer-encoding"] == "chunked"
    assert "content-length" not in h
    # Each next event is produced only once the test has read the one before: an event
    # held back in a buffer would never arrive, and the read would time out.
    for word, gate in zip(("one", "two"), probe.next_event, strict=True):
        assert c.read_chunk() == f"data: {word}\n\n".encode()
        assert c.buf == b""  # it arrived alone
        server.open(gate)
    assert c.read_chunk() == b"data: three\n\n"
    assert c.read_chunk() == b""


# -- logging -----------------------------------------------------------------------------------


def test_access_log_line(server, connect, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER_NAME)
    c = connect(server.port)
    c.request("GET", "/logfields", headers=[("X-Request-ID", "log-1")])
    assert c.read_response().status == 200
    c.request("GET", "/unknown?q=1", headers=[("X-Request-ID", "log-2")])
    assert c.read_response().status == 404

    def records():
        return [r for r in caplog.records if r.name == ACCESS_LOGGER_NAME]

    wait_for(lambda: len(records()) >= 2, what="two access lines")
    ok, missing = records()[:2]
    assert re.fullmatch(r"GET /logfields 200 \d+\.\dms", ok.getMessage())
    assert (ok.request_id, ok.model, ok.prompt_tokens, ok.status) == ("log-1", "m1", 3, 200)
    assert ok.method == "GET" and ok.path == "/logfields"
    assert ok.client.startswith("127.0.0.1:")
    assert (missing.request_id, missing.status, missing.path) == ("log-2", 404, "/unknown")


def test_access_log_duration_covers_the_handler(server, connect, caplog, probe):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER_NAME)
    c = connect(server.port)
    c.request("GET", "/gated")
    assert probe.gated_started.wait(30)
    other = connect(server.port)  # while the handler waits, a whole exchange on another
    other.request("GET", "/hello")  # connection: it waits for at least that long
    assert other.read_response().status == 200
    server.open(probe.gate)
    assert c.read_response().body == b"done"

    def line():
        return next((r for r in caplog.records
                     if r.name == ACCESS_LOGGER_NAME and r.path == "/gated"), None)

    record = wait_for(line, what="the access line of /gated")
    [handler_seconds] = probe.gated_seconds
    # The logged duration spans the whole exchange, the handler's wait included
    # (0.05 ms for the rounding to one decimal).
    assert handler_seconds > 0
    assert record.duration_ms + 0.05 >= handler_seconds * 1000


def test_access_log_for_transport_errors_and_disconnects(serve, connect, caplog, probe):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER_NAME)
    st = serve(max_body_bytes=4)
    c = connect(st.port)
    c.request("POST", "/echo", body=b"too large")
    assert c.read_response().status == 413
    g = connect(st.port)
    g.send(b"\x16\x03\x01garbage\r\n\r\n")
    assert g.read_response().status == 400
    h = connect(st.port)
    h.request("GET", "/hang")
    assert probe.hang_started.wait(30)
    h.close()

    def statuses():
        return sorted(r.status for r in caplog.records if r.name == ACCESS_LOGGER_NAME)

    wait_for(lambda: statuses() == [400, 413, 499], what="access lines for 400, 413, 499")
    gone = next(r for r in caplog.records if getattr(r, "status", None) == 499)
    assert gone.disconnected is True and gone.path == "/hang"


# -- middleware --------------------------------------------------------------------------------


def test_middleware_runs_before_routing(serve, connect):
    order: list[str] = []

    async def outer(request, call_next):
        order.append("outer")
        return await call_next(request)

    async def auth(request, call_next):
        order.append("auth")
        if request.path != "/health" and request.headers.get("authorization") != "Bearer k":
            return error_formatter(401, "missing or bad API key")
        return await call_next(request)

    async def health(request):
        return text_response("ok")

    router = Router(error_formatter)
    router.add("GET", "/health", health)
    router.add_middleware(outer)
    router.add_middleware(auth)
    st = serve(router)
    c = connect(st.port)
    for path, headers, status in [
        ("/health", [], 200),
        ("/nope", [], 401),  # unknown paths are authenticated too: no route leak
        ("//health", [], 401),
        ("/nope", [("Authorization", "Bearer k")], 404),
    ]:
        c.request("GET", path, headers=headers)
        assert c.read_response().status == status, path
    assert order == ["outer", "auth"] * 4


# -- shutdown ----------------------------------------------------------------------------------


def test_close_lets_in_flight_request_finish(serve, connect, probe):
    st = serve()
    busy = connect(st.port)
    idle = connect(st.port)
    idle.request("GET", "/hello")
    assert idle.read_response().status == 200
    busy.request("GET", "/gated")
    assert probe.gated_started.wait(30)
    closing = st.close(grace=30.0)
    assert idle.closed_by_server()  # idle keep-alive dropped at once, so close() has begun
    st.open(probe.gate)  # the request in flight finishes during the grace period
    r = busy.read_response()
    assert (r.status, r.body) == (200, b"done")
    assert r.headers["connection"] == "close"
    closing.result(timeout=30)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", st.port), timeout=1.0)


def test_close_cancels_requests_after_grace(serve, connect, probe):
    st = serve()
    c = connect(st.port)
    c.request("GET", "/hang")
    assert probe.hang_started.wait(30)
    asked = time.monotonic()
    st.close(grace=0.2).result(timeout=30)
    assert time.monotonic() - asked >= 0.2  # the request had its grace period
    assert probe.hang_cancelled.is_set()  # then it was cancelled: /hang never returns itself
    assert c.closed_by_server()


# -- messages ----------------------------------------------------------------------------------


def test_headers_multidict():
    h = Headers([(b"Content-Type", b"a/b"), (b"X-A", b"1"), (b"x-a", b"2"), (b"X-L", b"caf\xe9")])
    assert h.get("content-type") == "a/b" and h.get("CONTENT-TYPE") == "a/b"
    assert h.get_all("x-a") == ["1", "2"] and h.get("x-a") == "1, 2"
    assert h.get("missing") is None and h.get("missing", "d") == "d"
    assert h.get_all("missing") == []
    assert h.get("x-l") == "café"
    assert h.items()[0] == ("content-type", "a/b")
    assert "X-A" in h and len(h) == 4


def _request(body: bytes) -> Request:
    return Request("POST", "/", "/", {}, Headers(), body, "r", None, "1.1")


def test_request_json_errors():
    assert _request(b'{"a": [1, 2]}').json() == {"a": [1, 2]}
    for body, needle in [
        (b"", "empty"),
        (b'{"a": "\xff"}', "UTF-8"),
        (b'{"a": ', "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
    ]:
        with pytest.raises(BodyDecodeError, match=needle):
            _request(body).json()
    assert issubclass(BodyDecodeError, ValueError)


def test_response_helpers():
    r = json_response({"a": "é", "b": [1]}, status=201, headers=[("X", "y")])
    assert (r.status, r.body, r.content_type) == (
        201,
        '{"a":"é","b":[1]}'.encode(),
        "application/json",
    )
    assert r.headers == [("X", "y")]
    with pytest.raises(ValueError):
        json_response({"x": float("nan")})
    t = text_response("hi", status=404)
    assert (t.status, t.body, t.content_type) == (404, b"hi", "text/plain; charset=utf-8")
    assert Response(200).body == b""


def test_invalid_response_from_handler_becomes_500(serve, connect):
    async def bad_header(request):
        return Response(200, b"x", headers=[("X-Bad", "line\r\nbreak")])

    async def bad_type(request):
        return {"not": "a response"}

    router = Router(error_formatter)
    router.add("GET", "/bad-header", bad_header)
    router.add("GET", "/bad-type", bad_type)
    st = serve(router)
    c = connect(st.port)
    for path in ("/bad-header", "/bad-type"):
        c.request("GET", path)
        r = c.read_response()
        assert r.status == 500 and "internal server error" in r.json()["error"]["message"]


def test_two_servers_share_a_loop(serve, connect):
    st = serve()

    async def other(request):
        return json_response({"server": "second"})

    router = Router(lambda s, m: text_response(json.dumps({"error": m}), status=s))
    router.add("GET", "/", other)
    from triton_mlx.http import HTTPServer

    second = HTTPServer(router, host="127.0.0.1", port=0, name="second")
    st.call(second.start())
    try:
        c1, c2 = connect(st.port), connect(second.port)
        c1.request("GET", "/hello")
        c2.request("GET", "/")
        assert c1.read_response().body == b"hello"
        assert c2.read_response().json() == {"server": "second"}
    finally:
        st.call(second.close())


def test_event_is_created_lazily():
    # Request objects may be built outside a running loop (e.g. in unit tests).
    assert isinstance(_request(b"").disconnected, asyncio.Event)

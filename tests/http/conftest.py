"""Fixtures for the HTTP transport tests.

Servers run on an ephemeral loopback port in a background thread with their own event
loop, so tests can talk to them with plain blocking sockets and see exactly the bytes on
the wire (framing, flushing, closes) that a real client would.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from triton_mlx.http import (
    HTTPLimits,
    HTTPServer,
    Request,
    Response,
    Router,
    StreamingResponse,
    json_response,
    sse_event,
    text_response,
)
from triton_mlx.observability.logs import request_id_var


def error_formatter(status: int, message: str) -> Response:
    """OpenAI-like error shape, so tests can tell formatter output from anything else."""
    return json_response({"error": {"message": message, "code": status}}, status=status)


@dataclass
class Probe:
    """Signals between handlers (server thread) and the test (main thread).

    The ``threading.Event``s go from handler to test; the ``asyncio.Event``s are gates the
    test opens for a handler with :meth:`ServerThread.open`.
    """

    hang_started: threading.Event = field(default_factory=threading.Event)
    hang_cancelled: threading.Event = field(default_factory=threading.Event)
    hang_finally: threading.Event = field(default_factory=threading.Event)
    hang_saw_disconnect: list[bool] = field(default_factory=list)
    stream_started: threading.Event = field(default_factory=threading.Event)
    stream_finally: threading.Event = field(default_factory=threading.Event)
    gated_started: threading.Event = field(default_factory=threading.Event)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    gated_seconds: list[float] = field(default_factory=list)  # /gated's own measure
    next_event: list[asyncio.Event] = field(
        default_factory=lambda: [asyncio.Event(), asyncio.Event()]
    )


def make_router(probe: Probe) -> Router:
    router = Router(error_formatter)

    async def hello(request: Request) -> Response:
        return text_response("hello")

    async def echo(request: Request) -> Response:
        return Response(200, body=request.body, content_type="application/octet-stream")

    async def parse_json(request: Request) -> Response:
        try:
            return json_response({"parsed": request.json()})
        except ValueError as exc:
            return error_formatter(400, str(exc))

    async def params(request: Request) -> Response:
        return json_response(
            {
                "params": request.path_params,
                "query": request.query,
                "path": request.path,
                "raw_path": request.raw_path,
            }
        )

    async def rid(request: Request) -> Response:
        return json_response({"bound": request_id_var.get(), "request_id": request.request_id})

    async def boom(request: Request) -> Response:
        raise RuntimeError("secret internal detail")

    async def hang(request: Request) -> Response:
        probe.hang_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            probe.hang_cancelled.set()
            raise
        finally:
            probe.hang_saw_disconnect.append(request.disconnected.is_set())
            probe.hang_finally.set()
        raise AssertionError("unreachable")

    async def gated(request: Request) -> Response:
        """Answers once the test opens ``probe.gate``; measures how long it waited."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        probe.gated_started.set()
        await probe.gate.wait()
        probe.gated_seconds.append(loop.time() - started)
        return text_response("done")

    async def sse(request: Request) -> StreamingResponse:
        async def events():
            for word in ("one", "two", "three"):
                yield sse_event(word)

        return StreamingResponse(events())

    async def sse_stepped(request: Request) -> StreamingResponse:
        """Produces each event after the first only when the test opens its gate."""

        async def events():
            yield sse_event("one")
            for gate, word in zip(probe.next_event, ("two", "three"), strict=True):
                await gate.wait()
                yield sse_event(word)

        return StreamingResponse(events())

    async def stream_hang(request: Request) -> StreamingResponse:
        async def events():
            try:
                yield sse_event("first")
                probe.stream_started.set()
                await asyncio.Event().wait()
                yield sse_event("never")
            finally:
                probe.stream_finally.set()

        return StreamingResponse(events())

    async def stream_boom(request: Request) -> StreamingResponse:
        async def events():
            yield sse_event("partial")
            raise RuntimeError("stream failed")

        return StreamingResponse(events())

    async def log_fields(request: Request) -> Response:
        request.log_fields.update(model="m1", prompt_tokens=3)
        return text_response("ok")

    router.add("GET", "/hello", hello)
    router.add(["POST", "PUT"], "/echo", echo)
    router.add("POST", "/json", parse_json)
    router.add("GET", "/params/{name}", params)
    router.add("GET", "/files/{rest:path}", params)
    router.add("GET", "/rid", rid)
    router.add("GET", "/boom", boom)
    router.add("GET", "/hang", hang)
    router.add("GET", "/gated", gated)
    router.add("GET", "/sse", sse)
    router.add("GET", "/sse-stepped", sse_stepped)
    router.add("GET", "/stream-hang", stream_hang)
    router.add("GET", "/stream-boom", stream_boom)
    router.add("GET", "/logfields", log_fields)
    return router


class ServerThread:
    """An HTTPServer running in its own event loop on a daemon thread."""

    def __init__(self, router: Router, limits: HTTPLimits) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = HTTPServer(router, host="127.0.0.1", port=0, limits=limits, name="test")
        self.closed = False

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> None:
        self.thread.start()
        self.call(self.server.start())

    def submit(self, coro):
        """Schedule a coroutine on the server loop; returns a concurrent Future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro, timeout: float = 10.0):
        return self.submit(coro).result(timeout)

    def open(self, gate: asyncio.Event) -> None:
        """Open a handler's gate (asyncio events belong to the server loop's thread)."""
        self.loop.call_soon_threadsafe(gate.set)

    def close(self, grace: float = 0.0):
        """Start ``server.close(grace)``; returns a Future that completes when it is done."""
        self.closed = True
        return self.submit(self.server.close(grace))

    def stop(self) -> None:
        if not self.closed:
            self.close().result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@dataclass
class RawResponse:
    status: int
    reason: str
    header_list: list[tuple[str, str]]
    body: bytes = b""

    @property
    def headers(self) -> dict[str, str]:
        return {k: v for k, v in self.header_list}

    def json(self):
        return json.loads(self.body)


class RawClient:
    """A blocking HTTP/1.1 client over a raw socket: it sends exactly the bytes given."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        version: str = "1.1",
    ) -> None:
        lines = [f"{method} {path} HTTP/{version}", "Host: test"]
        hdrs = list(headers or [])
        if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hdrs):
            hdrs.append(("Content-Length", str(len(body))))
        lines += [f"{k}: {v}" for k, v in hdrs]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def recv_some(self) -> bytes:
        """Return buffered bytes if any, else one recv() (raises EOFError on close)."""
        if not self.buf:
            self._fill()
        data, self.buf = self.buf, b""
        return data

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed by server")
        self.buf += data

    def _read_until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            self._fill()
        out, self.buf = self.buf.split(sep, 1)
        return out

    def _read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self) -> RawResponse:
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        status_line, *lines = head.split("\r\n")
        _, status, reason = (status_line.split(" ", 2) + [""])[:3]
        pairs = [line.split(":", 1) for line in lines]
        return RawResponse(int(status), reason, [(k.strip().lower(), v.strip()) for k, v in pairs])

    def read_chunk(self) -> bytes:
        """One chunk of a chunked body (b"" for the last one)."""
        size = int(self._read_until(b"\r\n").split(b";")[0], 16)
        data = self._read_exact(size)
        assert self._read_exact(2) == b"\r\n"
        if size == 0:
            return b""
        return data

    def read_response(self, head_request: bool = False) -> RawResponse:
        resp = self.read_head()
        headers = resp.headers
        if head_request or resp.status < 200 or resp.status in (204, 304):
            return resp
        if headers.get("transfer-encoding") == "chunked":
            chunks = []
            while chunk := self.read_chunk():
                chunks.append(chunk)
            resp.body = b"".join(chunks)
        elif "content-length" in headers:
            resp.body = self._read_exact(int(headers["content-length"]))
        else:
            resp.body = self.read_to_eof()
        return resp

    def read_to_eof(self) -> bytes:
        try:
            while True:
                self._fill()
        except (EOFError, ConnectionResetError):
            pass
        data, self.buf = self.buf, b""
        return data

    def closed_by_server(self, timeout: float = 30.0) -> bool:
        """True if the server closes (EOF or reset) with nothing unread; False if it sends
        more, or stays open for ``timeout`` seconds (a bound on a hang, not a speed test)."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536) == b"" and not self.buf
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def serve(probe: Probe) -> Iterator[Callable[..., ServerThread]]:
    """Factory: ``serve(router=None, **limit_overrides)`` starts a server and returns it."""
    started: list[ServerThread] = []

    def start(router: Router | None = None, **limits) -> ServerThread:
        st = ServerThread(router or make_router(probe), HTTPLimits(**limits))
        st.start()
        started.append(st)
        return st

    yield start
    for st in started:
        st.stop()


@pytest.fixture
def server(serve) -> ServerThread:
    return serve()


@pytest.fixture
def connect() -> Iterator[Callable[[int], RawClient]]:
    clients: list[RawClient] = []

    def make(port: int, timeout: float = 5.0) -> RawClient:
        c = RawClient(port, timeout)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()

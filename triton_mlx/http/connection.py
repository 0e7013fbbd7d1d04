"""One client connection: request/response cycles on h11, with limits and disconnect watch.

Each request is read completely, within size and time limits, before the application runs.
While the application handles a request, a second task keeps reading the socket. That is
the only portable way to learn that the client went away: EOF or a reset sets
``request.disconnected`` and cancels the handler (and the writing of a streaming body), so
generation for a client that has left stops at once instead of running to completion.
The bytes that go back (heads, bodies, streams) are ``response_writer.py``'s job.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
from collections.abc import Callable
from urllib.parse import parse_qs, unquote_to_bytes

import h11

from triton_mlx.observability.logs import request_id_var

from .exchange import Exchange, log_access
from .limits import HTTPLimits
from .messages import Headers, Request, Response, StreamingResponse
from .response_writer import ResponseWriter, WriteTimeout
from .routing import Router

logger = logging.getLogger("triton_mlx.http")


READ_SIZE = 64 * 1024
_LINGER_SECONDS = 2.0  # after an error response: read and discard what the client still sends
_CLOSE_SECONDS = 1.0  # bound on flushing the write buffer when closing normally
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class _Timeout(Exception):
    """A read deadline passed (request head or body)."""


class _Idle(Exception):
    """No request started before the idle deadline; close without answering."""


class _TooLarge(Exception):
    """The request body exceeds ``max_body_bytes``."""


class Connection:
    """One client connection: a loop of request/response cycles over an h11 state machine."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        app: Router,
        limits: HTTPLimits,
        closing: Callable[[], bool],
    ) -> None:
        """``closing()`` tells whether the server is shutting down: then the connection
        ends after the response in progress, which says ``Connection: close``."""
        self.app = app
        self.limits = limits
        self.closing = closing
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self.out = ResponseWriter(
            self.h11,
            writer,
            error_formatter=app.error_formatter,
            write_timeout=limits.write_timeout,
            closing=closing,
        )
        peer = writer.get_extra_info("peername")
        self.client: tuple[str, int] | None = (
            (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) and len(peer) >= 2 else None
        )
        self.client_str = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.time()
        self.cycles = 0
        self.idle = True  # waiting for a request with nothing buffered: close() may drop us
        self.eof = False
        self.linger = False

    # -- connection lifecycle ---------------------------------------------------------------

    async def run(self) -> None:
        """Serve requests until one says close, the client leaves, or the server stops."""
        abort = False
        try:
            while await self._cycle():
                pass
        except asyncio.CancelledError:
            abort = True
            raise
        except (OSError, WriteTimeout) as exc:
            logger.debug("connection from %s dropped: %r", self.client_str, exc)
            abort = True
        except Exception:
            logger.exception("unexpected error on connection from %s", self.client_str)
            abort = True
        finally:
            await self._close(abort=abort)

    async def refuse(self) -> None:
        """Answer 503 without reading a request: the server is at its connection limit."""
        ex = Exchange(self.loop.time())
        abort = False
        try:
            await self._fail(
                ex,
                503,
                f"server is at its connection limit ({self.limits.max_connections}); retry later",
            )
        except (OSError, WriteTimeout):
            abort = True
        except asyncio.CancelledError:
            abort = True
            raise
        finally:
            await self._close(abort=abort)

    async def _close(self, *, abort: bool) -> None:
        transport = self.writer.transport
        if abort:
            transport.abort()
            return
        try:
            if self.linger:
                await self._linger()
            self.writer.close()
            async with asyncio.timeout(_CLOSE_SECONDS):
                await self.writer.wait_closed()
        except (OSError, TimeoutError):
            transport.abort()
        except asyncio.CancelledError:
            transport.abort()
            raise

    async def _linger(self) -> None:
        """Half-close, then drain the client's unread input for a moment before closing.

        Closing a socket with unread input makes the kernel send a reset, which can destroy
        the error response before the client reads it (e.g. a 413 while the client is still
        uploading). Reading until the client closes, briefly, avoids that.
        """
        if self.eof:
            return
        if self.writer.can_write_eof():
            self.writer.write_eof()
        try:
            async with asyncio.timeout(_LINGER_SECONDS):
                while await self.reader.read(READ_SIZE):
                    pass
        except (OSError, TimeoutError):
            pass

    # -- one request/response cycle -----------------------------------------------------------

    async def _cycle(self) -> bool:
        """Serve one request. Return True to keep the connection open for another."""
        conn = self.h11
        ex = Exchange(self.loop.time())
        try:
            event = await self._read_head()
            if not isinstance(event, h11.Request):  # ConnectionClosed: the client hung up
                return False
            ex.started = self.loop.time()
            head = self._parse_head(event, ex)
            _check_framing(event)
            declared = head.headers.get("content-length")
            if declared is not None and int(declared) > self.limits.max_body_bytes:
                raise _TooLarge
            body = await self._read_body()
        except _Idle:
            return False
        except _Timeout:
            phase = "headers" if ex.method == "-" else "body"
            return await self._fail(ex, 408, f"timed out waiting for the request {phase}")
        except _TooLarge:
            return await self._fail(
                ex, 413, f"request body exceeds the limit of {self.limits.max_body_bytes} bytes"
            )
        except h11.RemoteProtocolError as exc:
            if self.eof:  # the client went away mid-request; nobody to answer
                return False
            status = exc.error_status_hint
            if status == 501:
                # h11's hint for any Transfer-Encoding but one "chunked" ("gzip, chunked",
                # "chunked, chunked", the header twice). We cannot read such a body, so the
                # request is malformed to us and the connection closes (RFC 9112 6.3).
                status = 400
            if status == 431:
                message = (
                    f"request header fields too large (limit {self.limits.max_header_bytes} bytes)"
                )
            else:
                message = f"malformed HTTP request: {exc}"
            return await self._fail(ex, status, message)

        head.body = body
        ex.request = head
        try:
            keep = await self._handle(head, ex)
        finally:  # also when the write failed or close() cancelled us
            log_access(ex, self.client_str, self.loop.time())
        self.cycles += 1
        if not keep or self.closing():
            return False
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            return True
        return False  # HTTP/1.0, "Connection: close", or the client is mid-upload

    async def _read_head(self) -> h11.Request | h11.ConnectionClosed:
        """Wait for a request head: idle phase (until a first byte), then header phase."""
        conn = self.h11
        # The first request's head is due within header_timeout of the connection opening;
        # later ones within header_timeout of their first byte, after up to
        # keepalive_timeout of idleness.
        deadline = self.started + self.limits.header_timeout if self.cycles == 0 else None
        received = len(conn.trailing_data[0])  # bytes that may belong to this head
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                # h11 only enforces max_incomplete_event_size while a head is incomplete;
                # a larger head that arrives whole in one read would slip through.
                head_size = received - len(conn.trailing_data[0])
                if head_size > self.limits.max_header_bytes:
                    raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
                return event
            if event is not h11.NEED_DATA:
                if event is h11.PAUSED:  # cannot happen after start_next_cycle; be safe
                    raise h11.RemoteProtocolError("unexpected pipelining state")
                return event  # type: ignore[return-value]
            if conn.trailing_data[0]:  # part of a head is buffered
                if deadline is None:
                    deadline = self.loop.time() + self.limits.header_timeout
                data = await self._recv(deadline)
            else:
                idle_until = (
                    deadline
                    if deadline is not None
                    else self.loop.time() + self.limits.keepalive_timeout
                )
                self.idle = True
                try:
                    data = await self._recv(idle_until)
                except _Timeout:
                    raise _Idle from None
                finally:
                    self.idle = False
                if deadline is None:
                    deadline = self.loop.time() + self.limits.header_timeout
            received += len(data)
            conn.receive_data(data)

    def _parse_head(self, event: h11.Request, ex: Exchange) -> Request:
        target = _origin_form(bytes(event.target))
        raw, _, query = target.partition(b"?")
        headers = Headers(event.headers)
        client_id = headers.get("x-request-id")
        if client_id is not None and _REQUEST_ID.fullmatch(client_id):
            ex.request_id = client_id
        ex.method = event.method.decode("ascii")
        # h11 only admits visible ASCII in the target, so this is lossless and, unlike the
        # decoded path, cannot smuggle line breaks into the access log.
        ex.path = raw.decode("ascii", "replace")
        return Request(
            method=ex.method,
            path=unquote_to_bytes(raw).decode("utf-8", "replace"),
            raw_path=ex.path,
            query=parse_qs(query.decode("ascii", "replace"), keep_blank_values=True),
            headers=headers,
            body=b"",
            request_id=ex.request_id,
            client=self.client,
            http_version=event.http_version.decode("ascii"),
        )

    async def _read_body(self) -> bytes:
        conn = self.h11
        if conn.they_are_waiting_for_100_continue:
            await self.out.send_continue()
        deadline = self.loop.time() + self.limits.body_timeout
        chunks: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self._recv(deadline))
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > self.limits.max_body_bytes:
                    raise _TooLarge
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:
                raise h11.RemoteProtocolError(f"unexpected {event!r} in request body")

    async def _recv(self, deadline: float) -> bytes:
        """Read some bytes by ``deadline`` (raises _Timeout); ``b""`` means the peer is gone."""
        if self.eof:
            return b""
        try:
            async with asyncio.timeout_at(deadline):
                data = await self.reader.read(READ_SIZE)
        except TimeoutError:
            raise _Timeout from None
        except OSError:  # reset by peer and friends: same as EOF for us
            data = b""
        if not data:
            self.eof = True
        return data

    # -- running the application ------------------------------------------------------------

    async def _handle(self, request: Request, ex: Exchange) -> bool:
        """Run the app and write its response while watching for the client leaving."""
        ctx = contextvars.copy_context()
        ctx.run(request_id_var.set, request.request_id)
        responder = self.loop.create_task(self._respond(request, ex), context=ctx)
        watcher = self.loop.create_task(self._watch())
        try:
            await asyncio.wait((responder, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:  # also runs when close() cancels this connection
            if not responder.done():
                if watcher.done():
                    ex.disconnected = True
                    request.disconnected.set()
                else:
                    ex.cancelled = True
                responder.cancel()
            watcher.cancel()
            await asyncio.gather(responder, watcher, return_exceptions=True)
        if ex.disconnected:
            logger.debug("client %s went away during %s %s", self.client_str, ex.method, ex.path)
            return False
        exc = responder.exception()
        if exc is not None:
            raise exc  # write failures (reset, write timeout): drop the connection
        return responder.result()

    async def _watch(self) -> None:
        """Return when the client closes or resets the connection.

        Bytes that arrive meanwhile (a pipelined request) are handed to h11, which buffers
        them for the next cycle. Past a bound, reading stops, so a client cannot make us
        buffer without limit; TCP flow control then holds it back (and a disconnect is only
        noticed once the response is done).
        """
        budget = self.limits.max_header_bytes + READ_SIZE
        while True:
            if self.eof:
                return
            try:
                data = await self.reader.read(READ_SIZE)
            except OSError:
                data = b""
            self.h11.receive_data(data)
            if not data:
                self.eof = True
                return
            budget -= len(data)
            if budget <= 0:
                await asyncio.Event().wait()  # until cancelled when the response is done

    async def _respond(self, request: Request, ex: Exchange) -> bool:
        """Call the app and send what it returns. Runs with the request id bound."""
        try:
            result = await self.app(request)
            if not isinstance(result, Response | StreamingResponse):
                raise TypeError(
                    f"handler returned {type(result).__name__}, "
                    "expected Response or StreamingResponse"
                )
        except Exception:
            logger.exception("unhandled error in handler for %s %s", ex.method, ex.path)
            result = self.out.internal_error(ex.request_id)
        if isinstance(result, StreamingResponse):
            return await self.out.send_stream(request, result, ex)
        return await self.out.send(result, ex)

    # -- transport errors -------------------------------------------------------------------

    async def _fail(self, ex: Exchange, status: int, message: str) -> bool:
        """Answer a transport-level error (if still possible), log it, and close."""
        self.linger = True
        try:
            if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await self.out.send(self.out.error_response(status, message), ex, close=True)
            else:
                ex.status = status
        finally:
            log_access(ex, self.client_str, self.loop.time())
        return False


def _check_framing(event: h11.Request) -> None:
    """Refuse a request whose body two parsers could delimit differently (RFC 9112 6.1, 6.3).

    With both Content-Length and Transfer-Encoding, h11 goes by Transfer-Encoding; a proxy
    in front may go by Content-Length and see another request boundary, so a request hidden
    in the body would reach us unseen by the proxy ("request smuggling"). HTTP/1.0 has no
    chunked coding, so there Transfer-Encoding is as ambiguous. Raised as a protocol error:
    the client gets 400 and the connection closes, so nothing sent after it is read.
    """
    names = {name for name, _ in event.headers}  # h11 lower-cases header names
    if b"transfer-encoding" not in names:
        return
    if b"content-length" in names:
        raise h11.RemoteProtocolError(
            "both Content-Length and Transfer-Encoding are set; send only one"
        )
    if event.http_version == b"1.0":
        raise h11.RemoteProtocolError("Transfer-Encoding is not allowed in an HTTP/1.0 request")


def _origin_form(target: bytes) -> bytes:
    """``/path?query`` from an absolute-form target (``http://host/path?query``), which
    HTTP/1.1 servers must accept (RFC 9112 3.2.2); the authority is dropped, not trusted."""
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return target
    start = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
    path = rest[start:]
    return path if path.startswith(b"/") else b"/" + path

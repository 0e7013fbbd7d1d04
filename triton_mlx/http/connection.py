"""One client connection: request/response cycles on h11, with limits and disconnect watch.

Each request is read completely, within size and time limits, before the application runs.
While the application handles a request, a second task keeps reading the socket. That is
the only portable way to learn that the client went away: EOF or a reset sets
``request.disconnected`` and cancels the handler (and the writing of a streaming body), so
generation for a client that has left stops at once instead of running to completion.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import logging
import re
import socket
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote_to_bytes

import h11

from triton_mlx.observability.logs import ACCESS_LOGGER_NAME, request_id_var

from .exchange import Exchange, log_access
from .messages import Headers, Request, Response, StreamingResponse, text_response

if TYPE_CHECKING:
    from .server import HTTPServer

logger = logging.getLogger("triton_mlx.http")
access_logger = logging.getLogger(ACCESS_LOGGER_NAME)


READ_SIZE = 64 * 1024
_LINGER_SECONDS = 2.0  # after an error response: read and discard what the client still sends
_CLOSE_SECONDS = 1.0  # bound on flushing the write buffer when closing normally
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_NOT_FROM_HANDLER = frozenset({"content-length", "transfer-encoding", "x-request-id"})

class _Timeout(Exception):
    """A read deadline passed (request head or body)."""


class _Idle(Exception):
    """No request started before the idle deadline; close without answering."""


class _TooLarge(Exception):
    """The request body exceeds ``max_body_bytes``."""


class _WriteTimeout(Exception):
    """The client did not read our output within ``write_timeout``."""


class Connection:
    """One client connection: a loop of request/response cycles over an h11 state machine."""

    def __init__(
        self, server: HTTPServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.limits = server.limits
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=server.limits.max_header_bytes
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
        abort = False
        try:
            while await self._cycle():
                pass
        except asyncio.CancelledError:
            abort = True
            raise
        except (OSError, _WriteTimeout) as exc:
            logger.debug("connection from %s dropped: %r", self.client_str, exc)
            abort = True
        except Exception:
            logger.exception("unexpected error on connection from %s", self.client_str)
            abort = True
        finally:
            await self._close(abort=abort)

    async def refuse(self) -> None:
        """Answer 503 without reading a request: the server is at its connection limit."""
        self.server._warn_connection_limit(self.client_str)
        ex = Exchange(self.loop.time())
        abort = False
        try:
            await self._fail(
                ex,
                503,
                f"server is at its connection limit ({self.limits.max_connections}); retry later",
            )
        except (OSError, _WriteTimeout):
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
        if not keep or self.server.closing:
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
            self.writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            await self._drain()
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
            result = await self.server.app(request)
            if not isinstance(result, Response | StreamingResponse):
                raise TypeError(
                    f"handler returned {type(result).__name__}, "
                    "expected Response or StreamingResponse"
                )
        except Exception:
            logger.exception("unhandled error in handler for %s %s", ex.method, ex.path)
            result = self._internal_error(ex.request_id)
        if isinstance(result, StreamingResponse):
            return await self._send_stream(request, result, ex)
        return await self._send_response(result, ex)

    # -- writing responses ------------------------------------------------------------------

    async def _send_response(self, response: Response, ex: Exchange, close: bool = False) -> bool:
        try:
            body = response.body
            if not isinstance(body, bytes | bytearray | memoryview):
                raise TypeError(f"Response.body must be bytes, not {type(body).__name__}")
            head = self._head(
                response.status,
                response.headers,
                response.content_type,
                ex.request_id,
                length=len(body),
                close=close,
            )
        except Exception:
            logger.exception("invalid response for %s %s", ex.method, ex.path)
            response = self._internal_error(ex.request_id)
            body = response.body
            head = self._head(
                response.status,
                response.headers,
                response.content_type,
                ex.request_id,
                length=len(body),
                close=close,
            )
        conn = self.h11
        out = bytearray(conn.send(head))
        ex.status = head.status_code
        if body and ex.method != "HEAD":
            out += conn.send(h11.Data(data=body))
        out += conn.send(h11.EndOfMessage())
        self.writer.write(out)
        await self._drain()
        return True

    async def _send_stream(
        self, request: Request, response: StreamingResponse, ex: Exchange
    ) -> bool:
        """Write the head at once, then each body item as its own flushed chunk."""
        body = response.body
        conn = self.h11
        keep = True
        try:
            try:
                head = self._head(
                    response.status,
                    response.headers,
                    response.content_type,
                    ex.request_id,
                    length=None,
                    close=False,
                    sse=(response.content_type or "").startswith("text/event-stream"),
                )
            except Exception:
                logger.exception("invalid streaming response for %s %s", ex.method, ex.path)
                return await self._send_response(self._internal_error(ex.request_id), ex)
            self.writer.write(conn.send(head))
            ex.status = head.status_code
            await self._drain()
            if request.method != "HEAD":
                iterator = aiter(body)
                while True:
                    try:
                        chunk = await anext(iterator)
                    except StopAsyncIteration:
                        break
                    except Exception:
                        # Status is already sent: end the body cleanly, then close.
                        logger.exception(
                            "response stream for %s %s failed after it started; ending it",
                            ex.method,
                            ex.path,
                        )
                        keep = False
                        break
                    if not isinstance(chunk, bytes | bytearray | memoryview):
                        logger.error(
                            "response stream for %s %s yielded %s, not bytes; ending it",
                            ex.method,
                            ex.path,
                            type(chunk).__name__,
                        )
                        keep = False
                        break
                    if chunk:
                        self.writer.write(conn.send(h11.Data(data=chunk)))
                        await self._drain()
            self.writer.write(conn.send(h11.EndOfMessage()))
            await self._drain()
            return keep
        finally:
            # On cancellation (client gone) or error this runs the generator's finally now,
            # not whenever the garbage collector gets to it.
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    logger.exception("closing the response stream for %s failed", ex.path)

    def _head(
        self,
        status: int,
        headers: list[tuple[str, str]],
        content_type: str | None,
        request_id: str,
        *,
        length: int | None,
        close: bool,
        sse: bool = False,
    ) -> h11.Response:
        """Build the response head: the handler's headers plus the transport's own."""
        out: list[tuple[bytes, bytes]] = []
        seen: set[str] = set()
        for name, value in headers:
            lname = name.lower()
            if lname in _NOT_FROM_HANDLER:
                continue
            seen.add(lname)
            out.append((name.encode("ascii"), value.encode("latin-1")))
        if content_type is not None and "content-type" not in seen:
            out.append((b"content-type", content_type.encode("latin-1")))
        if "server" not in seen:
            out.append((b"server", b"triton-mlx"))
        if "date" not in seen:
            out.append((b"date", _http_date()))
        out.append((b"x-request-id", request_id.encode("ascii")))
        if sse:
            if "cache-control" not in seen:
                out.append((b"cache-control", b"no-cache"))
            if "x-accel-buffering" not in seen:
                out.append((b"x-accel-buffering", b"no"))
        if length is not None and status not in (204, 304):
            out.append((b"content-length", str(length).encode("ascii")))
        if close or self.server.closing:
            out.append((b"connection", b"close"))
        return h11.Response(status_code=status, headers=out)  # validates names and values

    async def _fail(self, ex: Exchange, status: int, message: str) -> bool:
        """Answer a transport-level error (if still possible), log it, and close."""
        self.linger = True
        try:
            if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await self._send_response(self._error_response(status, message), ex, close=True)
            else:
                ex.status = status
        finally:
            log_access(ex, self.client_str, self.loop.time())
        return False

    def _error_response(self, status: int, message: str) -> Response:
        try:
            response = self.server.app.error_formatter(status, message)
            if isinstance(response, Response):
                return response
            raise TypeError(f"error formatter returned {type(response).__name__}")
        except Exception:
            logger.exception("error formatter failed for %d %r", status, message)
            return text_response(message + "\n", status=status)

    def _internal_error(self, request_id: str) -> Response:
        return self._error_response(500, f"internal server error (request id {request_id})")

    async def _drain(self) -> None:
        try:
            async with asyncio.timeout(self.limits.write_timeout):
                await self.writer.drain()
        except TimeoutError:
            raise _WriteTimeout(f"client did not read for {self.limits.write_timeout}s") from None

    # -- access log ---------------------------------------------------------------------------

_date_cache: list[object] = [0, b""]


def _http_date() -> bytes:
    """IMF-fixdate for the Date header, formatted at most once per second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = email.utils.formatdate(now, usegmt=True).encode("ascii")
    return _date_cache[1]  # type: ignore[return-value]


def set_nodelay(writer: asyncio.StreamWriter) -> None:
    """Disable Nagle so each flushed SSE event leaves at once (asyncio does too; be sure)."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def format_address(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = str(addr[0])
        return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
    return str(addr)


def _origin_form(target: bytes) -> bytes:
    """``/path?query`` from an absolute-form target (``http://host/path?query``), which
    HTTP/1.1 servers must accept (RFC 9112 3.2.2); the authority is dropped, not trusted."""
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return target
    start = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
    path = rest[start:]
    return path if path.startswith(b"/") else b"/" + path

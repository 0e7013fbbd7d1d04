"""Writing responses onto one connection: the head, a whole body, or a stream of chunks.

Split from ``connection.py``, which reads requests and runs the request/response cycle; this
module owns what goes back on the wire. It adds the transport's own headers (``Server``,
``Date``, ``X-Request-ID``, framing, ``Connection: close`` while shutting down), turns an
invalid response from a handler into a 500 in the port's error shape, and bounds every
flush by ``write_timeout`` so a client that stops reading cannot hold the connection.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import AsyncIterator, Callable

import h11

from .exchange import Exchange
from .messages import Request, Response, StreamingResponse, text_response
from .routing import ErrorFormatter

logger = logging.getLogger("triton_mlx.http")

_NOT_FROM_HANDLER = frozenset({"content-length", "transfer-encoding", "x-request-id"})


class WriteTimeout(Exception):
    """The client did not read our output within ``write_timeout``."""


class ResponseWriter:
    """Sends responses for one connection through its h11 state machine."""

    def __init__(
        self,
        protocol: h11.Connection,
        writer: asyncio.StreamWriter,
        *,
        error_formatter: ErrorFormatter,
        write_timeout: float,
        closing: Callable[[], bool],
    ) -> None:
        self.protocol = protocol
        self.writer = writer
        self.error_formatter = error_formatter
        self.write_timeout = write_timeout
        self.closing = closing

    async def send_continue(self) -> None:
        """``100 Continue``: the client waits for it before sending the body."""
        head = h11.InformationalResponse(status_code=100, headers=[])
        self.writer.write(self.protocol.send(head))
        await self.drain()

    async def send(self, response: Response, ex: Exchange, *, close: bool = False) -> bool:
        """Write a whole response; an invalid one is replaced by a 500. Returns True."""
        try:
            body = response.body
            if not isinstance(body, bytes | bytearray | memoryview):
                raise TypeError(f"Response.body must be bytes, not {type(body).__name__}")
            head = self._head(response, ex.request_id, length=len(body), close=close)
        except Exception:
            logger.exception("invalid response for %s %s", ex.method, ex.path)
            response = self.internal_error(ex.request_id)
            body = response.body
            head = self._head(response, ex.request_id, length=len(body), close=close)
        protocol = self.protocol
        out = bytearray(protocol.send(head))
        ex.status = head.status_code
        if body and ex.method != "HEAD":
            out += protocol.send(h11.Data(data=body))
        out += protocol.send(h11.EndOfMessage())
        self.writer.write(out)
        await self.drain()
        return True

    async def send_stream(
        self, request: Request, response: StreamingResponse, ex: Exchange
    ) -> bool:
        """Write the head at once, then each body item as its own flushed chunk.

        Returns False when the stream failed after the head was sent: the body is ended
        cleanly, but the connection must close, since the client got less than promised.
        """
        body = response.body
        protocol = self.protocol
        keep = True
        try:
            try:
                head = self._head(
                    response,
                    ex.request_id,
                    length=None,
                    close=False,
                    sse=(response.content_type or "").startswith("text/event-stream"),
                )
            except Exception:
                logger.exception("invalid streaming response for %s %s", ex.method, ex.path)
                return await self.send(self.internal_error(ex.request_id), ex)
            self.writer.write(protocol.send(head))
            ex.status = head.status_code
            await self.drain()
            if request.method != "HEAD":
                keep = await self._send_chunks(body, ex)
            self.writer.write(protocol.send(h11.EndOfMessage()))
            await self.drain()
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

    async def _send_chunks(self, body: AsyncIterator[bytes], ex: Exchange) -> bool:
        """Send the stream's items; False if it failed or yielded something not bytes."""
        iterator = aiter(body)
        while True:
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                return True
            except Exception:
                # Status is already sent: the caller ends the body cleanly, then closes.
                logger.exception(
                    "response stream for %s %s failed after it started; ending it",
                    ex.method,
                    ex.path,
                )
                return False
            if not isinstance(chunk, bytes | bytearray | memoryview):
                logger.error(
                    "response stream for %s %s yielded %s, not bytes; ending it",
                    ex.method,
                    ex.path,
                    type(chunk).__name__,
                )
                return False
            if chunk:
                self.writer.write(self.protocol.send(h11.Data(data=chunk)))
                await self.drain()

    def _head(
        self,
        response: Response | StreamingResponse,
        request_id: str,
        *,
        length: int | None,
        close: bool,
        sse: bool = False,
    ) -> h11.Response:
        """Build the response head: the handler's headers plus the transport's own."""
        out: list[tuple[bytes, bytes]] = []
        seen: set[str] = set()
        for name, value in response.headers:
            lname = name.lower()
            if lname in _NOT_FROM_HANDLER:
                continue
            seen.add(lname)
            out.append((name.encode("ascii"), value.encode("latin-1")))
        if response.content_type is not None and "content-type" not in seen:
            out.append((b"content-type", response.content_type.encode("latin-1")))
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
        if length is not None and response.status not in (204, 304):
            out.append((b"content-length", str(length).encode("ascii")))
        if close or self.closing():
            out.append((b"connection", b"close"))
        return h11.Response(status_code=response.status, headers=out)  # validates them

    def error_response(self, status: int, message: str) -> Response:
        """The port's error shape (its router's formatter); plain text if that fails."""
        try:
            response = self.error_formatter(status, message)
            if isinstance(response, Response):
                return response
            raise TypeError(f"error formatter returned {type(response).__name__}")
        except Exception:
            logger.exception("error formatter failed for %d %r", status, message)
            return text_response(message + "\n", status=status)

    def internal_error(self, request_id: str) -> Response:
        """A 500 that names the request id (to find the traceback in the log), nothing more."""
        return self.error_response(500, f"internal server error (request id {request_id})")

    async def drain(self) -> None:
        """Flush, or raise :class:`WriteTimeout` if the client stops reading. Nothing to wait
        for while the socket took every byte (the common case: no timer per streamed chunk)."""
        transport = self.writer.transport
        if transport.get_write_buffer_size() == 0 and not transport.is_closing():
            return
        try:
            async with asyncio.timeout(self.write_timeout):
                await self.writer.drain()
        except TimeoutError:
            raise WriteTimeout(f"client did not read for {self.write_timeout}s") from None


_date_cache: list[object] = [0, b""]


def _http_date() -> bytes:
    """IMF-fixdate for the Date header, formatted at most once per second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = email.utils.formatdate(now, usegmt=True).encode("ascii")
    return _date_cache[1]  # type: ignore[return-value]

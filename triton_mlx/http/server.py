"""HTTP/1.1 server: asyncio streams for I/O, h11 for the protocol.

One task per connection (see ``connection.py``) runs request/response cycles in order,
keep-alive and pipelining included. This module owns the listening socket, the connection
cap and graceful shutdown.

Failures stay inside their connection: every exception is caught at the connection task's
top, and a handler's exception becomes a 500 in the front-end's error shape.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from .connection import READ_SIZE, Connection
from .exchange import CLIENT_CLOSED_REQUEST
from .limits import HTTPLimits
from .routing import Router

__all__ = ["CLIENT_CLOSED_REQUEST", "HTTPServer"]

logger = logging.getLogger("triton_mlx.http")

_LIMIT_WARNING_INTERVAL = 10.0


class HTTPServer:
    """Serves one :class:`~triton_mlx.http.routing.Router` on one TCP port.

    Several servers (one per front-end) can share an event loop. ``start()`` binds;
    ``close(grace)`` shuts down gracefully.
    """

    def __init__(
        self,
        app: Router,
        *,
        host: str,
        port: int,
        limits: HTTPLimits = HTTPLimits(),  # noqa: B008 - frozen, so sharing it is safe
        name: str = "http",
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.limits = limits
        self.name = name
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], Connection] = {}
        self._refusing: set[asyncio.Task[None]] = set()
        self._closing = False
        self._last_limit_warning = float("-inf")

    @property
    def active_connections(self) -> int:
        """Connections being served now (not counting ones being refused with 503)."""
        return len(self._connections)

    @property
    def closing(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closing

    async def start(self) -> None:
        """Bind and start accepting. With ``port=0`` the OS picks one; read ``.port`` after."""
        if self._server is not None:
            raise RuntimeError(f"{self.name} server already started")
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, limit=READ_SIZE
        )
        sockets = self._server.sockets
        self.port = sockets[0].getsockname()[1]
        addresses = ", ".join(format_address(s.getsockname()) for s in sockets)
        logger.info("%s server listening on %s", self.name, addresses)

    async def close(self, grace: float = 0.0) -> None:
        """Stop accepting, close idle connections, give in-flight requests ``grace`` seconds.

        Requests still running after the grace period are cancelled (handlers see
        ``CancelledError``) and their connections closed. Responses finished during the
        grace period carry ``Connection: close``.
        """
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task, conn in list(self._connections.items()):
            if conn.idle:
                task.cancel()
        for task in list(self._refusing):
            task.cancel()
        if self._connections and grace > 0:
            await asyncio.wait(list(self._connections), timeout=grace)
        remaining = list(self._connections) + list(self._refusing)
        for task in remaining:
            task.cancel()
        if remaining:
            _, stuck = await asyncio.wait(remaining, timeout=5.0)
            if stuck:
                logger.warning(
                    "%s server: %d connections ignored cancellation", self.name, len(stuck)
                )
        if self._server is not None:
            await self._server.wait_closed()
        logger.info("%s server closed", self.name)

    def cut(self) -> None:
        """Cancel every request in flight now (a ``close`` waiting out its grace period then
        finishes at once): for an operator who asked twice to stop."""
        for task in list(self._connections):
            task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # asyncio runs this as a task; its done-callback treats a cancelled task as an error,
        # so cancellation (from close()) is absorbed here once the socket is closed.
        task = asyncio.current_task()
        assert task is not None
        set_nodelay(writer)
        conn = Connection(
            reader, writer, app=self.app, limits=self.limits, closing=lambda: self._closing
        )
        if self._closing:
            conn.writer.transport.abort()
            return
        if len(self._connections) >= self.limits.max_connections:
            self._refusing.add(task)
            self._warn_connection_limit(conn.client_str)
            try:
                await conn.refuse()
            except asyncio.CancelledError:
                pass
            finally:
                self._refusing.discard(task)
            return
        self._connections[task] = conn
        try:
            await conn.run()
        except asyncio.CancelledError:
            pass
        finally:
            del self._connections[task]

    def _warn_connection_limit(self, client: str) -> None:
        now = time.monotonic()
        if now - self._last_limit_warning >= _LIMIT_WARNING_INTERVAL:
            self._last_limit_warning = now
            logger.warning(
                "%s server: connection limit (%d) reached; refusing %s with 503",
                self.name,
                self.limits.max_connections,
                client,
            )


def set_nodelay(writer: asyncio.StreamWriter) -> None:
    """Disable Nagle so each flushed SSE event leaves at once (asyncio does too; be sure)."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def format_address(addr: object) -> str:
    """``host:port`` of a socket address for the log (``[host]:port`` for IPv6)."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = str(addr[0])
        return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
    return str(addr)

"""The transport's resource limits, in their own module so that both the server (which owns
the connection cap) and each connection (which enforces the rest) can import them without
importing each other."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HTTPLimits"]


@dataclass(frozen=True)
class HTTPLimits:
    """Resource limits that keep one client from exhausting the server."""

    max_body_bytes: int = 8 * 1024 * 1024
    """Larger request bodies get 413: checked on Content-Length up front, before
    ``100 Continue``, and while a chunked body arrives."""
    max_header_bytes: int = 16 * 1024
    """Larger request heads get 431 (h11's ``max_incomplete_event_size``)."""
    header_timeout: float = 10.0
    """The request head must arrive within this many seconds of its first byte (of the
    connection's start, for a connection's first request); else 408 and close."""
    body_timeout: float = 30.0
    """The whole body must arrive within this many seconds after the head; else 408."""
    keepalive_timeout: float = 5.0
    """An idle keep-alive connection is closed after this many seconds."""
    max_connections: int = 1000
    """Connections beyond this are answered 503 and closed, so clients see why."""
    write_timeout: float = 30.0
    """A client that stops reading for this long is dropped."""

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value <= 0:
                raise ValueError(f"HTTPLimits.{name} must be positive, got {value!r}")

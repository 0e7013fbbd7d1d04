"""One request/response exchange as the access log sees it, and its access line."""

from __future__ import annotations

import logging
import uuid

from triton_mlx.observability.logs import ACCESS_LOGGER_NAME, IN_MESSAGE, request_id_var

from .messages import Request

access_logger = logging.getLogger(ACCESS_LOGGER_NAME)

CLIENT_CLOSED_REQUEST = 499
"""Status logged (never sent) when the client left before a response was started (nginx's)."""
_SHUTDOWN_STATUS = 503  # logged (never sent) when close() cancelled a request before it answered


class Exchange:
    """What the access log needs about one request/response, however it ended."""

    __slots__ = (
        "method",
        "path",
        "request_id",
        "started",
        "status",
        "request",
        "disconnected",
        "cancelled",
    )

    def __init__(self, started: float) -> None:
        self.method = "-"
        self.path = "-"
        self.request_id = uuid.uuid4().hex
        self.started = started
        self.status: int | None = None
        self.request: Request | None = None
        self.disconnected = False  # the client went away while the request was handled
        self.cancelled = False  # close() cancelled the request after its grace period


def log_access(ex: Exchange, client: str, now: float) -> None:
    """Write the one access line of an exchange, with its request id and log fields."""
    if not access_logger.isEnabledFor(logging.INFO):
        return
    ms = (now - ex.started) * 1000.0
    status = ex.status
    if status is None:
        status = CLIENT_CLOSED_REQUEST if ex.disconnected else _SHUTDOWN_STATUS
    extra: dict[str, object] = {
        "method": ex.method,
        "path": ex.path,
        "status": status,
        "duration_ms": round(ms, 1),
        "client": client,
        "request_id": ex.request_id,
    }
    if ex.disconnected:
        extra["disconnected"] = True
    if ex.cancelled:
        extra["cancelled"] = True
    if ex.request is not None:
        extra.update(ex.request.log_fields)
    reserved = _reserved_record_keys()
    extra = {(f"field_{k}" if k in reserved else k): v for k, v in extra.items()}
    extra[IN_MESSAGE] = ("method", "path", "status", "duration_ms", "request_id")
    token = request_id_var.set(ex.request_id)
    try:
        access_logger.info("%s %s %s %.1fms", ex.method, ex.path, status, ms, extra=extra)
    finally:
        request_id_var.reset(token)


_reserved_cache: tuple[object, frozenset[str]] | None = None


def _reserved_record_keys() -> frozenset[str]:
    """Attributes a LogRecord already has; ``extra`` may not overwrite them (KeyError).

    Probed from the current record factory (cached per factory), so a factory that stamps
    e.g. ``request_id`` on every record does not make the access log line fail; the
    clashing extra key is logged under a ``field_`` prefix instead.
    """
    global _reserved_cache
    factory = logging.getLogRecordFactory()
    if _reserved_cache is None or _reserved_cache[0] is not factory:
        record = factory("probe", logging.INFO, __file__, 0, "", (), None)
        keys = frozenset(vars(record)) | {"message", "asctime"}
        _reserved_cache = (factory, keys)
    return _reserved_cache[1]

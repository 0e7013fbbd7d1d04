"""Logging for the ``triton_mlx`` logger tree, with request ids on every line.

The HTTP layer binds a request id in ``request_id_var`` for each request. A
handler filter copies it onto each record in the thread that logs it, so
records later formatted elsewhere keep it; code running outside the request's
context (the engine thread) passes ``extra={"request_id": ...}`` instead.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import TextIO

__all__ = [
    "ACCESS_LOGGER_NAME",
    "HumanFormatter",
    "JsonFormatter",
    "RequestIdFilter",
    "bind_request_id",
    "configure_logging",
    "request_id_var",
]

ROOT_LOGGER_NAME = "triton_mlx"
ACCESS_LOGGER_NAME = "triton_mlx.access"

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "triton_mlx_request_id", default=None
)

# Anything on a record beyond these came from the caller's ``extra``.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "request_id",
}


def bind_request_id(request_id: str | None) -> contextvars.Token[str | None]:
    """Bind a request id for the current context; undo with ``request_id_var.reset(token)``."""
    return request_id_var.set(request_id)


class RequestIdFilter(logging.Filter):
    """Stamp records with the bound request id unless the caller passed one explicitly."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


IN_MESSAGE = "in_message"
"""An ``extra`` key naming the fields the message text already shows: the human format leaves
them out (no ``GET /x 200 ... method=GET path=/x``); the JSON format keeps every field."""


def _extra_fields(record: logging.LogRecord) -> dict[str, object]:
    return {
        k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and k != IN_MESSAGE
    }


def _logfmt_value(value: object) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class HumanFormatter(logging.Formatter):
    """``<ts> LEVEL logger [req=id] message key=value ...``, then any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), f"{record.levelname:<5}", record.name]
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            parts.append(f"[req={request_id}]")
        parts.append(record.getMessage())
        shown = getattr(record, IN_MESSAGE, ())
        parts.extend(
            f"{k}={_logfmt_value(v)}" for k, v in _extra_fields(record).items() if k not in shown
        )
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line; tracebacks travel inside strings, never across lines."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            payload["request_id"] = request_id
        for key, value in _extra_fields(record).items():
            payload.setdefault(key, value)  # an extra never overwrites the fixed fields
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


class _Handler(logging.StreamHandler):
    """Marks the handler ``configure_logging`` owns, so a second call replaces it."""


def configure_logging(
    level: str = "INFO", json_logs: bool = False, stream: TextIO | None = None
) -> None:
    """Send the ``triton_mlx`` logger tree to stderr (or ``stream``); safe to call again.

    Other libraries' loggers and the root logger are left alone. The tree stops
    propagating to the root so a root handler doesn't print every line twice.
    """
    logger = logging.getLogger(ROOT_LOGGER_NAME)
    logger.setLevel(level.upper())  # first: a bad level name raises before anything changes
    for old in [h for h in logger.handlers if isinstance(h, _Handler)]:
        logger.removeHandler(old)
        old.close()
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if json_logs else HumanFormatter())
    handler.addFilter(RequestIdFilter())
    logger.addHandler(handler)
    logger.propagate = False

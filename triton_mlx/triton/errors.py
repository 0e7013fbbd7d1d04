"""Triton's error shape, ``{"error": "<message>"}``, and its status codes.

Triton maps its error codes to HTTP statuses (``HttpCodeFromError`` in its HTTP server):
NOT_FOUND 404, UNAVAILABLE 503, UNSUPPORTED 501, INTERNAL 500, everything else 400.
``tritonclient`` raises ``InferenceServerException`` on any non-200 with the ``error`` text.
"""

from __future__ import annotations

import json

from triton_mlx.http import Response, json_response
from triton_mlx.serving.errors import RequestError
from triton_mlx.serving.parameters import BY_NAME

# The serving layer's statuses that Triton spells differently: a full queue is UNAVAILABLE.
_STATUS = {429: 503}

# Triton's fixed texts for the errors its router produces itself.
_ROUTER_MESSAGES = {404: "Not Found", 405: "Method Not Allowed"}


class TritonError(Exception):
    """An error for the client, with the HTTP status Triton would send for it."""

    def __init__(
        self, status: int, message: str, *, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []

    def body(self) -> dict[str, str]:
        return {"error": self.message}

    def response(self) -> Response:
        return json_response(self.body(), status=self.status, headers=self.headers)

    def sse_data(self) -> str:
        return json.dumps(self.body(), separators=(",", ":"), ensure_ascii=False)


def from_request_error(error: RequestError, source: str | None = None) -> TritonError:
    """The serving layer's error in Triton's shape: the one place this port translates it.

    Triton's body has no ``param``, so an error about a generation parameter names where the
    parameter came from (``source``: "sampling_parameters" or "parameters") in its message."""
    message = error.message
    if source and error.param in BY_NAME and not message.startswith(source):
        message = f"{source}: {message}"
    return TritonError(_STATUS.get(error.status, error.status), message, headers=error.headers)


def invalid_arg(message: str) -> TritonError:
    """INVALID_ARG (and Triton's other client errors): 400."""
    return TritonError(400, message)


def not_found(message: str) -> TritonError:
    return TritonError(404, message)


def unavailable(message: str, headers: list[tuple[str, str]] | None = None) -> TritonError:
    return TritonError(503, message, headers=headers)


def unsupported(message: str, headers: list[tuple[str, str]] | None = None) -> TritonError:
    return TritonError(501, message, headers=headers)


def internal(message: str) -> TritonError:
    return TritonError(500, message)


def format_error(status: int, message: str) -> Response:
    """The Router's formatter: Triton's texts for 404/405, the transport's message otherwise."""
    return TritonError(status, _ROUTER_MESSAGES.get(status, message)).response()

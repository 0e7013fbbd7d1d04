"""OpenAI's error shape, ``{"error": {"message", "type", "param", "code"}}``, for the serving
layer's :class:`RequestError`: the one place the OpenAI port shapes an error."""

from __future__ import annotations

import json

from triton_mlx.http import Response, json_response
from triton_mlx.serving.errors import RequestError

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
    500: "server_error",
    503: "service_unavailable",
}


def error_body(error: RequestError) -> dict:
    return {
        "error": {
            "message": error.message,
            "type": _TYPES.get(error.status, "invalid_request_error"),
            "param": error.param,
            "code": error.code,
        }
    }


def error_response(error: RequestError) -> Response:
    return json_response(error_body(error), status=error.status, headers=error.headers)


def error_event_data(error: RequestError) -> str:
    """The ``data`` of an in-band error event (a failure after a stream started)."""
    return json.dumps(error_body(error), separators=(",", ":"))


def format_error(status: int, message: str) -> Response:
    """The Router's formatter for errors the transport itself produces (404, 405, 413, ...)."""
    return error_response(RequestError(status, message))

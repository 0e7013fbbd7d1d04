"""OpenAI's error shape for the Responses routes, ``{"error": {"message", "type", "param",
"code"}}``, and the stream's ``error`` event. Written here rather than imported, as front-ends
never import each other; the types follow the OpenAI routes' on the same port."""

from __future__ import annotations

from typing import Any

from triton_mlx.http import Response, json_response
from triton_mlx.serving.errors import RequestError

_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


def error_body(error: RequestError) -> dict[str, Any]:
    return {"error": {"message": error.message,
                      "type": _TYPES.get(error.status, "invalid_request_error"),
                      "param": error.param, "code": error.code}}


def error_response(error: RequestError) -> Response:
    return json_response(error_body(error), status=error.status, headers=error.headers)


def stream_error(error: RequestError) -> dict[str, Any]:
    """The ``error`` event of a stream that fails after it started (without its number)."""
    return {"type": "error", "code": error.code or _TYPES.get(error.status, "server_error"),
            "message": error.message, "param": error.param}

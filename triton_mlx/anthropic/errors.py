"""Anthropic's error shape, ``{"type": "error", "error": {"type", "message"}}``, for the serving
layer's :class:`RequestError`: the one place this front-end shapes an error.

The error ``type`` follows the HTTP status as Anthropic's API does (400
``invalid_request_error``, 401 ``authentication_error``, 404 ``not_found_error``, 413
``request_too_large``, 429 ``rate_limit_error``, 500 ``api_error``...). One status is
Anthropic's own: a full queue (``code`` ``queue_full``) is ``529 overloaded_error``, as
Anthropic answers when its servers are overloaded (its SDKs retry it), with the
``Retry-After`` header the serving layer sets. Anthropic's body has no ``param``: the message
names the parameter at fault, as every message from the serving layer already does.
"""

from __future__ import annotations

import json

from triton_mlx.http import Response, json_response
from triton_mlx.serving.errors import RequestError

OVERLOADED = 529
"""Anthropic's status for ``overloaded_error``."""

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
    500: "api_error",
    503: "api_error",
    OVERLOADED: "overloaded_error",
}


def status_of(error: RequestError) -> int:
    """The HTTP status Anthropic's clients expect for ``error``."""
    return OVERLOADED if error.code == "queue_full" else error.status


def error_body(error: RequestError) -> dict:
    status = status_of(error)
    kind = _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def error_response(error: RequestError) -> Response:
    return json_response(error_body(error), status=status_of(error), headers=error.headers)


def error_event_data(error: RequestError) -> str:
    """The ``data`` of an in-band ``error`` event (a failure after a stream started)."""
    return json.dumps(error_body(error), separators=(",", ":"))

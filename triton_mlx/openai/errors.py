"""OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import json

from triton_mlx.http import Response, json_response

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


class OpenAIError(Exception):
    """An error a client caused or must hear about, with its HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or []

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": _TYPES.get(self.status, "invalid_request_error"),
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> Response:
        return json_response(self.body(), status=self.status, headers=self.headers)

    def sse_data(self) -> str:
        return json.dumps(self.body(), separators=(",", ":"))


def invalid(message: str, param: str | None = None) -> OpenAIError:
    """A 400 naming the parameter at fault."""
    return OpenAIError(400, message, param=param, code="invalid_value" if param else None)


def format_error(status: int, message: str) -> Response:
    """The Router's formatter for errors the transport itself produces (404, 405, 413, ...)."""
    return OpenAIError(status, message).response()

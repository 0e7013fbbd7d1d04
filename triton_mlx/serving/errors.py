"""The one error the serving layer raises: what went wrong, for the client, in no protocol's shape.

Front-ends turn it into their own error body in one place each (OpenAI: ``openai/errors.py``,
Triton: ``triton/errors.py``). ``param`` names the request field at fault, ``code`` is a stable
machine-readable reason; both follow OpenAI's vocabulary, which the other protocols can map.
"""

from __future__ import annotations

from collections.abc import Callable

from triton_mlx.http import Handler, Request, Response, StreamingResponse

RETRY_AFTER_SECONDS = "1"
"""What a client told to retry later (a full queue) is asked to wait."""


class RequestError(Exception):
    """A request the server will not or cannot serve, with the HTTP status that says why."""

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

    def __repr__(self) -> str:
        return f"RequestError({self.status}, {self.message!r}, param={self.param!r})"


def invalid(message: str, param: str | None = None) -> RequestError:
    """A 400 naming the parameter at fault."""
    return RequestError(400, message, param=param, code="invalid_value" if param else None)


def queue_full(message: str) -> RequestError:
    """Every batch slot is busy and the queue is full: retry shortly."""
    return RequestError(429, message, code="queue_full",
                        headers=[("Retry-After", RETRY_AFTER_SECONDS)])


def not_ready(message: str, param: str | None = None) -> RequestError:
    return RequestError(503, message, param=param, code="model_not_ready")


def engine_failed(message: str) -> RequestError:
    return RequestError(500, message, code="engine_error")


def shaped_errors(handler: Handler, shape: Callable[[RequestError], Response]) -> Handler:
    """``handler`` with a RequestError raised anywhere in it turned into ``shape(error)``: how
    each front-end gives its routes its protocol's error body."""

    async def handle(request: Request) -> Response | StreamingResponse:
        try:
            return await handler(request)
        except RequestError as exc:
            return shape(exc)

    return handle

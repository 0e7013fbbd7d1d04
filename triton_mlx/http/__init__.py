"""HTTP/1.1 transport shared by the front-ends: server, routing, messages, SSE framing.

This layer knows nothing about OpenAI, Triton or MLX. A front-end builds a :class:`Router`
(with its own error shape), registers handlers and middleware, and serves it with an
:class:`HTTPServer` on its own port.
"""

from .limits import HTTPLimits
from .messages import (
    BodyDecodeError,
    Headers,
    Request,
    Response,
    StreamingResponse,
    json_response,
    text_response,
)
from .routing import ErrorFormatter, Handler, Middleware, Router
from .server import CLIENT_CLOSED_REQUEST, HTTPServer
from .sse import sse_comment, sse_event, sse_json

__all__ = [
    "CLIENT_CLOSED_REQUEST",
    "BodyDecodeError",
    "ErrorFormatter",
    "HTTPLimits",
    "HTTPServer",
    "Handler",
    "Headers",
    "Middleware",
    "Request",
    "Response",
    "Router",
    "StreamingResponse",
    "json_response",
    "sse_comment",
    "sse_event",
    "sse_json",
    "text_response",
]

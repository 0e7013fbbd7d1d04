"""Anthropic's Messages API on the OpenAI port: its routes, key header and error shape.

``AnthropicFrontend`` is one of the port's front-ends (``triton_mlx.openai_port``): it owns
the paths under ``/v1/messages`` (``POST /v1/messages``, ``POST /v1/messages/count_tokens``),
takes the key from ``x-api-key`` as Anthropic's clients send it (or ``Authorization: Bearer``),
and answers every error, the key check's included, in Anthropic's shape (``errors.py``). The
``anthropic-version`` and ``anthropic-beta`` headers are accepted and not read: there is one
version of this API. Modules beside this one, one job each: ``request.py`` (validation),
``content.py`` (messages), ``tools.py``, ``messages.py`` (the handlers), ``shaping.py``
(answers and events).
"""

from __future__ import annotations

from triton_mlx.anthropic.errors import error_response
from triton_mlx.anthropic.messages import MessagesHandler
from triton_mlx.config import ServerConfig
from triton_mlx.http import Response, Router
from triton_mlx.observability.server_metrics import ServerMetrics
from triton_mlx.repository.repository import ModelRepository
from triton_mlx.serving.errors import RequestError, shaped_errors

PREFIX = "/v1/messages"


class AnthropicFrontend:
    """Anthropic's routes and their handler."""

    key_header: str | None = "x-api-key"

    def __init__(
        self, repository: ModelRepository, config: ServerConfig, metrics: ServerMetrics
    ) -> None:
        self.handler = MessagesHandler(repository, config, metrics)

    def owns(self, path: str) -> bool:
        """``/v1/messages`` and the paths under it: the key check answers there in
        Anthropic's shape."""
        return path == PREFIX or path.startswith(PREFIX + "/")

    def unauthorized(self, message: str) -> Response:
        return error_response(RequestError(401, message))

    def register(self, router: Router) -> None:
        """Add the Messages routes to the port's ``router``, each shaping its own errors."""
        router.add("POST", PREFIX, shaped_errors(self.handler.messages, error_response))
        router.add("POST", PREFIX + "/count_tokens",
                   shaped_errors(self.handler.count_tokens, error_response))


"""The OpenAI port (``--openai-port``): the front-ends it serves, and its key check.

Several protocols share the port, as clients expect them at the same base URL: OpenAI's
routes (``openai``) and, beside them, other front-ends that speak their own protocol. Each is
a :class:`PortFrontend`: it registers its routes (each shaping its own errors), says which paths
are its own, and how a refused key looks in its protocol. The key check runs before routing for
every path (see ``http.routing``), in the shape of the front-end that owns the path; the first
front-end in the list that owns a path has it, and OpenAI's owns the rest (unknown paths too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from triton_mlx.anthropic.app import AnthropicFrontend
from triton_mlx.auth import bearer_auth
from triton_mlx.config import ServerConfig
from triton_mlx.http import Handler, Middleware, Request, Response, Router, StreamingResponse
from triton_mlx.observability.server_metrics import ServerMetrics
from triton_mlx.openai.app import HEALTH_PATHS, OpenAIFrontend
from triton_mlx.openai.errors import format_error
from triton_mlx.repository.repository import ModelRepository
from triton_mlx.responses_api.app import ResponsesFrontend


class PortFrontend(Protocol):
    key_header: str | None
    """A header that may carry the key instead of ``Authorization: Bearer`` (or None)."""

    def owns(self, path: str) -> bool: ...

    def unauthorized(self, message: str) -> Response: ...

    def register(self, router: Router) -> None: ...


def openai_port_router(repository: ModelRepository, config: ServerConfig,
                       metrics: ServerMetrics) -> Router:
    """The port's router: every front-end's routes behind one key check."""
    frontends: list[PortFrontend] = [ResponsesFrontend(repository, config, metrics),
                                     AnthropicFrontend(repository, config, metrics),
                                     OpenAIFrontend(repository, config, metrics)]
    router = Router(format_error)
    if config.api_key:
        router.add_middleware(_key_check(config.api_key, frontends))
    for frontend in frontends:
        frontend.register(router)
    return router


def _key_check(api_key: str, frontends: Sequence[PortFrontend]) -> Middleware:
    checks = [(f, bearer_auth(api_key, exempt_paths=HEALTH_PATHS, unauthorized=f.unauthorized,
                              key_header=f.key_header)) for f in frontends]

    async def middleware(request: Request, call_next: Handler) -> Response | StreamingResponse:
        check = next(check for frontend, check in checks if frontend.owns(request.path))
        return await check(request, call_next)

    return middleware

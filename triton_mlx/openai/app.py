"""The OpenAI-compatible API: its routes, authentication and error shape.

Handlers live beside this module, one job each: ``completions.py`` (chat and text
completions), ``embeddings.py``, ``models.py`` (model cards, load/unload). Each raises the
serving layer's :class:`RequestError`; the middleware here turns it into OpenAI's error body.
"""

from __future__ import annotations

from triton_mlx.auth import bearer_auth
from triton_mlx.config import ServerConfig
from triton_mlx.http import (
    Request,
    Response,
    Router,
    StreamingResponse,
    json_response,
    text_response,
)
from triton_mlx.observability.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from triton_mlx.observability.server_metrics import ServerMetrics
from triton_mlx.openai import openapi
from triton_mlx.openai.completions import CompletionsHandler
from triton_mlx.openai.embeddings import EmbeddingsHandler
from triton_mlx.openai.errors import error_response, format_error
from triton_mlx.openai.models import ModelsHandler
from triton_mlx.repository.repository import ModelRepository
from triton_mlx.serving.errors import RequestError

HEALTH_PATHS = ("/v1/health/live", "/v1/health/ready")


class OpenAIFrontend:
    """Routes the OpenAI port's requests to their handlers."""

    def __init__(
        self, repository: ModelRepository, config: ServerConfig, metrics: ServerMetrics
    ) -> None:
        self.repository = repository
        self.config = config
        self.metrics = metrics
        self.completions = CompletionsHandler(repository, config, metrics)
        self.embeddings = EmbeddingsHandler(repository, metrics)
        self.models = ModelsHandler(repository)

    def router(self) -> Router:
        router = Router(format_error)
        if self.config.api_key:
            router.add_middleware(
                bearer_auth(
                    self.config.api_key,
                    exempt_paths=HEALTH_PATHS,
                    unauthorized=lambda message: error_response(
                        RequestError(401, message, code="invalid_api_key")
                    ),
                )
            )
        router.add_middleware(_openai_errors)
        router.add("POST", "/v1/chat/completions", self.completions.chat)
        router.add("POST", "/v1/completions", self.completions.completions)
        router.add("POST", "/v1/embeddings", self.embeddings.handle)
        router.add("GET", "/v1/models", self.models.list_models)
        router.add("POST", "/v1/models/{model_id}/load", self.models.load_model)
        router.add("POST", "/v1/models/{model_id}/unload", self.models.unload_model)
        router.add("GET", "/v1/models/{model_id:path}", self.models.get_model)
        router.add("GET", "/v1/health/live", self.live)
        router.add("GET", "/v1/health/ready", self.ready)
        router.add("GET", "/v1/metrics", self.metrics_text)
        router.add("GET", "/openapi.json", openapi.serve)
        return router

    async def live(self, request: Request) -> Response:
        return json_response({"status": "live"})

    async def ready(self, request: Request) -> Response:
        models = {e.name: str(e.state) for e in self.repository.entries()}
        if self.repository.ready:
            return json_response({"status": "ready", "models": models})
        return json_response({"status": "not ready", "models": models}, status=503)

    async def metrics_text(self, request: Request) -> Response:
        return text_response(self.metrics.render(), content_type=METRICS_CONTENT_TYPE)


async def _openai_errors(request: Request, call_next) -> Response | StreamingResponse:
    """Turn a RequestError raised anywhere in a handler into OpenAI's error response."""
    try:
        return await call_next(request)
    except RequestError as exc:
        return error_response(exc)

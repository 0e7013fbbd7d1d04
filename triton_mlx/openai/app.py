"""The OpenAI-compatible API: its routes and error shape, on the OpenAI port.

Handlers live beside this module, one job each: ``completions.py`` (chat and text
completions), ``embeddings.py``, ``models.py`` (model cards, load/unload). Each raises the
serving layer's :class:`RequestError`; the wrapper here turns it into OpenAI's error body.
``triton_mlx.openai_port`` puts these routes on the port, beside other front-ends'.
"""

from __future__ import annotations

from triton_mlx.config import ServerConfig
from triton_mlx.http import (
    Request,
    Response,
    Router,
    json_response,
    text_response,
)
from triton_mlx.observability.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from triton_mlx.observability.server_metrics import ServerMetrics
from triton_mlx.openai import openapi
from triton_mlx.openai.completions import CompletionsHandler
from triton_mlx.openai.embeddings import EmbeddingsHandler
from triton_mlx.openai.errors import error_response
from triton_mlx.openai.models import ModelsHandler
from triton_mlx.repository.repository import ModelRepository
from triton_mlx.serving.errors import RequestError, shaped_errors

HEALTH_PATHS = ("/v1/health/live", "/v1/health/ready")


class OpenAIFrontend:
    """OpenAI's routes and their handlers."""

    key_header: str | None = None

    def __init__(
        self, repository: ModelRepository, config: ServerConfig, metrics: ServerMetrics
    ) -> None:
        self.repository = repository
        self.config = config
        self.metrics = metrics
        self.completions = CompletionsHandler(repository, config, metrics)
        self.embeddings = EmbeddingsHandler(repository, metrics)
        self.models = ModelsHandler(repository)

    def owns(self, path: str) -> bool:
        """Every path of the port that no other front-end owns (``openai_port``)."""
        return True

    def unauthorized(self, message: str) -> Response:
        return error_response(RequestError(401, message, code="invalid_api_key"))

    def register(self, router: Router) -> None:
        """Add the OpenAI routes to the port's ``router``, each shaping its own errors."""
        for method, pattern, handler in (
            ("POST", "/v1/chat/completions", self.completions.chat),
            ("POST", "/v1/completions", self.completions.completions),
            ("POST", "/v1/embeddings", self.embeddings.handle),
            ("GET", "/v1/models", self.models.list_models),
            ("POST", "/v1/models/{model_id}/load", self.models.load_model),
            ("POST", "/v1/models/{model_id}/unload", self.models.unload_model),
            ("GET", "/v1/models/{model_id:path}", self.models.get_model),
            ("GET", "/v1/health/live", self.live),
            ("GET", "/v1/health/ready", self.ready),
            ("GET", "/v1/metrics", self.metrics_text),
            ("GET", "/openapi.json", openapi.serve),
        ):
            router.add(method, pattern, shaped_errors(handler, error_response))

    async def live(self, request: Request) -> Response:
        return json_response({"status": "live"})

    async def ready(self, request: Request) -> Response:
        models = {e.name: str(e.state) for e in self.repository.entries()}
        if self.repository.ready:
            return json_response({"status": "ready", "models": models})
        return json_response({"status": "not ready", "models": models}, status=503)

    async def metrics_text(self, request: Request) -> Response:
        return text_response(self.metrics.render(), content_type=METRICS_CONTENT_TYPE)


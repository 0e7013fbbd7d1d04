"""The metrics port (Triton's ``--metrics-port``, 8002): ``GET /metrics`` in Prometheus text.

It serves the same registry as the OpenAI port's ``/v1/metrics``. With an API key set, the
key is required here too (Prometheus sends it with ``authorization: {credentials: KEY}``).
"""

from __future__ import annotations

from triton_mlx.auth import bearer_auth
from triton_mlx.http import Request, Response, Router, text_response
from triton_mlx.observability.metrics import CONTENT_TYPE
from triton_mlx.observability.server_metrics import ServerMetrics
from triton_mlx.triton.errors import TritonError, format_error


def metrics_router(metrics: ServerMetrics, api_key: str | None = None) -> Router:
    router = Router(format_error)
    if api_key:
        router.add_middleware(
            bearer_auth(
                api_key,
                exempt_paths=(),
                unauthorized=lambda message: TritonError(401, message).response(),
            )
        )

    async def scrape(request: Request) -> Response:
        return text_response(metrics.render(), content_type=CONTENT_TYPE)

    router.add("GET", "/metrics", scrape)
    return router

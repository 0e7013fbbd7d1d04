"""Server-wide settings, as parsed from the command line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerConfig:
    model_repository: Path
    host: str = "0.0.0.0"
    openai_port: int = 9000
    http_port: int = 8000
    metrics_port: int = 8002
    log_level: str = "INFO"
    max_memory_gb: float | None = None
    default_max_tokens: int = 256
    chat_template: Path | None = None
    tool_call_format: str | None = None
    model_control_mode: str = "poll"
    repository_poll_secs: float = 15.0
    load_models: tuple[str, ...] = ()
    max_concurrent_requests: int = 4
    max_queued_requests: int = 32
    api_key: str | None = None
    json_logs: bool = False
    max_request_bytes: int = 8 * 1024 * 1024
    runtime_profile: str = "auto"
    prefix_cache_mb: float = 1024.0
    prefill_chunk_tokens: int | None = None
    exit_timeout_secs: float = 30.0
    max_connections: int = 1000
    header_timeout_secs: float = 10.0
    body_timeout_secs: float = 30.0
    idle_timeout_secs: float = 5.0
    write_timeout_secs: float = 30.0
    warmup: bool = True
    responses_store_size: int = 1000
    rank_timeout_secs: float = 120.0
    """Under ``mlx.launch``: a rank that hears nothing from the others for this long exits 1."""
    parallel: str | None = None
    """How the first chat model is split across the ranks of ``mlx.launch`` (tensor or
    pipeline; tensor when launched without it); ignored in a single process."""
    """Responses kept for ``previous_response_id`` and ``GET /v1/responses/{id}`` (0: none)."""

"""The metrics this server exposes, in one place, with the names dashboards will query."""

from __future__ import annotations

from collections.abc import Callable

from triton_mlx.observability.metrics import (
    DEFAULT_BUCKETS,
    TOKEN_LATENCY_BUCKETS,
    Registry,
)

Occupancy = Callable[[], dict[tuple[str, ...], float]]


class ServerMetrics:
    """Owns the registry; front-ends call the ``observe_*`` methods."""

    def __init__(self) -> None:
        self.registry = Registry()
        r = self.registry
        self.request_duration = r.histogram(
            "triton_mlx_request_duration_seconds",
            "Time from receiving a generation request to its last byte.",
            ("model", "route"),
            DEFAULT_BUCKETS,
        )
        self.time_to_first_token = r.histogram(
            "triton_mlx_time_to_first_token_seconds",
            "Time from receiving a generation request to its first generated text.",
            ("model",),
            DEFAULT_BUCKETS,
        )
        self.time_per_output_token = r.histogram(
            "triton_mlx_time_per_output_token_seconds",
            "Mean time between generated tokens of a request, after the first.",
            ("model",),
            TOKEN_LATENCY_BUCKETS,
        )
        self.prompt_tokens = r.counter(
            "triton_mlx_prompt_tokens", "Prompt tokens processed.", ("model",)
        )
        self.generation_tokens = r.counter(
            "triton_mlx_generation_tokens", "Tokens generated.", ("model",)
        )
        self.prefix_cache_hits = r.counter(
            "triton_mlx_prefix_cache_hits",
            "Generation requests whose prompt started from the prefix cache.", ("model",),
        )
        self.cached_prompt_tokens = r.counter(
            "triton_mlx_prefix_cache_tokens",
            "Prompt tokens served from the prefix cache instead of being prefilled.",
            ("model",),
        )
        self.tokens_per_second = r.histogram(
            "triton_mlx_request_generation_tokens_per_second",
            "Decode speed of each finished request: generated tokens / generation time.",
            ("model",),
            (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
        )
        self.running = r.gauge(
            "triton_mlx_requests_running", "Sequences in the running batch.", ("model",)
        )
        self.queued = r.gauge(
            "triton_mlx_requests_queued", "Requests waiting for a batch slot.", ("model",)
        )
        self.memory = r.gauge(
            "triton_mlx_memory_bytes",
            "Memory in use: MLX active/peak/cache and the process's resident set.",
            ("kind",),
        )

    def bind(self, running: Occupancy, queued: Occupancy, memory: Callable[[], dict]) -> None:
        """Wire the gauges that are read at scrape time."""
        self.running.set_function(running)
        self.queued.set_function(queued)
        self.memory.set_function(lambda: {(kind,): value for kind, value in memory().items()})

    def observe_generation(
        self,
        *,
        model: str,
        route: str,
        duration: float,
        first_token_after: float | None,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
    ) -> None:
        """Record one finished generation request."""
        self.request_duration.observe(duration, model=model, route=route)
        self.prompt_tokens.inc(prompt_tokens, model=model)
        if cached_tokens:
            self.prefix_cache_hits.inc(model=model)
            self.cached_prompt_tokens.inc(cached_tokens, model=model)
        self.generation_tokens.inc(completion_tokens, model=model)
        if first_token_after is None:
            return
        self.time_to_first_token.observe(first_token_after, model=model)
        decode_time = duration - first_token_after
        if completion_tokens > 1 and decode_time > 0:
            self.time_per_output_token.observe(decode_time / (completion_tokens - 1), model=model)
            self.tokens_per_second.observe((completion_tokens - 1) / decode_time, model=model)

    def render(self) -> str:
        return self.registry.render()

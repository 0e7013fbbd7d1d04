"""The metrics this server exposes, in one place, with the names dashboards will query."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from triton_mlx.observability.inference_stats import (
    SUCCESS,
    InferenceStats,
    InferenceTiming,
)
from triton_mlx.observability.metrics import (
    DEFAULT_BUCKETS,
    TOKEN_LATENCY_BUCKETS,
    Registry,
)

Occupancy = Callable[[], dict[tuple[str, ...], float]]

MODEL_VERSION = "1"  # every model has one version; Triton's metrics label it
# Triton's default buckets for nv_inference_first_response_histogram_ms.
FIRST_RESPONSE_BUCKETS_MS: tuple[float, ...] = (100, 500, 2000, 5000)


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
        self.queue_time = r.histogram(
            "triton_mlx_request_queue_seconds",
            "Time a generation request waited for a batch slot: from its submission to the "
            "engine to its first sequence entering the batch.",
            ("model",), DEFAULT_BUCKETS,
        )
        self.prefill_time = r.histogram(
            "triton_mlx_request_prefill_seconds",
            "Time from a request's first sequence entering the batch to its first generated "
            "text: the prompt's prefill and first decode step.",
            ("model",), DEFAULT_BUCKETS,
        )
        self.time_per_output_token = r.histogram(
            "triton_mlx_time_per_output_token_seconds",
            "Mean time between generated tokens of a request, after the first.",
            ("model",),
            TOKEN_LATENCY_BUCKETS,
        )
        self.inter_token_latency = r.histogram(
            "triton_mlx_inter_token_latency_seconds",
            "Time between consecutive generated tokens of a stream, as the client sees them.",
            ("model",), TOKEN_LATENCY_BUCKETS,
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
        self.ranks = r.gauge(
            "triton_mlx_model_ranks",
            "Ranks the model is split across under mlx.launch (1: not split).", ("model",)
        )
        self.exchange_seconds = r.gauge(
            "triton_mlx_rank_exchange_seconds",
            "Seconds rank 0 has spent telling the other ranks each step's commands (a "
            "collective per step; the model's own are in triton_mlx_rank_collective_seconds).",
            ("model",)
        )
        self.exchanges = r.gauge(
            "triton_mlx_rank_exchanges",
            "Exchanges of step commands between rank 0 and the other ranks.", ("model",)
        )
        self.collective_seconds = r.gauge(
            "triton_mlx_rank_collective_seconds",
            "Seconds the sampled steps spent in the model's own collectives (all-sum, "
            "send/receive, all-gather), waiting for the other ranks included; one step in 64 "
            "is sampled.", ("model",)
        )
        self.collective_steps = r.gauge(
            "triton_mlx_rank_collective_steps",
            "Engine steps whose collectives were timed (one in 64).", ("model",)
        )
        self.sampled_step_seconds = r.gauge(
            "triton_mlx_rank_sampled_step_seconds",
            "Whole time of the sampled steps, collectives included (the timing's host syncs "
            "add a little).", ("model",)
        )
        self.memory = r.gauge(
            "triton_mlx_memory_bytes",
            "Memory in use: MLX active/peak/cache and the process's resident set.",
            ("kind",),
        )
        self.inference_stats = InferenceStats()
        self._add_triton_families()

    def _add_triton_families(self) -> None:
        """Triton's metric names, help texts and labels, so its dashboards work unchanged.

        Triton's counters carry no ``_total`` suffix; its failure counter has a ``reason``.
        """
        r = self.registry
        labels = ("model", "version")

        def counter(name: str, help: str, names: tuple[str, ...] = labels):
            return r.counter(name, help, names, total_suffix=False)

        self.nv_success = counter(
            "nv_inference_request_success",
            "Number of successful inference requests, all batch sizes")
        self.nv_failure = counter(
            "nv_inference_request_failure",
            "Number of failed inference requests, all batch sizes",
            ("model", "reason", "version"))
        self.nv_count = counter(
            "nv_inference_count",
            "Number of inferences performed (does not include cached requests)")
        self.nv_exec_count = counter(
            "nv_inference_exec_count",
            "Number of model executions performed (does not include cached requests)")
        self.nv_request_duration = counter(
            "nv_inference_request_duration_us",
            "Cumulative inference request duration in microseconds (includes cached requests)")
        self.nv_queue_duration = counter(
            "nv_inference_queue_duration_us",
            "Cumulative inference queuing duration in microseconds (includes cached requests)")
        self.nv_compute_input_duration = counter(
            "nv_inference_compute_input_duration_us",
            "Cumulative compute input duration in microseconds (does not include cached "
            "requests)")
        self.nv_compute_infer_duration = counter(
            "nv_inference_compute_infer_duration_us",
            "Cumulative compute inference duration in microseconds (does not include cached "
            "requests)")
        self.nv_compute_output_duration = counter(
            "nv_inference_compute_output_duration_us",
            "Cumulative inference compute output duration in microseconds (does not include "
            "cached requests)")
        self.nv_pending = r.gauge(
            "nv_inference_pending_request_count",
            "Instantaneous number of pending requests awaiting execution per-model.",
            labels)
        self.nv_first_response = r.histogram(
            "nv_inference_first_response_histogram_ms",
            "Duration from request to first response in milliseconds",
            labels, FIRST_RESPONSE_BUCKETS_MS)
        self.nv_cpu_memory_total = r.gauge(
            "nv_cpu_memory_total_bytes", "CPU total memory (RAM), in bytes")
        self.nv_cpu_memory_used = r.gauge(
            "nv_cpu_memory_used_bytes", "CPU used memory (RAM), in bytes")

    def bind(self, running: Occupancy, queued: Occupancy, memory: Callable[[], dict],
             engine_field: Callable[[str], Occupancy] | None = None) -> None:
        """Wire the gauges that are read at scrape time (``engine_field(name)``: that field
        of every model's engine stats)."""
        self.running.set_function(running)
        self.queued.set_function(queued)
        if engine_field is not None:
            self.ranks.set_function(engine_field("ranks"))
            self.exchange_seconds.set_function(engine_field("exchange_seconds"))
            self.exchanges.set_function(engine_field("exchanges"))
            self.collective_seconds.set_function(engine_field("collective_seconds"))
            self.collective_steps.set_function(engine_field("collective_steps"))
            self.sampled_step_seconds.set_function(engine_field("sampled_step_seconds"))
        self.memory.set_function(lambda: {(kind,): value for kind, value in memory().items()})
        self.nv_pending.set_function(
            lambda: {(model, MODEL_VERSION): value for (model,), value in queued().items()}
        )

    def bind_system_memory(
        self, total: Callable[[], float], used: Callable[[], float]
    ) -> None:
        """Wire Triton's system-wide RAM gauges (a reading that raises is left out)."""
        self.nv_cpu_memory_total.set_function(total)
        self.nv_cpu_memory_used.set_function(used)

    def observe_inference(
        self,
        model: str,
        timing: InferenceTiming,
        *,
        outcome: str = SUCCESS,
        inferences: int = 1,
    ) -> None:
        """Record one generation request for Triton's statistics and ``nv_*`` metrics.

        Both front-ends call this for every request they submitted to an engine; ``outcome``
        is ``SUCCESS`` or a Triton failure reason (see ``inference_stats``).
        """
        self.inference_stats.record(model, timing, outcome=outcome, inferences=inferences)
        v = MODEL_VERSION
        if outcome != SUCCESS:
            self.nv_failure.inc(model=model, reason=outcome, version=v)
            return
        self.nv_success.inc(model=model, version=v)
        self.nv_count.inc(inferences, model=model, version=v)
        self.nv_exec_count.inc(model=model, version=v)
        self.nv_request_duration.inc(timing.duration // 1000, model=model, version=v)
        self.nv_queue_duration.inc(timing.queue // 1000, model=model, version=v)
        self.nv_compute_input_duration.inc(timing.compute_input // 1000, model=model, version=v)
        self.nv_compute_infer_duration.inc(timing.compute_infer // 1000, model=model, version=v)
        self.nv_compute_output_duration.inc(timing.compute_output // 1000, model=model, version=v)
        if timing.first_response is not None:
            self.nv_first_response.observe(timing.first_response / 1e6, model=model, version=v)

    def observe_generation(
        self,
        *,
        model: str,
        route: str,
        duration: float,
        first_token_after: float | None,
        prompt_tokens: int,
        admitted_after: float | None = None,
        completion_tokens: int,
        cached_tokens: int = 0,
        token_gaps: Sequence[float] = (),
    ) -> None:
        """Record one finished generation request. ``admitted_after``: seconds from its
        submission to its first sequence entering the batch (None if none did)."""
        if admitted_after is not None:
            self.queue_time.observe(admitted_after, model=model)
            if first_token_after is not None:
                self.prefill_time.observe(max(0.0, first_token_after - admitted_after),
                                          model=model)
        if token_gaps:
            gaps = self.inter_token_latency.labels(model=model)
            for gap in token_gaps:
                gaps.observe(gap)
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

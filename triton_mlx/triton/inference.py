"""From checked inputs to an engine generation, and its outcome into the statistics.

Shared by ``/infer``, ``/generate`` and ``/generate_stream``. The output follows Triton's vLLM
backend: without ``stream`` the answer is the whole text, the prompt first unless
``exclude_input_in_output`` is true; with ``stream`` each response holds the text generated
since the previous one, never the prompt. Prompts are plain text (no chat template), encoded
with the tokenizer's own special tokens.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from triton_mlx.config import ServerConfig
from triton_mlx.observability.inference_stats import (
    BACKEND,
    CANCELED,
    OTHER,
    REJECTED,
    SUCCESS,
    InferenceTiming,
)
from triton_mlx.observability.server_metrics import ServerMetrics
from triton_mlx.openai import generation as gen
from triton_mlx.openai.errors import OpenAIError
from triton_mlx.repository.repository import ServedModel
from triton_mlx.triton import sampling
from triton_mlx.triton.errors import TritonError, invalid_arg
from triton_mlx.triton.signature import LLMInputs

# Request parameters Triton itself consumes; they never reach the model as sampling settings.
_TRITON_PARAMETERS = frozenset(
    {"binary_data_output", "sequence_id", "sequence_start", "sequence_end", "priority",
     "timeout", "headers"}
)
# Status our engine errors get on Triton's side: a full queue is Triton's UNAVAILABLE.
_STATUS = {429: 503}
_REASONS = {"queue_full": REJECTED, "request_too_large": REJECTED}


def request_sampling_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """The request parameters meant for the model, after Triton's own are taken out.

    Triton refuses ``triton_``-prefixed names, and this server refuses the scheduling
    parameters it does not implement (sequences, priorities, timeouts) rather than ignore them.
    """
    for name, value in parameters.items():
        if name.startswith("triton_"):
            raise invalid_arg(
                "parameter keys starting with 'triton_' are reserved for Triton usage and "
                "should not be specified."
            )
        if name in ("sequence_id", "priority", "timeout") and value not in (0, "", None):
            raise invalid_arg(f"parameter '{name}' is not supported by this server")
        if name in ("sequence_start", "sequence_end") and value not in (False, None):
            raise invalid_arg(f"parameter '{name}' is not supported by this server")
    return {k: v for k, v in parameters.items() if k not in _TRITON_PARAMETERS}


class Inference:
    """One submitted generation: its text as it comes, and one statistics record at the end.

    Call :meth:`succeeded` or :meth:`failed` once the outcome is known and :meth:`close` in a
    ``finally``: it frees the engine slot (a no-op once finished) and records the request,
    as cancelled if neither was called (the client went away).
    """

    def __init__(
        self,
        metrics: ServerMetrics,
        generation: gen.Generation,
        prompt: str,
        prepend_prompt: bool,
        received: float,
        *,
        route: str,
        log_fields: dict[str, object] | None = None,
    ) -> None:
        self.metrics = metrics
        self.generation = generation
        self.prompt = prompt
        self.prepend_prompt = prepend_prompt
        self.received = received
        self.route = route
        self.log_fields = log_fields if log_fields is not None else {}
        self.last_output: float | None = None
        self.first_response: float | None = None
        self.finish_reason: str | None = None
        self._outcome: str | None = None
        self._closed = False

    @property
    def model(self) -> ServedModel:
        return self.generation.model

    async def text(self) -> str:
        """The whole answer (prompt first when asked for)."""
        pieces = [self.prompt] if self.prepend_prompt else []
        async for piece in self.deltas():
            pieces.append(piece)
        return "".join(pieces)

    async def deltas(self) -> AsyncIterator[str]:
        """New text per engine step; the last one (maybe empty) ends the generation."""
        async for _, output in self.generation.outputs():
            self.last_output = time.perf_counter()
            if output.finish_reason is not None:
                self.finish_reason = output.finish_reason
                yield output.text
            elif output.text:
                yield output.text

    def responded(self) -> None:
        """Mark the first response sent (a stream's first event)."""
        if self.first_response is None:
            self.first_response = time.perf_counter()

    def succeeded(self) -> None:
        self._outcome = SUCCESS

    def failed(self, reason: str = BACKEND) -> None:
        self._outcome = reason

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        generation = self.generation
        generation.cancel()
        now = time.perf_counter()
        outcome = self._outcome or CANCELED
        timing = InferenceTiming.from_marks(
            received=self.received,
            submitted=generation.started,
            first_output=generation.first_token_at,
            last_output=self.last_output,
            first_response=self.first_response,
            finished=now,
        )
        self.metrics.observe_inference(
            self.model.name, timing, outcome=outcome, inferences=len(generation.streams)
        )
        first = generation.first_token_at
        self.metrics.observe_generation(
            model=self.model.name,
            route=self.route,
            duration=now - generation.started,
            first_token_after=None if first is None else first - generation.started,
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.total_completion_tokens,
            cached_tokens=generation.cached_tokens,
            token_gaps=generation.token_gaps,
        )
        self.log_fields["completion_tokens"] = generation.total_completion_tokens


def submit(
    model: ServedModel,
    inputs: LLMInputs,
    request_parameters: dict[str, Any],
    *,
    config: ServerConfig,
    metrics: ServerMetrics,
    request_id: str,
    received: float,
    route: str,
    log_fields: dict[str, object] | None = None,
) -> Inference:
    """Validate the sampling settings, encode the prompt and submit it to the model's engine.

    Errors before the engine takes the request raise :class:`TritonError`; a request the
    engine refuses (queue full, too large, stopping) is also counted as a failed inference.
    """
    if inputs.stream:
        if inputs.exclude_input_in_output is False:
            raise invalid_arg("When streaming, `exclude_input_in_output` = False is not allowed.")
        prepend = False
    else:
        prepend = inputs.exclude_input_in_output is not True
    if inputs.sampling_parameters is not None:
        raw = sampling.parse_json_parameters(inputs.sampling_parameters)
        source = "sampling_parameters"
    else:
        raw = request_sampling_parameters(request_parameters)
        source = "parameters"
    params = sampling.generation_params(model.name, raw, source)
    tokens = model.prompts.completion(inputs.text)
    try:
        gen.check_prompt_tokens(model, tokens, "text_input")
        max_tokens = gen.resolve_max_tokens(model, params, len(tokens), config)
        settings = gen.sampling_params(model, params)
    except OpenAIError as exc:
        raise _triton_error(exc, source) from None
    try:
        generation = gen.submit(model, [tokens], [max_tokens], settings, params, request_id)
    except OpenAIError as exc:
        now = time.perf_counter()
        metrics.observe_inference(
            model.name,
            InferenceTiming.from_marks(received=received, finished=now),
            outcome=_REASONS.get(exc.code or "", OTHER),
        )
        raise _triton_error(exc, source) from None
    return Inference(metrics, generation, inputs.text, prepend, received, route=route,
                     log_fields=log_fields)


def _triton_error(exc: OpenAIError, source: str) -> TritonError:
    """Our shared helpers speak OpenAI's errors; keep the message, use Triton's status."""
    message = exc.message
    if exc.param in ("max_tokens", "logit_bias") and not message.startswith(source):
        message = f"{source}: {message}"
    return TritonError(_STATUS.get(exc.status, exc.status), message, headers=exc.headers)

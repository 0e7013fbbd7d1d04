"""From checked inputs to a running generation, and its outcome into the statistics.

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
    OTHER,
    REJECTED,
    SUCCESS,
    InferenceTiming,
)
from triton_mlx.observability.server_metrics import ServerMetrics
from triton_mlx.repository.served import ChatModel
from triton_mlx.serving.errors import RequestError
from triton_mlx.serving.generation import Generation
from triton_mlx.serving.requests import generate
from triton_mlx.triton import sampling
from triton_mlx.triton.errors import from_request_error, invalid_arg
from triton_mlx.triton.signature import LLMInputs

# Request parameters Triton itself consumes; they never reach the model as sampling settings.
_TRITON_PARAMETERS = frozenset(
    {"binary_data_output", "sequence_id", "sequence_start", "sequence_end", "priority",
     "timeout", "headers"}
)
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
        model: ChatModel,
        generation: Generation,
        prompt: str,
        prepend_prompt: bool,
        *,
        route: str,
        log_fields: dict[str, object] | None = None,
    ) -> None:
        self.metrics = metrics
        self.model = model
        self.generation = generation
        self.prompt = prompt
        self.prepend_prompt = prepend_prompt
        self.route = route
        self.log_fields = log_fields if log_fields is not None else {}
        self.first_response: float | None = None
        self.finish_reason: str | None = None
        self._outcome: str | None = None

    async def text(self) -> str:
        """The whole answer (prompt first when asked for)."""
        pieces = [self.prompt] if self.prepend_prompt else []
        async for piece in self.deltas():
            pieces.append(piece)
        return "".join(pieces)

    async def deltas(self) -> AsyncIterator[str]:
        """New text per engine step; the last one (maybe empty) ends the generation. An
        engine failure raises ``RequestError`` (500)."""
        async for delta in self.generation.deltas():
            if delta.finish_reason is not None:
                self.finish_reason = delta.finish_reason
                yield delta.text
            elif delta.text:
                yield delta.text

    def responded(self) -> None:
        """Mark the first response sent (a stream's first event)."""
        if self.first_response is None:
            self.first_response = time.perf_counter()

    def succeeded(self) -> None:
        self._outcome = SUCCESS

    def failed(self, reason: str = BACKEND) -> None:
        self._outcome = reason

    def close(self) -> None:
        generation = self.generation
        kwargs = {} if self._outcome is None else {"outcome": self._outcome}
        generation.finish(self.metrics, route=self.route, first_response=self.first_response,
                          last_output=generation.last_output_at, **kwargs)
        self.log_fields["completion_tokens"] = generation.total_completion_tokens


def submit(
    model: ChatModel,
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
    """Validate the sampling settings, encode the prompt and start the generation.

    Errors raise :class:`TritonError`; a request the engine refuses (queue full, too large,
    stopping) is also counted as a failed inference.
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
    params = sampling.generation_params(raw, source)
    tokens = model.prompts.completion(inputs.text)
    try:
        generation = generate(model, [tokens], params, config, request_id=request_id,
                              prompt_param="text_input", received=received)
    except RequestError as exc:
        if exc.code in ("queue_full", "request_too_large", "model_not_ready"):
            metrics.observe_inference(
                model.name,
                InferenceTiming.from_marks(received=received, finished=time.perf_counter()),
                outcome=_REASONS.get(exc.code or "", OTHER),
            )
        raise from_request_error(exc, source) from None
    return Inference(metrics, model, generation, inputs.text, prepend, route=route,
                     log_fields=log_fields)

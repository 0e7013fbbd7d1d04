"""From validated OpenAI parameters to engine requests, and the engine's outputs back.

Shared by chat and text completions: picking the model, building the prompt tokens, resolving
``max_tokens`` against the model's limits and context, submitting to the engine, and merging the
outputs of several prompts into one stream of ``(index, output)`` pairs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from triton_mlx.config import ServerConfig
from triton_mlx.engine.engine import GenerationStream
from triton_mlx.engine.types import (
    EngineNotRunningError,
    GenerationOutput,
    GenerationRequest,
    QueueFullError,
    RequestTooLargeError,
    SamplingParams,
)
from triton_mlx.openai.errors import OpenAIError, invalid
from triton_mlx.openai.validation import GenerationParams
from triton_mlx.repository.repository import ModelRepository, ModelState, ServedModel

logger = logging.getLogger("triton_mlx.generation")

RETRY_AFTER_SECONDS = "1"


def resolve_model(
    repository: ModelRepository, name: str, kind: str | None = "chat"
) -> ServedModel:
    """The ready model called ``name``: 404 if there is none, 503 if it is not ready, 400 if
    it is not of ``kind`` ("chat", "embedding", or None for any)."""
    entry = repository.get(name)
    if entry is None:
        raise OpenAIError(
            404, f"the model {name!r} does not exist", param="model", code="model_not_found"
        )
    if entry.state is not ModelState.READY or entry.model is None:
        detail = f": {entry.reason}" if entry.reason else ""
        raise OpenAIError(
            503, f"the model {name!r} is not ready ({entry.state}){detail}",
            param="model", code="model_not_ready",
        )
    if kind is not None and entry.model.kind != kind:
        route = "/v1/embeddings" if entry.model.kind == "embedding" else "/v1/chat/completions"
        raise OpenAIError(
            400, f"the model {name!r} is a model of kind {entry.model.kind!r}, not {kind!r}; "
            f"use {route}", param="model", code="wrong_model_kind",
        )
    return entry.model


def check_prompt_tokens(model: ServedModel, tokens: list[int], param: str) -> None:
    if not tokens:
        raise invalid("the prompt is empty after tokenization", param)
    bad = next((t for t in tokens if t >= model.vocab_size), None)
    if bad is not None:
        raise invalid(
            f"token id {bad} is out of range for a vocabulary of {model.vocab_size}", param
        )


def resolve_max_tokens(
    model: ServedModel, params: GenerationParams, prompt_length: int, config: ServerConfig
) -> int:
    """The number of tokens to generate, or a 400 that says which limit is in the way.

    An explicit request beyond the model's ``max_tokens`` or the context is refused, as OpenAI
    does; the server default is trimmed to what fits.
    """
    limit = model.max_tokens_limit
    requested = params.max_tokens
    param = "max_tokens"
    context = model.context_length
    if context is not None and prompt_length >= context:
        raise OpenAIError(
            400,
            f"this model's maximum context length is {context} tokens, but the prompt has "
            f"{prompt_length} tokens",
            param="messages" if hasattr(params, "messages") else "prompt",
            code="context_length_exceeded",
        )
    if requested is not None:
        if limit is not None and requested > limit:
            raise invalid(f"max_tokens is {requested}, above this model's limit of {limit}", param)
        if context is not None and prompt_length + requested > context:
            raise OpenAIError(
                400,
                f"this model's maximum context length is {context} tokens; you asked for "
                f"{prompt_length + requested} ({prompt_length} in the prompt, {requested} to "
                f"generate)",
                param=param, code="context_length_exceeded",
            )
        return requested
    default = config.default_max_tokens
    if limit is not None:
        default = min(default, limit)
    if context is not None:
        default = min(default, context - prompt_length)
    return default


def sampling_params(model: ServedModel, params: GenerationParams) -> SamplingParams:
    bad = next((t for t in params.logit_bias if t >= model.vocab_size), None)
    if bad is not None:
        raise invalid(
            f"logit_bias token id {bad} is out of range for a vocabulary of {model.vocab_size}",
            "logit_bias",
        )
    temperature = params.temperature
    if temperature is None:
        temperature = 1.0 if model.default_temperature is None else model.default_temperature
    if params.top_p == 0.0:  # a nucleus of probability 0 holds only the most likely token
        temperature = 0.0
    return SamplingParams(
        temperature=temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        min_p=params.min_p,
        frequency_penalty=params.frequency_penalty,
        presence_penalty=params.presence_penalty,
        repetition_penalty=params.repetition_penalty,
        seed=params.seed,
        logit_bias=params.logit_bias,
    )


@dataclass
class Generation:
    """The engine streams of one HTTP request (one per prompt) and their accounting."""

    model: ServedModel
    streams: list[GenerationStream]
    prompt_tokens: int
    choices_per_prompt: int = 1
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    completion_tokens: dict[int, int] = field(default_factory=dict)
    cached: dict[int, int] = field(default_factory=dict)
    token_gaps: list[float] = field(default_factory=list)
    """Seconds between consecutive tokens of each choice (an output that carries k held-back
    tokens counts as k gaps of a k-th of its wait each)."""
    _last_output_at: dict[int, float] = field(default_factory=dict)

    @property
    def total_completion_tokens(self) -> int:
        return sum(self.completion_tokens.values())

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens served from the prefix cache, counted once per prompt."""
        return sum(v for i, v in self.cached.items() if i % self.choices_per_prompt == 0)

    def cancel(self) -> None:
        for stream in self.streams:
            stream.cancel()

    async def outputs(self) -> AsyncIterator[tuple[int, GenerationOutput]]:
        """Every output of every stream, tagged with its prompt index, as they come."""
        if len(self.streams) == 1:
            async for output in self.streams[0]:
                yield self._seen(0, output)
            return
        merged: asyncio.Queue = asyncio.Queue()

        async def pump(index: int, stream: GenerationStream) -> None:
            try:
                async for output in stream:
                    merged.put_nowait((index, output))
            except Exception as exc:  # handed to the consumer, which raises it
                merged.put_nowait((index, exc))
            finally:
                merged.put_nowait((index, None))

        tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(self.streams)]
        try:
            remaining = len(tasks)
            while remaining:
                index, item = await merged.get()
                if item is None:
                    remaining -= 1
                elif isinstance(item, Exception):
                    raise item
                else:
                    yield self._seen(index, item)
        finally:
            for task in tasks:
                task.cancel()

    def _seen(self, index: int, output: GenerationOutput) -> tuple[int, GenerationOutput]:
        now = time.perf_counter()
        if self.first_token_at is None and output.completion_tokens:
            self.first_token_at = now
        new_tokens = output.completion_tokens - self.completion_tokens.get(index, 0)
        if new_tokens > 0:
            last = self._last_output_at.get(index)
            if last is not None:
                self.token_gaps.extend([(now - last) / new_tokens] * new_tokens)
            self._last_output_at[index] = now
        self.completion_tokens[index] = output.completion_tokens
        self.cached[index] = output.cached_tokens
        return index, output


def submit(
    model: ServedModel,
    prompts: list[list[int]],
    max_tokens: list[int],
    sampling: SamplingParams,
    params: GenerationParams,
    request_id: str,
) -> Generation:
    """Submit every prompt (``n`` choices each) or none: a full queue cancels those already
    queued and 429s; a request whose KV cache could never fit is a 400."""
    if params.n > model.engine.slots:
        raise invalid(
            f"n is {params.n}, above this model's {model.engine.slots} batch slots", "n"
        )
    if logger.isEnabledFor(logging.DEBUG):  # prompts are logged at DEBUG only, never above
        for tokens in prompts:
            logger.debug("prompt for model %s: %r", model.name,
                         model.engine.tokenizer.decode(tokens))
    streams: list[GenerationStream] = []
    try:
        for tokens, limit in zip(prompts, max_tokens, strict=True):
            request = GenerationRequest(
                prompt_tokens=tokens, max_tokens=limit, sampling=sampling,
                stop=tuple(params.stop), request_id=request_id, logprobs=params.logprobs,
            )
            streams.extend(model.engine.submit(request, params.n))
    except QueueFullError as exc:
        for stream in streams:
            stream.cancel()
        raise OpenAIError(
            429, str(exc), code="queue_full", headers=[("Retry-After", RETRY_AFTER_SECONDS)]
        ) from None
    except RequestTooLargeError as exc:
        for stream in streams:
            stream.cancel()
        raise OpenAIError(400, str(exc), param="max_tokens", code="request_too_large") from None
    except EngineNotRunningError as exc:
        for stream in streams:
            stream.cancel()
        raise OpenAIError(503, str(exc), code="model_not_ready") from None
    return Generation(model=model, streams=streams, prompt_tokens=sum(map(len, prompts)),
                      choices_per_prompt=params.n)

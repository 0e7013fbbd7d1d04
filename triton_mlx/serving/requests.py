"""From validated parameters and prompt tokens to a running :class:`Generation`.

Everything a front-end needs between "the request is well-formed" and "tokens are coming":
the model's limits (vocabulary, context, ``max_tokens``), its defaults (temperature), and
admission by the engine (queue, KV memory), each refused with a :class:`RequestError` that
names the parameter at fault.
"""

from __future__ import annotations

import logging
import time

from triton_mlx.config import ServerConfig
from triton_mlx.engine.stream import GenerationStream
from triton_mlx.engine.types import (
    EngineNotRunningError,
    GenerationRequest,
    QueueFullError,
    RequestTooLargeError,
    SamplingParams,
)
from triton_mlx.repository.served import ChatModel
from triton_mlx.serving.errors import RequestError, invalid, not_ready, queue_full
from triton_mlx.serving.generation import Generation
from triton_mlx.serving.parameters import GenerationParams

logger = logging.getLogger("triton_mlx.generation")


def generate(
    model: ChatModel,
    prompts: list[list[int]],
    params: GenerationParams,
    config: ServerConfig,
    *,
    request_id: str,
    prompt_param: str,
    received: float | None = None,
) -> Generation:
    """Check every prompt against the model, then submit all of them (``params.n`` choices
    each) or none. ``prompt_param`` names the prompt in errors ("messages", "prompt", ...)."""
    for tokens in prompts:
        check_prompt_tokens(model, tokens, prompt_param)
    max_tokens = [resolve_max_tokens(model, params, len(p), config, prompt_param)
                  for p in prompts]
    generation = submit(model, prompts, max_tokens, sampling_params(model, params), params,
                        request_id)
    if received is not None:
        generation.received = received
    return generation


def check_prompt_tokens(model: ChatModel, tokens: list[int], param: str) -> None:
    if not tokens:
        raise invalid("the prompt is empty after tokenization", param)
    bad = next((t for t in tokens if t >= model.vocab_size), None)
    if bad is not None:
        raise invalid(
            f"token id {bad} is out of range for a vocabulary of {model.vocab_size}", param
        )


def resolve_max_tokens(
    model: ChatModel,
    params: GenerationParams,
    prompt_length: int,
    config: ServerConfig,
    prompt_param: str = "prompt",
) -> int:
    """The number of tokens to generate, or a 400 that says which limit is in the way.

    An explicit request beyond the model's ``max_tokens`` or the context is refused, as OpenAI
    does; the server default is trimmed to what fits. ``min_tokens`` must fit in the result.
    """
    limit = model.max_tokens_limit
    requested = params.max_tokens
    context = model.context_length
    if context is not None and prompt_length >= context:
        raise RequestError(
            400,
            f"this model's maximum context length is {context} tokens, but the prompt has "
            f"{prompt_length} tokens",
            param=prompt_param, code="context_length_exceeded",
        )
    if requested is not None:
        if limit is not None and requested > limit:
            raise invalid(f"max_tokens is {requested}, above this model's limit of {limit}",
                          "max_tokens")
        if context is not None and prompt_length + requested > context:
            raise RequestError(
                400,
                f"this model's maximum context length is {context} tokens; you asked for "
                f"{prompt_length + requested} ({prompt_length} in the prompt, {requested} to "
                f"generate)",
                param="max_tokens", code="context_length_exceeded",
            )
        return requested
    default = config.default_max_tokens
    if limit is not None:
        default = min(default, limit)
    if context is not None:
        default = min(default, context - prompt_length)
    if params.min_tokens > default:
        raise invalid(f"min_tokens is {params.min_tokens}, above the {default} tokens this "
                      f"request may generate; send max_tokens", "min_tokens")
    return default


def sampling_params(model: ChatModel, params: GenerationParams) -> SamplingParams:
    """The engine's sampling settings: the model's defaults filled in, token ids checked."""
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


def submit(
    model: ChatModel,
    prompts: list[list[int]],
    max_tokens: list[int],
    sampling: SamplingParams,
    params: GenerationParams,
    request_id: str,
) -> Generation:
    """Submit every prompt (``n`` choices each) or none: a full queue cancels those already
    queued and is a 429; a request whose KV cache could never fit is a 400."""
    engine = model.engine
    if params.n > engine.slots:
        raise invalid(f"n is {params.n}, above this model's {engine.slots} batch slots", "n")
    if logger.isEnabledFor(logging.DEBUG):  # prompts are logged at DEBUG only, never above
        for tokens in prompts:
            logger.debug("prompt for model %s: %r", model.name, model.prompts.decode(tokens))
    started = time.perf_counter()
    streams: list[GenerationStream] = []
    try:
        for tokens, limit in zip(prompts, max_tokens, strict=True):
            request = GenerationRequest(
                prompt_tokens=tokens, max_tokens=limit, sampling=sampling,
                stop=tuple(params.stop), request_id=request_id, logprobs=params.logprobs,
                ignore_eos=params.ignore_eos, min_tokens=params.min_tokens,
                grammar=params.grammar, skip_special_tokens=not params.keep_special_tokens,
            )
            streams.extend(engine.submit(request, params.n))
    except (QueueFullError, RequestTooLargeError, EngineNotRunningError) as exc:
        for stream in streams:
            stream.cancel()
        if isinstance(exc, QueueFullError):
            raise queue_full(str(exc)) from None
        if isinstance(exc, RequestTooLargeError):
            raise RequestError(400, str(exc), param="max_tokens",
                               code="request_too_large") from None
        raise not_ready(str(exc)) from None
    return Generation(model_name=model.name, streams=streams,
                      prompt_tokens=sum(map(len, prompts)), choices_per_prompt=params.n,
                      received=started, started=started)

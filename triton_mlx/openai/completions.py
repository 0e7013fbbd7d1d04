"""``/v1/chat/completions`` and ``/v1/completions``: OpenAI's shapes over the serving layer.

Each handler validates (``validation.py``), renders or encodes the prompt, starts a generation
(``serving.requests.generate``) and shapes what comes back: one JSON body, or server-sent
events (a role chunk or the echoed prompt, text chunks, a finish chunk per choice, the usage
chunk when asked for, then ``[DONE]``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence

from triton_mlx.config import ServerConfig
from triton_mlx.engine.types import TokenLogprob
from triton_mlx.http import Request, Response, StreamingResponse, json_response, sse_event
from triton_mlx.observability.inference_stats import BACKEND, CANCELED, SUCCESS
from triton_mlx.observability.server_metrics import ServerMetrics
from triton_mlx.openai.body import json_body
from triton_mlx.openai.errors import error_event_data
from triton_mlx.openai.responses import (
    CompletionShape,
    chat_logprobs,
    completion_logprobs,
    usage,
)
from triton_mlx.openai.validation import ChatParams, CompletionParams, parse_chat, parse_completion
from triton_mlx.repository.repository import ModelRepository
from triton_mlx.repository.served import ChatModel
from triton_mlx.serving.errors import RequestError
from triton_mlx.serving.generation import ChoiceDelta, Generation
from triton_mlx.serving.models import find_chat_model
from triton_mlx.serving.prompts import PromptError
from triton_mlx.serving.requests import generate


class CompletionsHandler:
    """Chat and text completions for the OpenAI port."""

    def __init__(
        self, repository: ModelRepository, config: ServerConfig, metrics: ServerMetrics
    ) -> None:
        self.repository = repository
        self.config = config
        self.metrics = metrics

    async def chat(self, request: Request) -> Response | StreamingResponse:
        params = parse_chat(json_body(request))
        model = find_chat_model(self.repository, params.model)
        try:
            tokens = model.prompts.chat(params.messages)
        except PromptError as exc:
            raise RequestError(400, str(exc), param="messages") from None
        return await self._respond(request, params, model, [tokens], chat=True)

    async def completions(self, request: Request) -> Response | StreamingResponse:
        params = parse_completion(json_body(request))
        model = find_chat_model(self.repository, params.model)
        prompts = [
            p if isinstance(p, list) else model.prompts.completion(p) for p in params.prompts
        ]
        return await self._respond(request, params, model, prompts, chat=False)

    async def _respond(
        self,
        request: Request,
        params: ChatParams | CompletionParams,
        model: ChatModel,
        prompts: list[list[int]],
        *,
        chat: bool,
    ) -> Response | StreamingResponse:
        generation = generate(
            model, prompts, params.generation, self.config, request_id=request.request_id,
            prompt_param="messages" if chat else "prompt",
        )
        request.log_fields.update(model=model.name, prompt_tokens=generation.prompt_tokens)
        shape = CompletionShape(chat=chat, model=model.name)
        echo = isinstance(params, CompletionParams) and params.echo
        choices = _Choices(model, params.generation.n, params.generation.logprobs is not None,
                           [model.prompts.decode(p) for p in prompts] if echo else [], chat,
                           count=len(prompts) * params.generation.n)
        route = "chat" if chat else "completions"
        if params.stream:
            return StreamingResponse(
                self._stream(request, generation, shape, params.include_usage, choices, route)
            )
        outcome = CANCELED
        try:
            async for delta in generation.deltas():
                choices.add(delta)
            outcome = SUCCESS
        except RequestError:
            outcome = BACKEND
            raise
        finally:  # also when the client left: frees the slots
            generation.finish(self.metrics, route=route, outcome=outcome)
            request.log_fields["completion_tokens"] = generation.total_completion_tokens
        body = shape.body(choices.texts(), choices.finish_reasons, usage(generation.usage()),
                          choices.logprobs())
        return json_response(body)

    async def _stream(
        self,
        request: Request,
        generation: Generation,
        shape: CompletionShape,
        with_usage: bool,
        choices: _Choices,
        route: str,
    ) -> AsyncIterator[bytes]:
        """An engine failure after the stream has started becomes an in-band error event."""
        outcome = CANCELED
        try:
            for index in range(len(generation.streams)):
                if shape.chat:
                    yield _event(shape.chunk(index, "", None, role=True,
                                             with_usage_field=with_usage))
                elif choices.echo_text(index):
                    yield _event(shape.chunk(index, choices.echo_text(index), None,
                                             with_usage_field=with_usage))
            async for delta in generation.deltas():
                index = delta.index
                if delta.text or delta.logprobs:
                    yield _event(shape.chunk(index, delta.text, None,
                                             with_usage_field=with_usage,
                                             logprobs=choices.shape(index, delta.logprobs)))
                if delta.finish_reason:
                    yield _event(shape.chunk(index, None if shape.chat else "",
                                             delta.finish_reason, with_usage_field=with_usage))
            if with_usage:
                yield _event(shape.usage_chunk(usage(generation.usage())))
            outcome = SUCCESS
        except RequestError as exc:
            outcome = BACKEND
            yield sse_event(error_event_data(exc))
        finally:
            generation.finish(self.metrics, route=route, outcome=outcome)
            request.log_fields["completion_tokens"] = generation.total_completion_tokens
        yield sse_event("[DONE]")


class _Choices:
    """Collects each choice's text, finish reason and logprobs, and the echoed prompts."""

    def __init__(
        self, model: ChatModel, n: int, want_logprobs: bool, echo: list[str], chat: bool,
        count: int,
    ) -> None:
        self._token_bytes = model.prompts.token_bytes
        self._chat = chat
        self._n = n
        self._want_logprobs = want_logprobs
        self._echo = echo
        self._texts: list[list[str]] = [[] for _ in range(count)]
        self._entries: list[list[TokenLogprob]] = [[] for _ in range(count)]
        self._offsets = [len(self.echo_text(i)) for i in range(count)]
        self.finish_reasons: list[str | None] = [None] * count

    def echo_text(self, index: int) -> str:
        return self._echo[index // self._n] if self._echo else ""

    def add(self, delta: ChoiceDelta) -> None:
        self._texts[delta.index].append(delta.text)
        self._entries[delta.index].extend(delta.logprobs)
        self.finish_reasons[delta.index] = delta.finish_reason or self.finish_reasons[delta.index]

    def texts(self) -> list[str]:
        return [self.echo_text(i) + "".join(t) for i, t in enumerate(self._texts)]

    def logprobs(self) -> list[dict | None]:
        return [self.shape(i, entries) for i, entries in enumerate(self._entries)]

    def shape(self, index: int, entries: Sequence[TokenLogprob]) -> dict | None:
        """OpenAI's logprobs object for ``entries`` of choice ``index`` (None if not asked)."""
        if not self._want_logprobs:
            return None
        if self._chat:
            return chat_logprobs(entries, self._token_bytes)
        shaped = completion_logprobs(entries, self._token_bytes, self._offsets[index])
        self._offsets[index] += sum(len(t) for t in shaped["tokens"])
        return shaped


def _event(chunk: dict) -> bytes:
    return sse_event(json.dumps(chunk, separators=(",", ":"), ensure_ascii=False))

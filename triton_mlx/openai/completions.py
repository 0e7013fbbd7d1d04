"""``/v1/chat/completions`` and ``/v1/completions``: OpenAI's shapes over the serving layer.

Each handler validates (``validation.py``), renders or encodes the prompt, starts a generation
(``serving.requests.generate``) and shapes what comes back: one JSON body, or server-sent
events (a role chunk or the echoed prompt, text chunks, a finish chunk per choice, the usage
chunk when asked for, then ``[DONE]``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from triton_mlx.config import ServerConfig
from triton_mlx.engine.types import TokenLogprob
from triton_mlx.http import Request, Response, StreamingResponse, json_response, sse_event, sse_json
from triton_mlx.observability.inference_stats import BACKEND, CANCELED, SUCCESS
from triton_mlx.observability.server_metrics import ServerMetrics
from triton_mlx.openai.errors import error_event_data
from triton_mlx.openai.responses import (
    CompletionShape,
    call_fields,
    chat_logprobs,
    chat_message,
    completion_logprobs,
    reasoning_fields,
    usage,
)
from triton_mlx.openai.validation import ChatParams, CompletionParams, parse_chat, parse_completion
from triton_mlx.repository.repository import ModelRepository
from triton_mlx.repository.served import ChatModel
from triton_mlx.serving.body import json_body
from triton_mlx.serving.chat import ChatDelta, ChatPlan, chat_deltas, plan_chat
from triton_mlx.serving.errors import RequestError
from triton_mlx.serving.generation import ChoiceDelta, Generation
from triton_mlx.serving.models import find_chat_model
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
        plan = plan_chat(model, params.messages, tools=params.tools,
                         text_grammar=params.generation.grammar,
                         template_kwargs=params.template_kwargs)
        params.generation.grammar = plan.grammar
        params.generation.keep_special_tokens = plan.keep_special_tokens
        return await self._respond(request, params, model, [plan.tokens], chat=True, plan=plan)

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
        plan: ChatPlan | None = None,
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
                           count=len(prompts) * params.generation.n, plan=plan)
        route = "chat" if chat else "completions"
        if params.stream:
            return StreamingResponse(
                self._stream(request, generation, shape, params.include_usage, choices, route)
            )
        outcome = CANCELED
        try:
            async for delta in choices.read(generation):
                choices.add(delta)
            outcome = SUCCESS
        except RequestError:
            outcome = BACKEND
            raise
        finally:  # also when the client left: frees the slots
            generation.finish(self.metrics, route=route, outcome=outcome)
            request.log_fields["completion_tokens"] = generation.total_completion_tokens
        body = shape.body(choices.texts(), choices.finish_reasons, usage(generation.usage()),
                          choices.logprobs(), choices.messages() if chat else None)
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
            async for delta in choices.read(generation):
                index = delta.index
                fields = choices.fields(delta)
                if delta.text or delta.logprobs or fields:
                    yield _event(shape.chunk(index, delta.text if delta.text or not fields
                                             else None, None, with_usage_field=with_usage,
                                             logprobs=choices.shape(index, delta.logprobs),
                                             fields=fields))
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
    """Collects each choice's text, finish reason and logprobs, and the echoed prompts; a
    chat's choices are read by the plan's readers (reasoning and tool calls apart)."""

    def __init__(
        self, model: ChatModel, n: int, want_logprobs: bool, echo: list[str], chat: bool,
        count: int, plan: ChatPlan | None = None,
    ) -> None:
        self._plan = plan
        self._readers = [plan.reader() for _ in range(count)] if plan is not None else []
        self._pending: dict[int, ChatDelta] = {}
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

    async def read(self, generation: Generation) -> AsyncIterator[ChoiceDelta]:
        """The generation's deltas, a chat's with its content only (``fields`` has the rest)."""
        if not self._readers:
            async for delta in generation.deltas():
                yield delta
            return
        async for chat_delta in chat_deltas(generation, self._readers):
            self._pending[chat_delta.index] = chat_delta
            yield ChoiceDelta(chat_delta.index, chat_delta.content, chat_delta.finish_reason,
                              chat_delta.logprobs)

    def fields(self, delta: ChoiceDelta) -> dict:
        """A chat delta's reasoning and tool-call fields."""
        chat_delta = self._pending.pop(delta.index, None)
        if chat_delta is None:
            return {}
        return {**reasoning_fields(chat_delta.reasoning), **call_fields(chat_delta.calls)}

    def messages(self) -> list[dict]:
        """Each chat choice's assistant message."""
        reasoning_model = self._plan is not None and self._plan.reasoning is not None
        return [chat_message("".join(self._texts[i]),
                             "".join(r.reasoning) if reasoning_model else None, r.calls)
                for i, r in enumerate(self._readers)]

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
    return sse_json(chunk)

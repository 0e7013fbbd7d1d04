"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens`` over the serving layer.

A Messages request is the chat route's path with Anthropic's shapes: validate
(``request.py``), find the model, render the chat with its tools and grammar
(``serving.chat.plan_chat``), submit (``serving.requests.generate``), then read the output as
content blocks (``shaping.py``). Limits, queueing (a full queue: ``529 overloaded_error``),
metrics (route label ``messages``), the access log, disconnect cancellation and SIGTERM
draining are the chat route's: ``Generation.finish`` runs in a ``finally``, also when the
client leaves.

A stream is Anthropic's events in order: ``message_start``, a ``ping``, each block's
``content_block_start`` / ``content_block_delta`` ... / ``content_block_stop``,
``message_delta`` (stop reason, usage), ``message_stop``; and a ``ping`` whenever
:attr:`MessagesHandler.ping_interval` seconds pass without output (a long prefill or a full
batch), so proxies and clients keep the connection. A failure after the stream started is an
in-band ``error`` event, then the stream ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from triton_mlx.anthropic.errors import error_event_data
from triton_mlx.anthropic.request import MessagesParams, parse_request, template_kwargs
from triton_mlx.anthropic.shaping import Blocks, message, message_delta, message_id
from triton_mlx.config import ServerConfig
from triton_mlx.http import Request, Response, StreamingResponse, json_response, sse_event, sse_json
from triton_mlx.observability.inference_stats import BACKEND, CANCELED, SUCCESS
from triton_mlx.observability.server_metrics import ServerMetrics
from triton_mlx.repository.repository import ModelRepository
from triton_mlx.repository.served import ChatModel
from triton_mlx.serving.body import json_body
from triton_mlx.serving.chat import ChatDelta, ChatPlan, chat_deltas, plan_chat
from triton_mlx.serving.errors import RequestError
from triton_mlx.serving.generation import Generation, Usage
from triton_mlx.serving.models import find_chat_model
from triton_mlx.serving.requests import generate

ROUTE = "messages"
"""The ``route`` label of this route's metrics."""
PING = {"type": "ping"}
T = TypeVar("T")


class MessagesHandler:
    """The Messages routes of the OpenAI port."""

    ping_interval: float = 10.0
    """Seconds without output after which a stream sends a ``ping``."""

    def __init__(
        self, repository: ModelRepository, config: ServerConfig, metrics: ServerMetrics
    ) -> None:
        self.repository = repository
        self.config = config
        self.metrics = metrics

    def _plan(self, request: Request, *, count_only: bool
              ) -> tuple[MessagesParams, ChatModel, ChatPlan]:
        params = parse_request(json_body(request), count_only=count_only)
        model = find_chat_model(self.repository, params.model)
        plan = plan_chat(model, params.messages, tools=params.tools,
                         text_grammar=params.generation.grammar,
                         template_kwargs=template_kwargs(model, params))
        return params, model, plan

    async def count_tokens(self, request: Request) -> Response:
        """The prompt's tokens as the model would see them: ``{"input_tokens": n}``."""
        _, model, plan = self._plan(request, count_only=True)
        request.log_fields.update(model=model.name, prompt_tokens=len(plan.tokens))
        return json_response({"input_tokens": len(plan.tokens)})

    async def messages(self, request: Request) -> Response | StreamingResponse:
        params, model, plan = self._plan(request, count_only=False)
        params.generation.grammar = plan.grammar
        params.generation.keep_special_tokens = plan.keep_special_tokens
        generation = generate(model, [plan.tokens], params.generation, self.config,
                              request_id=request.request_id, prompt_param="messages")
        request.log_fields.update(model=model.name, prompt_tokens=generation.prompt_tokens)
        answer = _Answer(message_id(), model.name, plan)
        if params.stream:
            return StreamingResponse(self._stream(request, generation, answer))
        outcome = CANCELED
        try:
            async for delta in answer.read(generation):
                answer.blocks.feed(delta)
            answer.blocks.close()
            outcome = SUCCESS
        except RequestError:
            outcome = BACKEND
            raise
        finally:  # also when the client left: frees the slot
            self._finish(request, generation, outcome)
        return json_response(message(answer.id, answer.model, answer.blocks.content,
                                     answer.finish, generation.usage()))

    async def _stream(self, request: Request, generation: Generation, answer: _Answer
                      ) -> AsyncIterator[bytes]:
        outcome = CANCELED
        try:
            start = Usage(generation.prompt_tokens, 0)
            yield _event({"type": "message_start",
                          "message": message(answer.id, answer.model, [], None, start)})
            yield _event(PING)
            async for delta in with_pings(answer.read(generation), self.ping_interval):
                if delta is None:
                    yield _event(PING)
                    continue
                for event in answer.blocks.feed(delta):
                    yield _event(event)
            for event in answer.blocks.close():
                yield _event(event)
            yield _event(message_delta(answer.finish, generation.usage()))
            yield _event({"type": "message_stop"})
            outcome = SUCCESS
        except RequestError as exc:
            outcome = BACKEND
            yield sse_event(error_event_data(exc), event="error")
        finally:
            self._finish(request, generation, outcome)

    def _finish(self, request: Request, generation: Generation, outcome: str) -> None:
        generation.finish(self.metrics, route=ROUTE, outcome=outcome)
        request.log_fields["completion_tokens"] = generation.total_completion_tokens


class _Answer:
    """One message being generated: its id, blocks, and last delta."""

    def __init__(self, id: str, model: str, plan: ChatPlan) -> None:
        self.id = id
        self.model = model
        self.reader = plan.reader()
        self.blocks = Blocks()
        self.finish: ChatDelta | None = None

    async def read(self, generation: Generation) -> AsyncIterator[ChatDelta]:
        async for delta in chat_deltas(generation, [self.reader]):
            if delta.finish_reason is not None:
                self.finish = delta
            yield delta


async def with_pings(source: AsyncIterator[T], interval: float) -> AsyncIterator[T | None]:
    """``source``'s items, and None each time ``interval`` seconds pass without one."""
    pending: asyncio.Future[T] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(source))
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield None
                continue
            finished, pending = pending, None
            try:
                item = finished.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        if pending is not None:  # the consumer left (a disconnect): stop reading the source
            pending.cancel()
            await asyncio.wait({pending})
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()


def _event(data: dict[str, Any]) -> bytes:
    return sse_json(data, event=data["type"])

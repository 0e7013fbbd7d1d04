"""The Responses routes: ``POST /v1/responses`` (a response, or its stream of events),
``GET`` and ``DELETE /v1/responses/{response_id}`` for stored ones.

A request runs as a chat on the serving layer: its input (after the stored conversation of
``previous_response_id``, and after ``instructions`` as a system turn) is planned with
``plan_chat`` and generated with ``generate``; ``generation.finish`` in a ``finally`` frees the
engine also when the client leaves, and records the ``responses`` route in the metrics.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from triton_mlx.config import ServerConfig
from triton_mlx.http import (
    Request,
    Response,
    Router,
    StreamingResponse,
    json_response,
    sse_json,
)
from triton_mlx.observability.inference_stats import BACKEND, CANCELED, SUCCESS
from triton_mlx.observability.server_metrics import ServerMetrics
from triton_mlx.repository.repository import ModelRepository
from triton_mlx.repository.served import ChatModel
from triton_mlx.responses_api.errors import error_response, stream_error
from triton_mlx.responses_api.output import OutputBuilder, new_id, response_body, usage
from triton_mlx.responses_api.request import ResponsesParams, parse_request, renamed
from triton_mlx.responses_api.store import ResponseStore, StoredResponse
from triton_mlx.serving.body import json_body
from triton_mlx.serving.chat import ChatPlan, chat_deltas, plan_chat
from triton_mlx.serving.errors import RequestError, invalid, shaped_errors
from triton_mlx.serving.generation import Generation
from triton_mlx.serving.models import find_chat_model
from triton_mlx.serving.requests import generate

PREFIX = "/v1/responses"
ROUTE = "responses"
"""The ``route`` label of this API's requests in the metrics."""


class ResponsesFrontend:
    """OpenAI's Responses API, beside the OpenAI routes on the OpenAI port."""

    key_header: str | None = None

    def __init__(self, repository: ModelRepository, config: ServerConfig,
                 metrics: ServerMetrics) -> None:
        self.repository = repository
        self.config = config
        self.metrics = metrics
        self.store = ResponseStore(config.responses_store_size)

    def owns(self, path: str) -> bool:
        return path == PREFIX or path.startswith(PREFIX + "/")

    def unauthorized(self, message: str) -> Response:
        return error_response(RequestError(401, message, code="invalid_api_key"))

    def register(self, router: Router) -> None:
        for method, pattern, handler in (
            ("POST", PREFIX, self.create),
            ("GET", PREFIX + "/{response_id}", self.retrieve),
            ("DELETE", PREFIX + "/{response_id}", self.delete),
        ):
            router.add(method, pattern, shaped_errors(handler, error_response))

    async def retrieve(self, request: Request) -> Response:
        _no_query(request)
        return json_response(self.store.get(request.path_params["response_id"]).body)

    async def delete(self, request: Request) -> Response:
        _no_query(request)
        response_id = request.path_params["response_id"]
        self.store.delete(response_id)
        return json_response({"id": response_id, "object": "response", "deleted": True})

    async def create(self, request: Request) -> Response | StreamingResponse:
        params = parse_request(json_body(request))
        history: list[dict[str, Any]] = []
        if params.previous_response_id is not None:
            history = self.store.get(params.previous_response_id,
                                     "previous_response_id").conversation
        model = find_chat_model(self.repository, params.model)
        system = [{"role": "system", "content": params.instructions}] if params.instructions \
            else []
        try:
            plan = plan_chat(model, system + history + params.input, tools=params.tools,
                             text_grammar=params.generation.grammar,
                             template_kwargs=params.template_kwargs)
        except RequestError as exc:
            raise _reasoning_param(exc) from None
        params.generation.grammar = plan.grammar
        params.generation.keep_special_tokens = plan.keep_special_tokens
        try:
            generation = generate(model, [plan.tokens], params.generation, self.config,
                                  request_id=request.request_id, prompt_param="input")
        except RequestError as exc:
            raise renamed(exc) from None
        request.log_fields.update(model=model.name, prompt_tokens=generation.prompt_tokens)
        run = _Run(self, params, model, plan, generation, history)
        if params.stream:
            return StreamingResponse(run.stream(request))
        outcome = CANCELED
        try:
            async for delta in chat_deltas(generation, [plan.reader()]):
                run.builder.feed(delta)
            outcome = SUCCESS
        except RequestError:
            outcome = BACKEND
            raise
        finally:  # also when the client left: frees the slots
            generation.finish(self.metrics, route=ROUTE, outcome=outcome)
            request.log_fields["completion_tokens"] = generation.total_completion_tokens
        return json_response(run.finished())


class _Run:
    """One response being generated: its id, its output so far, and how it ends."""

    def __init__(self, frontend: ResponsesFrontend, params: ResponsesParams, model: ChatModel,
                 plan: ChatPlan, generation: Generation, history: list[dict[str, Any]]) -> None:
        self.frontend = frontend
        self.params = params
        self.model = model
        self.plan = plan
        self.generation = generation
        self.history = history
        self.builder = OutputBuilder()
        self.id = new_id("resp")
        self.created_at = int(time.time())
        self.store = params.store and frontend.store.enabled

    def body(self, status: str, *, with_usage: bool = False,
             error: dict[str, Any] | None = None) -> dict[str, Any]:
        p = self.params
        echo = {
            "instructions": p.instructions, "max_output_tokens": p.generation.max_tokens,
            "metadata": p.metadata, "previous_response_id": p.previous_response_id,
            "reasoning": p.reasoning, "store": self.store, "temperature": p.generation.temperature,
            "text": {"format": p.text_format}, "top_p": p.generation.top_p,
            "truncation": "disabled", "background": False, "service_tier": "default", **p.echo,
        }
        counts = None
        if with_usage:
            reasoning = self.builder.reasoning
            counts = usage(self.generation.usage(),
                           self.model.prompts.count(reasoning) if reasoning else 0)
        return response_body(response_id=self.id, model=self.model.name,
                             created_at=self.created_at, status=status, echo=echo,
                             output=self.builder.items, usage_=counts, error=error)

    def finished(self) -> dict[str, Any]:
        """The final body (``incomplete`` when cut at ``max_output_tokens``), stored if asked."""
        status = "incomplete" if self.builder.finish_reason == "length" else "completed"
        body = self.body(status, with_usage=True)
        if self.store:
            conversation = self.history + self.params.input + self.builder.conversation()
            self.frontend.store.put(StoredResponse(json.loads(json.dumps(body)), conversation))
        return body

    async def stream(self, request: Request) -> AsyncIterator[bytes]:
        """The events; a failure after the start is an ``error`` event, then
        ``response.failed``. Leaving mid-stream cancels the generation (``finally``)."""
        sequence = _Sequence()
        outcome = CANCELED
        try:
            yield sequence.event({"type": "response.created",
                                  "response": self.body("in_progress")})
            yield sequence.event({"type": "response.in_progress",
                                  "response": self.body("in_progress")})
            async for delta in chat_deltas(self.generation, [self.plan.reader()]):
                for event in self.builder.feed(delta):
                    yield sequence.event(event)
            body = self.finished()
            yield sequence.event({"type": f"response.{body['status']}", "response": body})
            outcome = SUCCESS
        except RequestError as exc:
            outcome = BACKEND
            yield sequence.event(stream_error(exc))
            failed = self.body("failed", error={"code": "server_error", "message": exc.message})
            yield sequence.event({"type": "response.failed", "response": failed})
        finally:
            self.generation.finish(self.frontend.metrics, route=ROUTE, outcome=outcome)
            request.log_fields["completion_tokens"] = self.generation.total_completion_tokens


class _Sequence:
    """Numbers a stream's events from 0 and frames them as server-sent events."""

    def __init__(self) -> None:
        self.next = 0

    def event(self, event: dict[str, Any]) -> bytes:
        event = {**event, "sequence_number": self.next}
        self.next += 1
        return sse_json(event, event=event["type"])


def _reasoning_param(error: RequestError) -> RequestError:
    """The chat route's ``reasoning_effort`` is this API's ``reasoning.effort``."""
    if error.param != "reasoning_effort":
        return error
    return invalid(error.message.replace("reasoning_effort:", "reasoning.effort:", 1),
                   "reasoning.effort")


def _no_query(request: Request) -> None:
    for key in request.query:
        raise invalid(f"the query parameter {key!r} is not supported by this server", key)


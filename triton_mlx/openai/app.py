"""The OpenAI-compatible API: routes, and the handlers that translate to the engine."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator

from triton_mlx.auth import bearer_auth
from triton_mlx.config import ServerConfig
from triton_mlx.engine.types import EngineError, GenerationOutput, TokenLogprob
from triton_mlx.http import (
    BodyDecodeError,
    Request,
    Response,
    Router,
    StreamingResponse,
    json_response,
    sse_event,
    text_response,
)
from triton_mlx.observability.inference_stats import (
    BACKEND,
    CANCELED,
    SUCCESS,
    InferenceTiming,
)
from triton_mlx.observability.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from triton_mlx.observability.server_metrics import ServerMetrics
from triton_mlx.openai import generation as gen
from triton_mlx.openai import openapi
from triton_mlx.openai.embeddings import EmbeddingsHandler
from triton_mlx.openai.errors import OpenAIError, format_error
from triton_mlx.openai.responses import (
    CompletionShape,
    chat_logprobs,
    completion_logprobs,
    usage,
)
from triton_mlx.openai.validation import (
    ChatParams,
    CompletionParams,
    GenerationParams,
    parse_chat,
    parse_completion,
)
from triton_mlx.repository import control
from triton_mlx.repository.repository import (
    ModelEntry,
    ModelLoadError,
    ModelNotFound,
    ModelRepository,
    ModelState,
)
from triton_mlx.serving.prompts import PromptError

logger = logging.getLogger("triton_mlx.openai")

HEALTH_PATHS = ("/v1/health/live", "/v1/health/ready")


class OpenAIFrontend:
    """Validates OpenAI requests, hands them to the engines and shapes the answers."""

    def __init__(
        self, repository: ModelRepository, config: ServerConfig, metrics: ServerMetrics
    ) -> None:
        self.repository = repository
        self.config = config
        self.metrics = metrics
        self.embeddings = EmbeddingsHandler(repository, metrics)

    def router(self) -> Router:
        router = Router(format_error)
        if self.config.api_key:
            router.add_middleware(
                bearer_auth(
                    self.config.api_key,
                    exempt_paths=HEALTH_PATHS,
                    unauthorized=lambda message: OpenAIError(
                        401, message, code="invalid_api_key"
                    ).response(),
                )
            )
        router.add_middleware(_openai_errors)
        router.add("POST", "/v1/chat/completions", self.chat_completions)
        router.add("POST", "/v1/completions", self.completions)
        router.add("POST", "/v1/embeddings", self.embeddings.handle)
        router.add("GET", "/v1/models", self.list_models)
        router.add("POST", "/v1/models/{model_id}/load", self.load_model)
        router.add("POST", "/v1/models/{model_id}/unload", self.unload_model)
        router.add("GET", "/v1/models/{model_id:path}", self.get_model)
        router.add("GET", "/v1/health/live", self.live)
        router.add("GET", "/v1/health/ready", self.ready)
        router.add("GET", "/v1/metrics", self.metrics_text)
        router.add("GET", "/openapi.json", openapi.serve)
        return router

    # ----- generation -----

    async def chat_completions(self, request: Request) -> Response | StreamingResponse:
        params = parse_chat(_json_body(request))
        model = gen.resolve_model(self.repository, params.model)
        try:
            tokens = model.prompts.chat(params.messages)
        except PromptError as exc:
            raise OpenAIError(400, str(exc), param="messages") from None
        gen.check_prompt_tokens(model, tokens, "messages")
        return await self._generate(request, params, model, [tokens], chat=True)

    async def completions(self, request: Request) -> Response | StreamingResponse:
        params = parse_completion(_json_body(request))
        model = gen.resolve_model(self.repository, params.model)
        prompts = [
            p if isinstance(p, list) else model.prompts.completion(p) for p in params.prompts
        ]
        for tokens in prompts:
            gen.check_prompt_tokens(model, tokens, "prompt")
        return await self._generate(request, params, model, prompts, chat=False)

    async def _generate(
        self,
        request: Request,
        params: ChatParams | CompletionParams,
        model: gen.ServedModel,
        prompts: list[list[int]],
        *,
        chat: bool,
    ) -> Response | StreamingResponse:
        max_tokens = [gen.resolve_max_tokens(model, params, len(p), self.config) for p in prompts]
        sampling = gen.sampling_params(model, params)
        generation = gen.submit(model, prompts, max_tokens, sampling, params, request.request_id)
        request.log_fields.update(model=model.name, prompt_tokens=generation.prompt_tokens)
        shape = CompletionShape(chat=chat, model=model.name)
        choices = _Choices(model, params, prompts, chat)
        if params.stream:
            return StreamingResponse(self._stream(request, generation, shape, params, choices))
        outcome = CANCELED
        try:
            async for index, output in generation.outputs():
                choices.add(index, output)
            outcome = SUCCESS
        except EngineError as exc:
            outcome = BACKEND
            raise OpenAIError(500, str(exc), code="engine_error") from None
        finally:
            generation.cancel()  # no-op when finished; frees the slots if the client left
            self._record(request, generation, chat, outcome)
        body = shape.body(
            choices.texts(),
            choices.finish_reasons,
            usage(generation.prompt_tokens, generation.total_completion_tokens,
                  generation.cached_tokens),
            choices.logprobs(),
        )
        return json_response(body)

    async def _stream(
        self,
        request: Request,
        generation: gen.Generation,
        shape: CompletionShape,
        params: GenerationParams,
        choices: _Choices,
    ) -> AsyncIterator[bytes]:
        """SSE events: a role chunk (chat) or the echoed prompt (completions), text chunks,
        a finish chunk per choice, then the usage chunk if asked for, then ``[DONE]``. An
        engine failure after the stream has started becomes an in-band error event."""
        with_usage = params.include_usage
        outcome = CANCELED
        try:
            for index in range(len(generation.streams)):
                if shape.chat:
                    yield _event(shape.chunk(index, "", None, role=True,
                                             with_usage_field=with_usage))
                elif choices.echo_text(index):
                    yield _event(shape.chunk(index, choices.echo_text(index), None,
                                             with_usage_field=with_usage))
            async for index, output in generation.outputs():
                if output.text or output.logprobs:
                    yield _event(shape.chunk(index, output.text, None,
                                             with_usage_field=with_usage,
                                             logprobs=choices.chunk_logprobs(index, output)))
                if output.finish_reason:
                    yield _event(shape.chunk(index, None if shape.chat else "",
                                             output.finish_reason, with_usage_field=with_usage))
            if with_usage:
                yield _event(shape.usage_chunk(usage(
                    generation.prompt_tokens, generation.total_completion_tokens,
                    generation.cached_tokens)))
            outcome = SUCCESS
        except EngineError as exc:
            outcome = BACKEND
            yield sse_event(OpenAIError(500, str(exc), code="engine_error").sse_data())
        finally:
            generation.cancel()
            self._record(request, generation, shape.chat, outcome)
        yield sse_event("[DONE]")

    def _record(
        self, request: Request, generation: gen.Generation, chat: bool, outcome: str = SUCCESS
    ) -> None:
        now = time.perf_counter()
        completion_tokens = generation.total_completion_tokens
        request.log_fields["completion_tokens"] = completion_tokens
        first = generation.first_token_at
        self.metrics.observe_generation(
            model=generation.model.name,
            route="chat" if chat else "completions",
            duration=now - generation.started,
            first_token_after=None if first is None else first - generation.started,
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=generation.cached_tokens,
            token_gaps=generation.token_gaps,
        )
        self.metrics.observe_inference(  # Triton's statistics and nv_* metrics count us too
            generation.model.name,
            InferenceTiming.from_marks(received=generation.started, submitted=generation.started,
                                       first_output=first, finished=now),
            outcome=outcome, inferences=len(generation.streams),
        )

    # ----- models, health, metrics -----

    async def list_models(self, request: Request) -> Response:
        return json_response(
            {"object": "list", "data": [_model_card(e) for e in self.repository.entries()]}
        )

    async def get_model(self, request: Request) -> Response:
        model_id = request.path_params["model_id"]
        entry = self.repository.get(model_id)
        if entry is None:
            raise OpenAIError(404, f"the model {model_id!r} does not exist",
                              param="model", code="model_not_found")
        return json_response(_model_card(entry))

    async def load_model(self, request: Request) -> Response:
        """Explicit mode: load, or reload, a model folder; answers its model card."""
        name = self._control_name(request)
        try:
            await control.load_model(self.repository, name)
        except ModelNotFound:
            raise _no_folder(name) from None
        except ModelLoadError as exc:
            raise OpenAIError(400, f"failed to load the model {name!r}: {exc.reason}",
                              param="model", code="model_load_failed") from None
        return json_response(_model_card(self.repository.get(name)))

    async def unload_model(self, request: Request) -> Response:
        """Explicit mode: unload a model; answers its card (state UNAVAILABLE, "unloaded")."""
        name = self._control_name(request)
        try:
            await control.unload_model(self.repository, name)
        except ModelNotFound:
            raise _no_folder(name) from None
        entry = self.repository.get(name)
        return json_response(_model_card(entry) if entry else {"id": name, "object": "model"})

    def _control_name(self, request: Request) -> str:
        try:
            control.check_allowed(self.repository)
        except control.ControlNotAllowed as exc:
            raise OpenAIError(
                403, f"model load and unload need --model-control-mode explicit (it is {exc})",
                code="model_control_not_allowed",
            ) from None
        if request.body.strip() and _json_body(request) != {}:
            raise OpenAIError(400, "model load and unload take no parameters; send no body")
        return request.path_params["model_id"]

    async def live(self, request: Request) -> Response:
        return json_response({"status": "live"})

    async def ready(self, request: Request) -> Response:
        models = {e.name: str(e.state) for e in self.repository.entries()}
        if self.repository.ready:
            return json_response({"status": "ready", "models": models})
        return json_response({"status": "not ready", "models": models}, status=503)

    async def metrics_text(self, request: Request) -> Response:
        return text_response(self.metrics.render(), content_type=METRICS_CONTENT_TYPE)


async def _openai_errors(request: Request, call_next) -> Response | StreamingResponse:
    """Turn OpenAIError raised anywhere in a handler into its JSON response."""
    try:
        return await call_next(request)
    except OpenAIError as exc:
        return exc.response()


class _Choices:
    """Collects each choice's text, finish reason and logprobs, and the echoed prompts."""

    def __init__(
        self,
        model: gen.ServedModel,
        params: ChatParams | CompletionParams,
        prompts: list[list[int]],
        chat: bool,
    ) -> None:
        self._model = model
        self._chat = chat
        self._n = params.n
        self._want_logprobs = params.logprobs is not None
        count = len(prompts) * params.n
        echo = getattr(params, "echo", False)
        self._echo = [model.prompts.decode(p) for p in prompts] if echo else []
        self._texts: list[list[str]] = [[] for _ in range(count)]
        self._entries: list[list[TokenLogprob]] = [[] for _ in range(count)]
        self._offsets = [len(self.echo_text(i)) for i in range(count)]
        self.finish_reasons: list[str | None] = [None] * count

    def echo_text(self, index: int) -> str:
        return self._echo[index // self._n] if self._echo else ""

    def add(self, index: int, output: GenerationOutput) -> None:
        self._texts[index].append(output.text)
        self._entries[index].extend(output.logprobs)
        self.finish_reasons[index] = output.finish_reason or self.finish_reasons[index]

    def texts(self) -> list[str]:
        return [self.echo_text(i) + "".join(t) for i, t in enumerate(self._texts)]

    def logprobs(self) -> list[dict | None]:
        return [self._shape(i, entries) for i, entries in enumerate(self._entries)]

    def chunk_logprobs(self, index: int, output: GenerationOutput) -> dict | None:
        return self._shape(index, output.logprobs)

    def _shape(self, index: int, entries) -> dict | None:
        if not self._want_logprobs:
            return None
        token_bytes = self._model.prompts.token_bytes
        if self._chat:
            return chat_logprobs(entries, token_bytes)
        shaped = completion_logprobs(entries, token_bytes, self._offsets[index])
        self._offsets[index] += sum(len(t) for t in shaped["tokens"])
        return shaped


def _json_body(request: Request) -> object:
    # The Content-Type rule: a missing header is taken as JSON (hand-written clients often
    # omit it); a JSON media type (application/json, text/json, */*+json) is accepted whatever
    # its parameters (charset=...) and case; anything else (text/plain, the form encoding that
    # `curl -d` sends by default, application/x-ndjson...) is a 415 that names it.
    content_type = (request.headers.get("content-type") or "application/json").lower()
    subtype = content_type.split(";", 1)[0].strip().partition("/")[2]
    if subtype != "json" and not subtype.endswith("+json"):
        raise OpenAIError(
            415 if request.body else 400,
            f"unsupported Content-Type {content_type!r}: send application/json",
        )
    try:
        return request.json()
    except BodyDecodeError as exc:
        raise OpenAIError(400, f"the request body is not valid JSON: {exc}") from None


def _event(chunk: dict) -> bytes:
    return sse_event(json.dumps(chunk, separators=(",", ":"), ensure_ascii=False))


def _no_folder(name: str) -> OpenAIError:
    return OpenAIError(404, f"no model folder {name!r} in the repository",
                       param="model", code="model_not_found")


def _model_card(entry: ModelEntry) -> dict:
    card = {
        "id": entry.name,
        "object": "model",
        "created": entry.model.created if entry.model else _folder_time(entry),
        "owned_by": "triton-mlx",
        "display_name": entry.display_name,
        "state": str(entry.state),
    }
    if entry.state is ModelState.UNAVAILABLE:
        card["reason"] = entry.reason
    if entry.model is not None and entry.model.encoder is not None:
        encoder = entry.model.encoder
        card["kind"] = "embedding"
        card["dimensions"] = encoder.dimensions
        card["max_seq_length"] = encoder.max_seq_length
        card["pooling"] = encoder.pooling.mode
        card["normalized"] = encoder.pooling.normalize
        card["matryoshka"] = entry.model.matryoshka
        if encoder.max_rows is not None:
            card["max_batch_size"] = encoder.max_rows
    elif entry.model is not None:
        model = entry.model
        card["kind"] = "chat"
        card["context_length"] = model.context_length
        card["max_batch_size"] = model.engine.slots
        if model.max_tokens_limit is not None:
            card["max_tokens"] = model.max_tokens_limit
        card["chat_template"] = model.prompts.has_chat_template
        card["runtime_profile"] = model.runtime_profile and model.runtime_profile.as_dict()
        engine = model.engine
        card["embeddings"] = engine.dimensions and {
            "dimensions": engine.dimensions, "max_seq_length": engine.max_seq_length,
            "pooling": "mean", "normalized": True, "matryoshka": model.matryoshka,
        } or None
    return card


def _folder_time(entry: ModelEntry) -> int:
    try:
        return int(entry.path.stat().st_mtime)
    except OSError:  # the folder has gone since it was scanned
        return 0

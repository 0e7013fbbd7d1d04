"""NVIDIA Triton's HTTP protocol (KServe v2 and Triton's extensions): routes and handlers.

Status codes and bodies follow Triton's HTTP server: errors are ``{"error": "..."}``, health
and readiness answer 200 or 400 with empty bodies, unknown routes ``{"error": "Not Found"}``.
Chat models are served with the LLM signature of Triton's vLLM backend (``signature.py``),
embedding models with ``text_input`` -> ``embedding`` (``embedding_signature.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from importlib import metadata as package_metadata
from typing import Any

from triton_mlx.auth import bearer_auth
from triton_mlx.config import ServerConfig
from triton_mlx.http import (
    Request,
    Response,
    Router,
    StreamingResponse,
    json_response,
    sse_event,
    sse_json,
)
from triton_mlx.observability.inference_stats import BACKEND
from triton_mlx.observability.server_metrics import ServerMetrics
from triton_mlx.repository import control
from triton_mlx.repository.repository import (
    ModelEntry,
    ModelLoadError,
    ModelNotFound,
    ModelRepository,
    ModelState,
)
from triton_mlx.repository.served import ChatModel, EmbeddingModel, ServedModel
from triton_mlx.serving.errors import RequestError
from triton_mlx.triton import embedding_signature, signature, stats, tensors
from triton_mlx.triton.compression import decompress
from triton_mlx.triton.embeddings import infer_embeddings
from triton_mlx.triton.errors import (
    TritonError,
    format_error,
    internal,
    invalid_arg,
    not_found,
    unavailable,
    unsupported,
)
from triton_mlx.triton.generate_request import parse_generate
from triton_mlx.triton.inference import Inference, submit

logger = logging.getLogger("triton_mlx.triton")

HEALTH_PATHS = ("/v2/health/live", "/v2/health/ready")
SERVER_NAME = "triton-mlx"
# Only what works end to end; see README "Triton HTTP API".
EXTENSIONS = (
    "binary_tensor_data",
    "parameters",
    "statistics",
    "model_configuration",
    "model_repository",
    "generate",
)
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"


def _version() -> str:
    try:
        return package_metadata.version("triton-mlx")
    except package_metadata.PackageNotFoundError:
        return "0.0.0"


class TritonFrontend:
    """Serves the repository's models over Triton's HTTP/REST protocol."""

    def __init__(
        self, repository: ModelRepository, config: ServerConfig, metrics: ServerMetrics
    ) -> None:
        self.repository = repository
        self.config = config
        self.metrics = metrics
        self.started = False
        """Set by the server once the repository's first load is done (readiness)."""

    def router(self) -> Router:
        router = Router(format_error)
        if self.config.api_key:
            router.add_middleware(
                bearer_auth(
                    self.config.api_key,
                    exempt_paths=HEALTH_PATHS,
                    unauthorized=lambda message: TritonError(401, message).response(),
                )
            )
        router.add_middleware(_triton_errors)
        router.add("GET", "/v2", self.server_metadata)
        router.add("GET", "/v2/health/live", self.live)
        router.add("GET", "/v2/health/ready", self.ready)
        router.add("GET", "/v2/models/stats", self.all_stats)
        router.add("POST", "/v2/repository/index", self.repository_index)
        router.add("POST", "/v2/repository/models/{model}/load", self.load)
        router.add("POST", "/v2/repository/models/{model}/unload", self.unload)
        for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            router.add("GET", base, self.model_metadata)
            router.add("GET", base + "/ready", self.model_ready)
            router.add("GET", base + "/config", self.model_config)
            router.add("GET", base + "/stats", self.model_stats)
            router.add("POST", base + "/infer", self.infer)
            router.add("POST", base + "/generate", self.generate)
            router.add("POST", base + "/generate_stream", self.generate_stream)
        return router

    # ----- server -----

    async def server_metadata(self, request: Request) -> Response:
        return json_response(
            {"name": SERVER_NAME, "version": _version(), "extensions": list(EXTENSIONS)}
        )

    async def live(self, request: Request) -> Response:
        return Response(200)

    async def ready(self, request: Request) -> Response:
        """Triton's strict readiness: started, and every model that should be loaded READY
        (in explicit mode, folders left unloaded do not count)."""
        ready = self.started and self.repository.strictly_ready
        return Response(200 if ready else 400)

    # ----- models -----

    async def model_metadata(self, request: Request) -> Response:
        model = self._ready_model(request, kind=None)
        if isinstance(model, EmbeddingModel):
            return json_response(embedding_signature.embedding_metadata(
                model.name, model.encoder.dimensions))
        return json_response(signature.metadata(model.name))

    async def model_config(self, request: Request) -> Response:
        model = self._ready_model(request, kind=None)
        if isinstance(model, EmbeddingModel):
            return json_response(embedding_signature.embedding_config(
                model.name, model.encoder.dimensions))
        return json_response(signature.config(model.name))

    async def model_ready(self, request: Request) -> Response:
        name, version = _model_path(request)
        entry = self.repository.get(name)
        ready = (
            entry is not None
            and entry.state is ModelState.READY
            and entry.model is not None
            and version in (None, signature.MODEL_VERSION)
        )
        if not ready:
            raise invalid_arg("Model version not ready")
        return Response(200)

    async def model_stats(self, request: Request) -> Response:
        name, version = _model_path(request)
        entry = self.repository.get(name)
        if entry is None or entry.state is not ModelState.READY:
            raise invalid_arg(f"requested model '{name}' is not available")
        if version not in (None, signature.MODEL_VERSION):
            raise invalid_arg(f"requested model version is not available for model '{name}'")
        stat = stats.model_stats(self.metrics.inference_stats, name)
        return json_response({"model_stats": [stat]})

    async def all_stats(self, request: Request) -> Response:
        ready = [e.name for e in self.repository.entries() if e.state is ModelState.READY]
        return json_response(
            {"model_stats": [stats.model_stats(self.metrics.inference_stats, n) for n in ready]}
        )

    # ----- repository -----

    async def repository_index(self, request: Request) -> Response:
        ready_only = False
        if request.body:
            document = tensors.parse_json(request.body)
            if not isinstance(document, dict):
                raise invalid_arg("the repository index request must be a JSON object")
            value = document.get("ready", False)
            if not isinstance(value, bool):
                raise invalid_arg("Unable to parse 'ready': expected a boolean")
            ready_only = value
        if self.config.model_control_mode == "explicit":
            self.repository.refresh_unloaded()
        entries = [
            stats.index_entry(e)
            for e in self.repository.entries()
            if not ready_only or e.state is ModelState.READY
        ]
        return json_response(entries)

    async def load(self, request: Request) -> Response:
        """Load, or reload, a model folder (explicit mode); 200 with an empty body."""
        name = self._model_control(request, allowed=())
        try:
            await control.load_model(self.repository, name)
        except ModelNotFound:
            raise not_found(
                f"failed to load '{name}', failed to poll from model repository"
            ) from None
        except ModelLoadError as exc:
            raise invalid_arg(
                f"load failed for model '{name}': version {signature.MODEL_VERSION} is at "
                f"UNAVAILABLE state: {exc.reason};"
            ) from None
        return Response(200)

    async def unload(self, request: Request) -> Response:
        """Unload a model (explicit mode); 200 with an empty body, also if it was not loaded.

        ``unload_dependents`` is accepted: our models have no dependents (no ensembles)."""
        name = self._model_control(request, allowed=("unload_dependents",))
        try:
            await control.unload_model(self.repository, name)
        except ModelNotFound:
            raise not_found(
                f"failed to unload '{name}', failed to poll from model repository"
            ) from None
        return Response(200)

    def _model_control(self, request: Request, allowed: tuple[str, ...]) -> str:
        """Check the mode and the body; parameters we do not implement (e.g. a config or file
        override on load) are refused, never ignored."""
        if request.body:
            document = tensors.parse_json(request.body)
            if not isinstance(document, dict):
                raise invalid_arg("the model control request must be a JSON object")
            parameters = document.get("parameters") or {}
            if not isinstance(parameters, dict):
                raise invalid_arg("'parameters' must be a JSON object")
            unsupported = sorted(set(parameters) - set(allowed))
            if unsupported:
                raise invalid_arg(
                    f"unsupported model control parameters: {', '.join(unsupported)}"
                )
        try:
            control.check_allowed(self.repository)
        except control.ControlNotAllowed:
            raise unavailable(
                "explicit model load / unload is not allowed if polling is enabled"
            ) from None
        return request.path_params["model"]

    # ----- inference -----

    async def infer(self, request: Request) -> Response:
        received = time.perf_counter()
        model = self._ready_model(request, kind=None)
        body = decompress(
            request.body, request.headers.get("content-encoding"), self.config.max_request_bytes
        )
        json_length = tensors.header_length(
            request.headers.get("inference-header-content-length"), len(body)
        )
        if json_length == 0:
            raise invalid_arg(
                f"Raw request must only have 1 input (found 1) to be deduced but got "
                f"{len(signature.INPUTS)} inputs in '{model.name}' model configuration"
            )
        infer = tensors.decode_request(body, json_length, model.name)
        if isinstance(model, EmbeddingModel):
            return await infer_embeddings(request, model, infer, self.metrics, received)
        inputs = signature.check_inputs(model.name, infer.inputs, infer.id)
        signature.check_outputs(model.name, infer.outputs)
        if inputs.stream:
            raise unsupported(
                "HTTP end point doesn't support models with decoupled transaction policy "
                "when 'stream' is true; use /generate_stream or set 'stream' to false"
            )
        inference = self._submit(request, model, inputs, infer.parameters, received)
        text = await _whole_text(inference)
        output = tensors.Tensor(signature.TEXT_OUTPUT, "BYTES", [1], [text.encode("utf-8")])
        payload, header = tensors.encode_response(
            model_name=model.name,
            model_version=signature.MODEL_VERSION,
            request_id=infer.id,
            outputs=[(output, _binary_outputs(infer))],
        )
        if header is None:
            return Response(200, payload, content_type="application/json")
        return Response(
            200, payload, headers=[("Inference-Header-Content-Length", str(header))],
            content_type="application/octet-stream",
        )

    async def generate(self, request: Request) -> Response:
        received = time.perf_counter()
        model, parsed, inputs = self._generate_inputs(request)
        if inputs.stream:
            raise invalid_arg(
                "generate expects model to produce exactly 1 response, use generate stream for "
                "model that generates various number of responses"
            )
        inference = self._submit(request, model, inputs, parsed.parameters, received)
        text = await _whole_text(inference)
        return json_response(_generate_body(model, parsed.id, text))

    async def generate_stream(self, request: Request) -> StreamingResponse:
        received = time.perf_counter()
        model, parsed, inputs = self._generate_inputs(request)
        inference = self._submit(request, model, inputs, parsed.parameters, received)
        return StreamingResponse(
            _events(inference, parsed.id, inputs.stream), content_type=SSE_CONTENT_TYPE
        )

    def _generate_inputs(self, request: Request):
        model = self._chat_model(request)
        if request.headers.get("content-encoding", "identity").strip().lower() != "identity":
            raise invalid_arg("Unsupported content-encoding, only 'identity' is supported.")
        parsed = parse_generate(tensors.parse_json(request.body))
        inputs = signature.check_inputs(model.name, parsed.inputs, parsed.id)
        return model, parsed, inputs

    def _submit(
        self, request: Request, model: ChatModel, inputs: signature.LLMInputs,
        parameters: dict[str, Any], received: float,
    ) -> Inference:
        request.log_fields["model"] = model.name
        inference = submit(
            model, inputs, parameters, config=self.config, metrics=self.metrics,
            request_id=request.request_id, received=received,
            route=request.path.rsplit("/", 1)[-1], log_fields=request.log_fields,
        )
        request.log_fields["prompt_tokens"] = inference.generation.prompt_tokens
        return inference

    # ----- lookup -----

    def _chat_model(self, request: Request) -> ChatModel:
        model = self._ready_model(request, kind="chat")
        assert isinstance(model, ChatModel)
        return model

    def _ready_model(self, request: Request, kind: str | None) -> ServedModel:
        """The model the path names, with Triton's errors for unknown or unready ones, and
        for a model not of ``kind`` (None: any)."""
        name, version = _model_path(request)
        entry = self._entry(name)
        if version is not None and version != signature.MODEL_VERSION:
            raise not_found(f"Request for unknown model: '{name}' version {version} is not found")
        if entry.state is not ModelState.READY or entry.model is None:
            if version is None:
                raise not_found(f"Request for unknown model: '{name}' has no available versions")
            raise unavailable(
                f"Request for unknown model: '{name}' version {version} is not at ready state"
            )
        if kind is not None and entry.model.kind != kind:
            raise invalid_arg(
                f"model '{name}' is an embedding model: it answers /infer with "
                f"'{embedding_signature.EMBEDDING_OUTPUT}', not /generate"
            )
        return entry.model

    def _entry(self, name: str) -> ModelEntry:
        entry = self.repository.get(name)
        if entry is None:
            raise invalid_arg(f"Request for unknown model: '{name}' is not found")
        return entry


def _model_path(request: Request) -> tuple[str, str | None]:
    """(model name, version or None); a version that is not a number is an unknown route."""
    version = request.path_params.get("version")
    if version is not None:
        if not (version.isascii() and version.isdigit()):  # not "²" or "١"
            raise TritonError(404, "Not Found")
        version = version.lstrip("0") or "0"  # not int(): it refuses over 4300 digits
    return request.path_params["model"], version


async def _whole_text(inference: Inference) -> str:
    """Wait for the whole text of a non-streaming inference, recording how it ended."""
    try:
        text = await inference.text()
        inference.succeeded()
        return text
    except RequestError as exc:
        inference.failed(BACKEND)
        raise internal(f"Error generating stream: {exc.message}") from None
    finally:
        inference.close()


def _binary_outputs(infer: tensors.InferRequest) -> bool:
    """Whether ``text_output`` goes in binary: its own ``binary_data``, else the request's
    ``binary_data_output`` (what tritonclient sends when it names no outputs)."""
    for output in infer.outputs or ():
        if output.name == signature.TEXT_OUTPUT and output.binary is not None:
            return output.binary
    return infer.binary_data_output


def _generate_body(model: ChatModel, request_id: str | None, text: str) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if request_id:
        body["id"] = request_id
    body.update(model_name=model.name, model_version=signature.MODEL_VERSION, text_output=text)
    return body


async def _events(inference: Inference, request_id: str | None, stream: bool) -> AsyncIterator[
    bytes
]:
    """SSE events: one per engine step when streaming, else one with the whole text; an
    engine failure after the stream started is a last ``data: {"error": ...}`` event."""
    model = inference.model
    try:
        if stream:
            async for delta in inference.deltas():
                yield _event(_generate_body(model, request_id, delta))
                inference.responded()
        else:
            yield _event(_generate_body(model, request_id, await inference.text()))
            inference.responded()
        inference.succeeded()
    except RequestError as exc:
        inference.failed(BACKEND)
        yield sse_event(internal(f"Error generating stream: {exc.message}").sse_data())
    finally:
        inference.close()


def _event(body: dict[str, Any]) -> bytes:
    return sse_json(body)


async def _triton_errors(request: Request, call_next) -> Response | StreamingResponse:
    """Turn TritonError raised anywhere in a handler into its JSON response."""
    try:
        return await call_next(request)
    except TritonError as exc:
        return exc.response()

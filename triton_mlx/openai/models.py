"""``/v1/models``: the model cards, and explicit load/unload (``--model-control-mode explicit``)."""

from __future__ import annotations

from triton_mlx.http import Request, Response, json_response
from triton_mlx.repository import control
from triton_mlx.repository.repository import (
    ModelEntry,
    ModelLoadError,
    ModelNotFound,
    ModelRepository,
    ModelState,
)
from triton_mlx.repository.served import ChatModel, EmbeddingModel
from triton_mlx.serving.body import json_body
from triton_mlx.serving.errors import RequestError


class ModelsHandler:
    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository

    async def list_models(self, request: Request) -> Response:
        return json_response(
            {"object": "list", "data": [model_card(e) for e in self.repository.entries()]}
        )

    async def get_model(self, request: Request) -> Response:
        model_id = request.path_params["model_id"]
        entry = self.repository.get(model_id)
        if entry is None:
            raise RequestError(404, f"the model {model_id!r} does not exist",
                               param="model", code="model_not_found")
        return json_response(model_card(entry))

    async def load_model(self, request: Request) -> Response:
        """Explicit mode: load, or reload, a model folder; answers its model card."""
        name = self._control_name(request)
        try:
            await control.load_model(self.repository, name)
        except ModelNotFound:
            raise _no_folder(name) from None
        except ModelLoadError as exc:
            raise RequestError(400, f"failed to load the model {name!r}: {exc.reason}",
                               param="model", code="model_load_failed") from None
        return json_response(model_card(self.repository.get(name)))

    async def unload_model(self, request: Request) -> Response:
        """Explicit mode: unload a model; answers its card (state UNAVAILABLE, "unloaded")."""
        name = self._control_name(request)
        try:
            await control.unload_model(self.repository, name)
        except ModelNotFound:
            raise _no_folder(name) from None
        entry = self.repository.get(name)
        return json_response(model_card(entry) if entry else {"id": name, "object": "model"})

    def _control_name(self, request: Request) -> str:
        try:
            control.check_allowed(self.repository)
        except control.ControlNotAllowed as exc:
            raise RequestError(
                403, f"model load and unload need --model-control-mode explicit (it is {exc})",
                code="model_control_not_allowed",
            ) from None
        if request.body.strip() and json_body(request) != {}:
            raise RequestError(400, "model load and unload take no parameters; send no body")
        return request.path_params["model_id"]


def _no_folder(name: str) -> RequestError:
    return RequestError(404, f"no model folder {name!r} in the repository",
                        param="model", code="model_not_found")


def model_card(entry: ModelEntry) -> dict:
    """A model's card: OpenAI's fields, then its state and what it serves."""
    model = entry.model
    card = {
        "id": entry.name,
        "object": "model",
        "created": model.created if model else _folder_time(entry),
        "owned_by": "triton-mlx",
        "display_name": entry.display_name,
        "state": str(entry.state),
    }
    if entry.state is ModelState.UNAVAILABLE:
        card["reason"] = entry.reason
    if isinstance(model, EmbeddingModel):
        encoder = model.encoder
        card["kind"] = "embedding"
        card["dimensions"] = encoder.dimensions
        card["max_seq_length"] = encoder.max_seq_length
        card["pooling"] = encoder.pooling.mode
        card["normalized"] = encoder.pooling.normalize
        card["matryoshka"] = model.matryoshka
        if encoder.max_rows is not None:
            card["max_batch_size"] = encoder.max_rows
    elif isinstance(model, ChatModel):
        engine = model.engine
        card["kind"] = "chat"
        card["context_length"] = model.context_length
        card["max_batch_size"] = engine.slots
        if model.max_tokens_limit is not None:
            card["max_tokens"] = model.max_tokens_limit
        card["chat_template"] = model.prompts.has_chat_template
        card["runtime_profile"] = model.runtime_profile and model.runtime_profile.as_dict()
        card["parallel"] = engine.layout
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

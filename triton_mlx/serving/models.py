"""Finding the model a request names: it must exist, be READY and be of the kind asked for."""

from __future__ import annotations

from triton_mlx.repository.repository import ModelRepository, ModelState
from triton_mlx.repository.served import ChatModel, ServedModel
from triton_mlx.serving.errors import RequestError, not_ready

_ROUTES = {"chat": "/v1/chat/completions", "embedding": "/v1/embeddings"}


def find_model(repository: ModelRepository, name: str) -> ServedModel:
    """The READY model called ``name``: 404 if there is none, 503 if it is not ready."""
    entry = repository.get(name)
    if entry is None:
        raise RequestError(404, f"the model {name!r} does not exist", param="model",
                           code="model_not_found")
    if entry.state is not ModelState.READY or entry.model is None:
        detail = f": {entry.reason}" if entry.reason else ""
        raise not_ready(f"the model {name!r} is not ready ({entry.state}){detail}", "model")
    return entry.model


def find_chat_model(repository: ModelRepository, name: str) -> ChatModel:
    """The READY chat model called ``name``; a 400 naming ``model`` for an embedding model."""
    model = find_model(repository, name)
    if not isinstance(model, ChatModel):
        raise RequestError(
            400, f"the model {name!r} is a model of kind {model.kind!r}, not 'chat'; use "
            f"{_ROUTES[model.kind]}", param="model", code="wrong_model_kind",
        )
    return model


def require_embedder(model: ServedModel):
    """What embeds with ``model``; a 400 naming ``model`` when its architecture cannot."""
    embedder = model.embedder
    if embedder is None:
        raise RequestError(400, f"the model {model.name!r} cannot compute embeddings: its "
                           f"architecture does not expose its hidden states", param="model",
                           code="embeddings_not_supported")
    return embedder

"""``POST /v1/embeddings``: sentence vectors from an embedding (encoder) model or a chat model.

``input`` is a string, a list of strings, a list of token ids, or a list of lists of token ids.
Text is tokenized with the model's special tokens; token ids are used as given. Either is
truncated to the model's ``max_seq_length`` (as sentence-transformers does; a chat model's is
its context length) and ``usage`` counts the tokens actually embedded. ``dimensions`` shortens
vectors only for models whose folder says they were trained for it (``"matryoshka": true`` in
``triton_mlx.json``); for the others only their full size is accepted.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import numpy as np

from triton_mlx.encoders.batching import tokenize_texts
from triton_mlx.http import Request, Response, json_response
from triton_mlx.observability.inference_stats import BACKEND, SUCCESS, InferenceTiming
from triton_mlx.observability.server_metrics import ServerMetrics
from triton_mlx.repository.repository import ModelRepository
from triton_mlx.serving import embeddings
from triton_mlx.serving.body import json_object
from triton_mlx.serving.errors import RequestError, invalid
from triton_mlx.serving.models import find_model, require_embedder

MAX_INPUTS = 2048
"""The most inputs one request may embed (OpenAI's limit)."""
_PARAMS = {"model", "input", "encoding_format", "dimensions", "user"}


class EmbeddingsHandler:
    def __init__(self, repository: ModelRepository, metrics: ServerMetrics) -> None:
        self.repository = repository
        self.metrics = metrics

    async def handle(self, request: Request) -> Response:
        received = time.perf_counter()
        data = json_object(request)
        for key in data:
            if key not in _PARAMS:
                raise invalid(f"unrecognized request argument supplied: {key}", key)
        name = data.get("model")
        if not isinstance(name, str) or not name:
            raise invalid("model is required and must be a non-empty string", "model")
        texts, id_lists = _inputs(data.get("input"))
        encoding = data.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise invalid("encoding_format must be 'float' or 'base64'", "encoding_format")
        user = data.get("user")
        if user is not None and not isinstance(user, str):
            raise invalid("user must be a string", "user")
        model = find_model(self.repository, name)
        encoder = require_embedder(model)
        dimensions = _dimensions(data.get("dimensions"), encoder.dimensions, model.matryoshka)
        if texts is not None:
            tokens = await tokenize_texts(encoder, texts)
        else:
            assert id_lists is not None
            tokens = embeddings.checked_token_ids(encoder, id_lists, "input")
        prompt_tokens = sum(map(len, tokens))
        request.log_fields.update(model=name, prompt_tokens=prompt_tokens)
        submitted = time.perf_counter()
        try:
            vectors = await embeddings.embed(encoder, tokens)
        except RequestError as exc:
            if exc.code == "engine_error":
                self._record(name, received, submitted, None, BACKEND, len(tokens))
            raise
        computed = time.perf_counter()
        if dimensions is not None and dimensions < vectors.shape[1]:
            vectors = vectors[:, :dimensions]
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        body = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _encode(v, encoding)}
                for i, v in enumerate(vectors)
            ],
            "model": name,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
        self._record(name, received, submitted, computed, SUCCESS, len(tokens))
        return json_response(body)

    def _record(self, name: str, received: float, submitted: float, computed: float | None,
                outcome: str, inferences: int) -> None:
        timing = InferenceTiming.from_marks(received=received, submitted=submitted,
                                            first_output=computed, finished=time.perf_counter())
        self.metrics.observe_inference(name, timing, outcome=outcome, inferences=inferences)


def _dimensions(value: Any, full: int, matryoshka: bool) -> int | None:
    """The requested vector size: any size up to ``full`` for Matryoshka-trained models,
    only ``full`` for the others (truncating them would return meaningless vectors)."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= full:
        raise invalid(f"dimensions must be an integer from 1 to {full} for this model",
                      "dimensions")
    if value != full and not matryoshka:
        raise invalid(f"this model's embeddings have {full} dimensions and it was not trained "
                      f"for shorter ones; dimensions={value} is refused (a model trained for "
                      f"it says \"matryoshka\": true in its triton_mlx.json)", "dimensions")
    return value


def _encode(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":  # little-endian float32, as the OpenAI SDK decodes it
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


def _inputs(value: Any) -> tuple[list[str] | None, list[list[int]] | None]:
    """(texts, None) or (None, token id lists); a 400 naming ``input`` otherwise."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise invalid("input must be a non-empty string, a non-empty list of strings, a list "
                      "of token ids or a list of lists of token ids", "input")
    if all(_is_token(t) for t in value):
        value = [value]
    if len(value) > MAX_INPUTS:
        raise invalid(f"input has {len(value)} items; at most {MAX_INPUTS} are allowed", "input")
    if all(isinstance(v, str) for v in value):
        for i, text in enumerate(value):
            if not text:
                raise invalid(f"input[{i}] is an empty string", "input")
        return value, None
    if all(isinstance(v, list) for v in value):
        for i, ids in enumerate(value):
            if not ids:
                raise invalid(f"input[{i}] is an empty list of token ids", "input")
            if not all(_is_token(t) for t in ids):
                raise invalid(f"input[{i}] must hold only non-negative integer token ids",
                              "input")
        return None, value
    raise invalid("input must be strings only, token ids only, or lists of token ids only, "
                  "not a mix", "input")


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0

"""The OpenAPI 3.1 document of the OpenAI port, written by hand and served at ``/openapi.json``.

It is written from what ``validation.py``, ``embeddings.py``, ``responses.py`` and ``app.py``
accept and answer, not generated from them: the contract is checked against the running
server by ``tests/openai/test_openapi.py`` (schemathesis), so a change on either side that
breaks the other fails there. Request bodies say ``additionalProperties: false`` because the
server refuses unknown parameters with a 400 that names them. A few rules span parameters
(``top_logprobs`` needs ``logprobs``, ``stream_options`` needs ``stream``, ``echo`` excludes
``logprobs``) and are written as ``if``/``then``; the ones that depend on the model (its
vocabulary, context length, batch slots, ``max_tokens`` limit) are in the descriptions and
answered with a 400 naming the parameter.
"""

from __future__ import annotations

from typing import Any

from triton_mlx.http import Request, Response, json_response
from triton_mlx.openai.openapi import responses_api
from triton_mlx.openai.openapi.anthropic import PATHS as ANTHROPIC_PATHS
from triton_mlx.openai.openapi.anthropic import SCHEMAS as ANTHROPIC_SCHEMAS
from triton_mlx.openai.openapi.common import (
    DEMO,
    FOLDER_NAME,
    GENERATION,
    MODEL_ID,
    QUESTION,
    TRANSPORT,
    errors,
    json_body,
    json_content,
    operation,
    ref,
    server_version,
    sse,
)
from triton_mlx.openai.openapi.responses import (
    SCHEMAS,
)

CONTROL_ERRORS = {
    **errors(400, 401, 403, 404, 405, 408, 413, 415, 500, 503),
    "400": json_content(ref("Error"), "A body other than an empty object, or the model failed to "
                 "load (code ``model_load_failed``)."),
}

PATHS = {
    "/v1/chat/completions": {"post": operation(
        "createChatCompletion", "Chat completion, streamed as server-sent events or not",
        {
            "200": {
                "description": "The completion (JSON), or with ``stream: true`` its chunks, "
                               "then ``data: [DONE]``.",
                "content": {
                    "application/json": {"schema": ref("ChatCompletion")},
                    **sse("ChatCompletionChunk"),
                },
            },
            **errors(*GENERATION),
        },
        requestBody=json_body(
            "ChatCompletionRequest",
            greedy={"model": DEMO, "messages": QUESTION, "max_tokens": 50, "temperature": 0},
            streamed={"model": DEMO, "messages": QUESTION, "stream": True,
                      "stream_options": {"include_usage": True}, "logprobs": True,
                      "top_logprobs": 2},
        ),
    )},
    "/v1/completions": {"post": operation(
        "createCompletion", "Text completion of one or more prompts",
        {
            "200": {
                "description": "The completion (JSON), or with ``stream: true`` its chunks, "
                               "then ``data: [DONE]``.",
                "content": {
                    "application/json": {"schema": ref("Completion")},
                    **sse("CompletionChunk"),
                },
            },
            **errors(*GENERATION),
        },
        requestBody=json_body(
            "CompletionRequest",
            two_prompts={"model": DEMO, "prompt": ["The capital of France is", "Once"],
                         "max_tokens": 8, "n": 2, "seed": 7, "echo": True},
            streamed={"model": DEMO, "prompt": "The capital of France is", "stream": True,
                      "logprobs": 1, "stop": ["."]},
        ),
    )},
    "/v1/embeddings": {"post": operation(
        "createEmbedding", "Embeddings from an embedding model or a chat model",
        {"200": json_content(ref("EmbeddingList"), "One vector per input, in order."),
         **errors(*GENERATION)},
        requestBody=json_body(
            "EmbeddingRequest",
            texts={"model": "all-MiniLM-L6-v2", "input": ["Paris is in France.", "Hello"]},
            base64={"model": "all-MiniLM-L6-v2", "input": "Hello", "encoding_format": "base64"},
        ),
    )},
    "/v1/models": {"get": operation(
        "listModels", "Every model folder with its state",
        {"200": json_content(ref("ModelList"), "The models, sorted by id."), **errors(*TRANSPORT)},
    )},
    "/v1/models/{model_id}": {"get": operation(
        "retrieveModel", "One model's card (the id is the rest of the path)",
        {"200": json_content(ref("Model"), "The model's card."), **errors(*TRANSPORT)},
        parameters=[MODEL_ID],
    )},
    "/v1/models/{model_id}/load": {"post": operation(
        "loadModel", "Explicit mode: load or reload a model folder",
        {"200": json_content(ref("Model"), "The model's card, READY."), **CONTROL_ERRORS},
        parameters=[FOLDER_NAME],
        description="No body, or an empty JSON object. A reload keeps the loaded model "
                    "serving until the new one is READY; a failed load is a 400 with code "
                    "``model_load_failed``.",
        requestBody={"required": False, "content": {"application/json": {"schema": {
            "type": "object", "maxProperties": 0}}}},
    )},
    "/v1/models/{model_id}/unload": {"post": operation(
        "unloadModel", "Explicit mode: unload a model, letting its requests finish",
        {"200": json_content({"anyOf": [ref("Model"), ref("UnloadedModel")]},
                      "The model's card: UNAVAILABLE, reason ``unloaded``."),
         **CONTROL_ERRORS},
        parameters=[FOLDER_NAME],
        requestBody={"required": False, "content": {"application/json": {"schema": {
            "type": "object", "maxProperties": 0}}}},
    )},
    "/v1/health/live": {"get": operation(
        "live", "Liveness: 200 while the process runs",
        {"200": json_content(ref("Live"), "Alive."), **errors(400, 405, 408, 500, 503)},
        security=[],
    )},
    "/v1/health/ready": {"get": operation(
        "ready", "Readiness: a model is READY and none is LOADING",
        {
            "200": json_content(ref("Ready"), "Ready, with every model's state."),
            "503": json_content({"anyOf": [ref("NotReady"), ref("Error")]},
                         "Not ready (with every model's state), or at the connection limit."),
            **errors(400, 405, 408, 500),
        },
        security=[],
    )},
    "/v1/metrics": {"get": operation(
        "metrics", "Prometheus metrics (text format 0.0.4)",
        {
            "200": {"description": "The exposition text.",
                    "content": {"text/plain": {"schema": {"type": "string"}}}},
            **errors(*TRANSPORT),
        },
    )},
    "/openapi.json": {"get": operation(
        "openapi", "This document",
        {
            "200": json_content({"type": "object", "required": ["openapi", "info", "paths"]},
                         "The OpenAPI document of this port."),
            **errors(*TRANSPORT),
        },
    )},
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "triton-mlx OpenAI API",
        "version": server_version(),
        "description": "The OpenAI-compatible routes of triton-mlx (``--openai-port``). Errors "
                       "have OpenAI's shape, ``{\"error\": {\"message\", \"type\", \"param\", "
                       "\"code\"}}``. Integers must be written as integers: ``2.0`` where an "
                       "integer is expected is a 400, although JSON Schema's ``integer`` allows "
                       "it.",
        "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
    },
    "security": [{"bearerAuth": []}],
    "paths": {**PATHS, **ANTHROPIC_PATHS},
    "components": {
        "schemas": {**SCHEMAS, **ANTHROPIC_SCHEMAS},
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "Required on every route but the health routes when the server "
                               "runs with ``--api-key`` (or ``TRITON_MLX_API_KEY``); otherwise "
                               "any or no ``Authorization`` header is accepted.",
            }
        },
    },
}
"""The document. Treat it as read-only: it is what ``GET /openapi.json`` serves."""
responses_api.extend(DOCUMENT)  # the Responses API's routes (another front-end on the port)


async def serve(request: Request) -> Response:
    """``GET /openapi.json``: the document above."""
    return json_response(DOCUMENT)

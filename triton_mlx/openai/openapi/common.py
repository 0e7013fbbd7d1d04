"""Building blocks of the OpenAPI document: references, nullable types, error responses."""

from __future__ import annotations

from importlib import metadata
from typing import Any


def server_version() -> str:
    try:
        return metadata.version("triton-mlx")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(kind: str, **constraints: Any) -> dict[str, Any]:
    """A JSON Schema for ``kind`` or ``null``; the server treats null as "not sent"."""
    return {"type": [kind, "null"], **constraints}


def json_content(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def sse(chunk: str) -> dict[str, Any]:
    """The media type of an event stream: every event's ``data`` is a JSON chunk, an in-band
    error (a failure after the stream started), or the final ``[DONE]``. Open API 3.1 lets
    ``schema`` describe one event; ``contentSchema`` describes the JSON inside ``data``."""
    event = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "anyOf": [
                    {"const": "[DONE]"},
                    {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {"anyOf": [ref(chunk), ref("Error")]},
                    },
                ]
            }
        },
    }
    return {"text/event-stream": {"schema": event}}


ERRORS = {
    "400": "Invalid request: bad JSON, a wrong type or an out-of-range value (``param`` names "
           "it), an unsupported parameter, a prompt beyond the model's context, or a model of "
           "the wrong kind.",
    "401": "Missing or wrong API key (only when the server runs with ``--api-key``).",
    "403": "Model load and unload need ``--model-control-mode explicit``.",
    "404": "Unknown model (code ``model_not_found``) or route.",
    "405": "Method not allowed for this path (the ``Allow`` header lists the allowed ones).",
    "408": "The request did not arrive in time.",
    "413": "The request body is larger than ``--max-request-mb``.",
    "415": "The body is not JSON (``Content-Type`` other than ``application/json``).",
    "429": "Every batch slot is busy and the model's queue is full; retry after "
           "``Retry-After`` seconds.",
    "500": "A server bug or an engine failure (code ``engine_error``); the message names the "
           "request id.",
    "503": "The model is not ready (code ``model_not_ready``), or the server is at its "
           "connection limit.",
}
HEADERS = {
    "405": {"Allow": {"required": True, "schema": {"type": "string"}}},
    "429": {"Retry-After": {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}},
}


def errors(*statuses: int) -> dict[str, Any]:
    responses = {}
    for status in map(str, statuses):
        response = json_content(ref("Error"), ERRORS[status])
        if status in HEADERS:
            response["headers"] = HEADERS[status]
        responses[status] = response
    return responses


TRANSPORT = (400, 401, 404, 405, 408, 413, 500, 503)
"""What any route may answer before its handler runs (transport, router, authentication)."""
GENERATION = (*TRANSPORT, 415, 429)


def json_body(schema: str, **examples: dict[str, Any]) -> dict[str, Any]:
    media = {"schema": ref(schema), "examples": {k: {"value": v} for k, v in examples.items()}}
    return {"required": True, "content": {"application/json": media}}


def operation(
    operation_id: str, summary: str, responses: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {"operationId": operation_id, "summary": summary, "responses": responses, **extra}


DEMO = "SmolLM2-135M-Instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
MODEL_ID = {
    "name": "model_id",
    "in": "path",
    "required": True,
    "description": "A model's id: its folder name in the repository.",
    "schema": {"type": "string", "minLength": 1},
    "example": DEMO,
}
FOLDER_NAME = {**MODEL_ID, "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}}

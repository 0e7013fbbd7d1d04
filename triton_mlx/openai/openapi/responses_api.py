"""The Responses API's routes in the OpenAPI document (``triton_mlx.responses_api`` serves
them): ``POST /v1/responses`` and ``GET``/``DELETE /v1/responses/{response_id}``.

Written from what ``responses_api/request.py`` accepts: every field it serves, the ones it
takes at their no-op value only (an ``enum`` of those), and the ones it refuses unless null.
Input items, tools and formats are checked further by the server (a 400 naming the field).
The POST's links lead schemathesis from a stored response to its GET and DELETE.
"""

from __future__ import annotations

from typing import Any

from triton_mlx.openai.openapi.common import (
    DEMO,
    GENERATION,
    TRANSPORT,
    errors,
    json_body,
    json_content,
    nullable,
    operation,
    ref,
    sse,
)
from triton_mlx.serving.parameters import BY_NAME

EFFORTS = ["none", "minimal", "low", "medium", "high", "xhigh"]
NULL = {"type": "null"}


def _bounded(name: str, kind: str) -> dict[str, Any]:
    row = BY_NAME[name]
    bounds = {k: v for k, v in (("minimum", row.minimum), ("maximum", row.maximum))
              if v is not None}
    return nullable(kind, **bounds)


REQUEST = {
    "type": "object",
    "required": ["model", "input"],
    "additionalProperties": False,
    "properties": {
        "model": {"type": "string", "minLength": 1, "description": "A READY chat model's id."},
        "input": {"description": "A user message, or input items: ``message`` (``input_text`` "
                                 "or ``output_text`` parts), ``function_call``, "
                                 "``function_call_output``, ``reasoning``.",
                  "anyOf": [{"type": "string"},
                            {"type": "array", "minItems": 1, "items": {"type": "object"}}]},
        "instructions": nullable("string", description="A system turn first; not carried over "
                                                        "by previous_response_id."),
        "tools": {"type": ["array", "null"], "items": {"type": "object"},
                  "description": "Function tools only; a built-in tool type is a 400."},
        "tool_choice": {"anyOf": [{"enum": ["auto", "none", "required", None]},
                                  {"type": "object"}]},
        "parallel_tool_calls": nullable("boolean"),
        "text": {"type": ["object", "null"], "additionalProperties": False, "properties": {
            "format": {"type": ["object", "null"], "description": "text, json_object, or "
                       "json_schema (name, schema, strict), enforced on every token."},
            "verbosity": {"enum": ["medium", None]}}},
        "max_output_tokens": {**_bounded("max_tokens", "integer"), "description": (
            "At most the model's max_tokens and context; a cut is status incomplete.")},
        "temperature": _bounded("temperature", "number"),
        "top_p": _bounded("top_p", "number"),
        "stream": nullable("boolean"),
        "store": nullable("boolean", description="Default true: kept in memory (the last "
                                                 "--responses-store-size responses)."),
        "previous_response_id": nullable("string", minLength=1),
        "reasoning": {"type": ["object", "null"], "additionalProperties": False, "properties": {
            "effort": {"enum": [*EFFORTS, None], "description": "The chat template's "
                       "reasoning_effort (400 when the template does not read it)."},
            "summary": NULL, "generate_summary": NULL}},
        "include": {"type": ["array", "null"],
                    "items": {"enum": ["reasoning.encrypted_content"]}},
        "metadata": {"type": ["object", "null"], "maxProperties": 16,
                     "propertyNames": {"maxLength": 64},
                     "additionalProperties": {"type": "string", "maxLength": 512}},
        "user": nullable("string"),
        "safety_identifier": nullable("string"),
        "prompt_cache_key": nullable("string", description="Accepted; the prefix cache finds "
                                                           "shared prompts without a key."),
        "truncation": {"enum": ["disabled", None]},
        "service_tier": {"enum": ["auto", "default", None]},
        "background": {"enum": [False, None]},
        "top_logprobs": {"enum": [0, None]},
        "conversation": NULL,
        "prompt": NULL,
        "max_tool_calls": NULL,
        "stream_options": NULL,
    },
}
RESPONSE = {
    "type": "object",
    "required": ["id", "object", "created_at", "status", "model", "output", "usage"],
    "properties": {
        "id": {"type": "string", "pattern": "^resp_"},
        "object": {"const": "response"},
        "created_at": {"type": "integer"},
        "status": {"enum": ["completed", "incomplete", "in_progress", "failed"]},
        "incomplete_details": {"anyOf": [NULL, {"type": "object", "properties": {
            "reason": {"const": "max_output_tokens"}}}]},
        "model": {"type": "string"},
        "output": {"type": "array", "items": {"type": "object", "required": ["id", "type"],
                   "properties": {"type": {"enum": ["message", "function_call",
                                                    "reasoning"]}}}},
        "usage": {"anyOf": [NULL, {"type": "object", "required": [
            "input_tokens", "output_tokens", "total_tokens"]}]},
    },
}
STREAM_EVENT = {
    "type": "object",
    "required": ["type", "sequence_number"],
    "properties": {"type": {"type": "string"},
                   "sequence_number": {"type": "integer", "minimum": 0}},
}
DELETED = {
    "type": "object", "required": ["id", "object", "deleted"],
    "properties": {"id": {"type": "string"}, "object": {"const": "response"},
                   "deleted": {"const": True}},
}
RESPONSE_ID = {"name": "response_id", "in": "path", "required": True,
               "description": "A stored response's id.",
               "schema": {"type": "string", "minLength": 1}}
LINKS = {name: {"operationId": operation_id,
                "parameters": {"response_id": "$response.body#/id"}}
         for name, operation_id in (("GetResponse", "getResponse"),
                                    ("DeleteResponse", "deleteResponse"))}

PATHS = {
    "/v1/responses": {"post": operation(
        "createResponse", "OpenAI Responses: a response, or its events",
        {
            "200": {
                "description": "The response (JSON), or with ``stream: true`` its events, each "
                               "named by ``event:`` and numbered by ``sequence_number``.",
                "content": {"application/json": {"schema": ref("Response")},
                            **sse("ResponseStreamEvent")},
                "links": LINKS,
            },
            **errors(*GENERATION),
        },
        requestBody=json_body(
            "ResponseCreateRequest",
            text={"model": DEMO, "input": "What is the capital of France?",
                  "max_output_tokens": 20, "temperature": 0},
            streamed={"model": DEMO, "input": "Hello", "stream": True,
                      "instructions": "Be brief.", "store": False},
        ),
    )},
    "/v1/responses/{response_id}": {
        "get": operation("getResponse", "A stored response",
                         {"200": json_content(ref("Response"), "The response."),
                          **errors(*TRANSPORT)}, parameters=[RESPONSE_ID]),
        "delete": operation("deleteResponse", "Delete a stored response",
                            {"200": json_content(ref("ResponseDeleted"), "Deleted."),
                             **errors(*TRANSPORT)}, parameters=[RESPONSE_ID]),
    },
}
SCHEMAS = {"ResponseCreateRequest": REQUEST, "Response": RESPONSE,
           "ResponseStreamEvent": STREAM_EVENT, "ResponseDeleted": DELETED}


def extend(document: dict[str, Any]) -> None:
    """Add the Responses routes and schemas to ``document``."""
    document["paths"].update(PATHS)
    document["components"]["schemas"].update(SCHEMAS)

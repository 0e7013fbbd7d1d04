"""The OpenAPI description of Anthropic's Messages routes on the OpenAI port
(``triton_mlx/anthropic/``): ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

Written from what ``anthropic/request.py``, ``content.py`` and ``tools.py`` accept (null means
"not sent", as there) and what ``shaping.py`` answers. Errors from the handlers have
Anthropic's shape; those the transport or router produce before a handler runs (405, 413...)
keep the port's OpenAI shape, so error responses allow both.
"""

from __future__ import annotations

from typing import Any

from triton_mlx.openai.openapi.common import DEMO, QUESTION, json_body, nullable, operation, ref
from triton_mlx.serving.parameters import MAX_STOP_STRINGS

_ERRORS = {
    "400": "Invalid request (``invalid_request_error``): the message names the field.",
    "401": "Missing or wrong key (``authentication_error``): send ``x-api-key: KEY`` or "
           "``Authorization: Bearer KEY`` when the server runs with ``--api-key``.",
    "404": "Unknown model (``not_found_error``) or route.",
    "405": "Method not allowed for this path.",
    "408": "The request did not arrive in time.",
    "413": "The request body is larger than ``--max-request-mb``.",
    "415": "The body is not JSON.",
    "500": "A server bug or an engine failure (``api_error``).",
    "503": "The model is not ready (``api_error``), or the server is at its connection limit.",
    "529": "Every batch slot is busy and the model's queue is full (``overloaded_error``); "
           "retry after ``Retry-After`` seconds.",
}


def _errors(*statuses: str) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status in statuses:
        response: dict[str, Any] = {"description": _ERRORS[status], "content": {
            "application/json": {"schema": {"anyOf": [ref("AnthropicError"), ref("Error")]}}}}
        if status == "529":
            response["headers"] = {"Retry-After": {"required": True, "schema": {
                "type": "string", "pattern": "^[0-9]+$"}}}
        responses[status] = response
    return responses


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "additionalProperties": False,
            "properties": properties}


def _const(value: str) -> dict[str, Any]:
    return {"type": "string", "const": value}


CACHE_CONTROL = _object(["type"], type=_const("ephemeral"), ttl=nullable("string"))
CACHE_CONTROL["properties"]["ttl"]["enum"] = ["5m", "1h", None]
_CACHE = {"anyOf": [ref("AnthropicCacheControl"), {"type": "null"}]}
TEXT_BLOCK = _object(["type", "text"], type=_const("text"), text={"type": "string"},
                     cache_control=_CACHE,
                     citations={"anyOf": [{"type": "null"}, {"type": "array", "maxItems": 0}]})
CONTENT_BLOCK = {
    "type": "object", "required": ["type"], "properties": {"type": {"type": "string"}},
    "description": "``text`` and ``tool_result`` (``tool_use_id``, ``content``, ``is_error``) "
                   "in user turns; ``text``, ``tool_use`` (``id``, ``name``, ``input``) and "
                   "``thinking`` in assistant turns. Images, documents and other blocks are a "
                   "400.",
}
MESSAGE = _object(
    ["role", "content"], role={"type": "string", "enum": ["user", "assistant"]},
    content={"anyOf": [{"type": "string"},
                       {"type": "array", "items": ref("AnthropicContentBlock")}]})
TOOL = _object(
    ["name", "input_schema"], type={"enum": ["custom", None]},
    name={"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"},
    description=nullable("string"), cache_control=_CACHE,
    input_schema={"type": "object", "required": ["type"],
                  "properties": {"type": _const("object")},
                  "description": "A JSON schema the grammar engine compiles (else a 400)."})
_PARALLEL = nullable("boolean")
TOOL_CHOICE = {"anyOf": [
    _object(["type"], type=_const("auto"), disable_parallel_tool_use=_PARALLEL),
    _object(["type"], type=_const("any"), disable_parallel_tool_use=_PARALLEL),
    _object(["type"], type=_const("none"), disable_parallel_tool_use=_PARALLEL),
    _object(["type", "name"], type=_const("tool"), name={"type": "string", "minLength": 1},
            disable_parallel_tool_use=_PARALLEL),
]}
THINKING = {"anyOf": [
    _object(["type"], type=_const("disabled")),
    _object(["type", "budget_tokens"], type=_const("enabled"),
            budget_tokens={"type": "integer", "minimum": 1024,
                           "description": "Below max_tokens; reasoning models only."}),
]}
OUTPUT_CONFIG = _object(
    [], effort={"enum": ["low", "medium", "high", "max", None],
                "description": "The template's ``reasoning_effort`` (a 400 if it has none)."},
    format={"anyOf": [{"type": "null"}, _object(
        ["type", "schema"], type=_const("json_schema"), schema={"type": "object"})]})
_COMMON: dict[str, Any] = {
    "model": {"type": "string", "minLength": 1},
    "messages": {"type": "array", "minItems": 1, "items": ref("AnthropicMessage")},
    "system": {"anyOf": [{"type": "string"}, {"type": "null"},
                         {"type": "array", "items": ref("AnthropicTextBlock")}]},
    "tools": {"type": ["array", "null"], "maxItems": 128, "items": ref("AnthropicTool")},
    "tool_choice": {"anyOf": [TOOL_CHOICE, {"type": "null"}]},
    "thinking": {"anyOf": [THINKING, {"type": "null"}]},
    "output_config": {"anyOf": [OUTPUT_CONFIG, {"type": "null"}]},
}
MESSAGES_REQUEST = _object(
    ["model", "max_tokens", "messages"], **_COMMON,
    max_tokens={"type": "integer", "minimum": 1},
    stop_sequences={"type": ["array", "null"], "maxItems": MAX_STOP_STRINGS,
                    "items": {"type": "string", "minLength": 1}},
    stream=nullable("boolean"), cache_control=_CACHE,
    metadata={"anyOf": [{"type": "null"}, _object([], user_id=nullable("string",
                                                                          maxLength=256))]},
    temperature=nullable("number", minimum=0, maximum=1),
    top_p=nullable("number", minimum=0, maximum=1),
    top_k=nullable("integer", minimum=-1),
)
COUNT_REQUEST = _object(["model", "messages"], **_COMMON)
_STRING = {"type": "string"}
OUT_BLOCK = {"anyOf": [
    {"type": "object", "required": ["type", "text"],
     "properties": {"type": _const("text"), "text": _STRING}},
    {"type": "object", "required": ["type", "thinking", "signature"],
     "properties": {"type": _const("thinking"), "thinking": _STRING, "signature": _STRING}},
    {"type": "object", "required": ["type", "id", "name", "input"],
     "properties": {"type": _const("tool_use"), "id": _STRING, "name": _STRING,
                    "input": {"type": "object"}}},
]}
_COUNT = {"type": "integer", "minimum": 0}
USAGE = {"type": "object", "required": ["input_tokens", "output_tokens"], "properties": {
    "input_tokens": _COUNT, "output_tokens": _COUNT, "cache_read_input_tokens": _COUNT,
    "cache_creation_input_tokens": _COUNT}}
_STOP_REASON = {"enum": ["end_turn", "max_tokens", "stop_sequence", "tool_use", None]}
MESSAGE_OUT = {
    "type": "object",
    "required": ["id", "type", "role", "model", "content", "stop_reason", "stop_sequence",
                 "usage"],
    "properties": {"id": _STRING, "type": _const("message"), "role": _const("assistant"),
                   "model": _STRING, "content": {"type": "array", "items": OUT_BLOCK},
                   "stop_reason": _STOP_REASON, "stop_sequence": nullable("string"),
                   "usage": ref("AnthropicUsage")},
}
_INDEX = {"type": "integer", "minimum": 0}
STREAM_EVENT = {"anyOf": [
    {"type": "object", "required": ["type", "message"],
     "properties": {"type": _const("message_start"), "message": ref("AnthropicMessageOut")}},
    {"type": "object", "required": ["type"], "properties": {"type": {"enum": [
        "ping", "message_stop"]}}},
    {"type": "object", "required": ["type", "index", "content_block"],
     "properties": {"type": _const("content_block_start"), "index": _INDEX,
                    "content_block": OUT_BLOCK}},
    {"type": "object", "required": ["type", "index", "delta"],
     "properties": {"type": _const("content_block_delta"), "index": _INDEX,
                    "delta": {"type": "object", "required": ["type"], "properties": {
                        "type": {"enum": ["text_delta", "thinking_delta",
                                          "input_json_delta"]}}}}},
    {"type": "object", "required": ["type", "index"],
     "properties": {"type": _const("content_block_stop"), "index": _INDEX}},
    {"type": "object", "required": ["type", "delta", "usage"],
     "properties": {"type": _const("message_delta"), "usage": ref("AnthropicUsage"),
                    "delta": {"type": "object", "required": ["stop_reason", "stop_sequence"],
                              "properties": {"stop_reason": _STOP_REASON,
                                             "stop_sequence": nullable("string")}}}},
]}
ERROR = {"type": "object", "required": ["type", "error"], "properties": {
    "type": _const("error"), "error": {"type": "object", "required": ["type", "message"],
                                       "properties": {"type": _STRING, "message": _STRING}}}}

SCHEMAS = {
    "AnthropicError": ERROR,
    "AnthropicCacheControl": CACHE_CONTROL,
    "AnthropicTextBlock": TEXT_BLOCK,
    "AnthropicContentBlock": CONTENT_BLOCK,
    "AnthropicMessage": MESSAGE,
    "AnthropicTool": TOOL,
    "AnthropicMessagesRequest": MESSAGES_REQUEST,
    "AnthropicCountTokensRequest": COUNT_REQUEST,
    "AnthropicUsage": USAGE,
    "AnthropicMessageOut": MESSAGE_OUT,
    "AnthropicStreamEvent": STREAM_EVENT,
}

_EVENTS = {"text/event-stream": {"schema": {
    "type": "object", "required": ["data"],
    "properties": {"event": _STRING, "data": {
        "type": "string", "contentMediaType": "application/json",
        "contentSchema": {"anyOf": [ref("AnthropicStreamEvent"), ref("AnthropicError")]}}},
}}}
_GENERATION = ("400", "401", "404", "405", "408", "413", "415", "500", "503")

PATHS = {
    "/v1/messages": {"post": operation(
        "createMessage", "Anthropic's Messages API, streamed as its events or not",
        {
            "200": {"description": "The message (JSON), or with ``stream: true`` Anthropic's "
                                   "events: message_start, ping, content blocks, "
                                   "message_delta, message_stop.",
                    "content": {"application/json": {"schema": ref("AnthropicMessageOut")},
                                **_EVENTS}},
            **_errors(*_GENERATION, "529"),
        },
        requestBody=json_body(
            "AnthropicMessagesRequest",
            greedy={"model": DEMO, "max_tokens": 50, "messages": QUESTION, "temperature": 0},
            streamed={"model": DEMO, "max_tokens": 20, "messages": QUESTION, "stream": True,
                      "stop_sequences": ["."]},
        ),
        description="The key may also come as ``x-api-key``; ``anthropic-version`` is "
                    "accepted.",
    )},
    "/v1/messages/count_tokens": {"post": operation(
        "countMessageTokens", "The prompt tokens a Messages request would have",
        {"200": {"description": "``{\"input_tokens\": n}``", "content": {"application/json": {
            "schema": {"type": "object", "required": ["input_tokens"],
                       "properties": {"input_tokens": _COUNT}}}}},
         **_errors(*_GENERATION)},
        requestBody=json_body("AnthropicCountTokensRequest",
                              question={"model": DEMO, "messages": QUESTION}),
    )},
}

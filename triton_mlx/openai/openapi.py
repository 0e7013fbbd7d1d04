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

from importlib import metadata
from typing import Any

from triton_mlx.http import Request, Response, json_response
from triton_mlx.openai.embeddings import MAX_INPUTS
from triton_mlx.openai.validation import MAX_PROMPTS
from triton_mlx.serving.parameters import (
    CHAT,
    COMPLETIONS,
    MAX_LOGPROBS,
    MAX_STOP_STRINGS,
    PARAMETERS,
    Parameter,
)


def _version() -> str:
    try:
        return metadata.version("triton-mlx")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str, **constraints: Any) -> dict[str, Any]:
    """A JSON Schema for ``kind`` or ``null``; the server treats null as "not sent"."""
    return {"type": [kind, "null"], **constraints}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _sse(chunk: str) -> dict[str, Any]:
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
                        "contentSchema": {"anyOf": [_ref(chunk), _ref("Error")]},
                    },
                ]
            }
        },
    }
    return {"text/event-stream": {"schema": event}}


_ERRORS = {
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
_HEADERS = {
    "405": {"Allow": {"required": True, "schema": {"type": "string"}}},
    "429": {"Retry-After": {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}},
}


def _errors(*statuses: int) -> dict[str, Any]:
    responses = {}
    for status in map(str, statuses):
        response = _json(_ref("Error"), _ERRORS[status])
        if status in _HEADERS:
            response["headers"] = _HEADERS[status]
        responses[status] = response
    return responses


_TRANSPORT = (400, 401, 404, 405, 408, 413, 500, 503)
"""What any route may answer before its handler runs (transport, router, authentication)."""
_GENERATION = (*_TRANSPORT, 415, 429)


def _json_body(schema: str, **examples: dict[str, Any]) -> dict[str, Any]:
    media = {"schema": _ref(schema), "examples": {k: {"value": v} for k, v in examples.items()}}
    return {"required": True, "content": {"application/json": media}}


def _operation(
    operation_id: str, summary: str, responses: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {"operationId": operation_id, "summary": summary, "responses": responses, **extra}


_DEMO = "SmolLM2-135M-Instruct"
_QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
_MODEL_ID = {
    "name": "model_id",
    "in": "path",
    "required": True,
    "description": "A model's id: its folder name in the repository.",
    "schema": {"type": "string", "minLength": 1},
    "example": _DEMO,
}
_FOLDER_NAME = {**_MODEL_ID, "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}}

_STREAM_OPTIONS = {
    "description": "Only with ``stream: true``.",
    "type": ["object", "null"],
    "properties": {"include_usage": {"type": "boolean"}},
    "additionalProperties": False,
}
_PLAIN = {
    "model": {"type": "string", "minLength": 1, "description": "A READY model's id."},
    "stream": _nullable("boolean", description="Answer with server-sent events."),
    "stream_options": _STREAM_OPTIONS,
    "user": _nullable("string"),
}


def _parameter_schema(parameter: Parameter, protocol: str) -> dict[str, Any]:
    """One row of the serving layer's parameter table as a JSON Schema (null: the default)."""
    described = {"description": parameter.description} if parameter.description else {}
    if protocol in parameter.default_only_in:
        return {"enum": [None, parameter.default], **described}
    if parameter.kind == "stop":
        return {**described, "anyOf": [
            {"type": "null"},
            {"type": "string", "minLength": 1},
            {"type": "array", "maxItems": MAX_STOP_STRINGS,
             "items": {"type": "string", "minLength": 1}},
        ]}
    if parameter.kind == "logit_bias":
        return {**described, "type": ["object", "null"],
                "propertyNames": {"pattern": "^[0-9]+$"},
                "additionalProperties": {"type": "number", "minimum": parameter.minimum,
                                         "maximum": parameter.maximum}}
    bounds: dict[str, Any] = {}
    if parameter.minimum is not None:
        key = "exclusiveMinimum" if parameter.exclusive_minimum else "minimum"
        bounds[key] = parameter.minimum
    if parameter.maximum is not None:
        bounds["maximum"] = parameter.maximum
    return _nullable(parameter.kind, **bounds, **described)


def _generation_parameters(protocol: str) -> dict[str, Any]:
    return {p.name: _parameter_schema(p, protocol) for p in PARAMETERS if p.accepted_in(protocol)}


_STREAM_OPTIONS_NEED_STREAM = {
    "if": {"required": ["stream_options"],
           "properties": {"stream_options": {"type": "object"}}},
    "then": {"required": ["stream"], "properties": {"stream": {"const": True}}},
}

_TEXT_PART = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
}
_CONTENT = {"anyOf": [{"type": "string"}, {"type": "array", "items": _ref("TextPart")}]}
_CHAT_MESSAGE = {
    "description": "A message; ``developer`` is read as ``system``. Other keys are ignored, "
                   "but tool calls are refused.",
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {"anyOf": [*_CONTENT["anyOf"], {"type": "null"}]},
        "name": _nullable("string"),
        "tool_calls": {"type": ["array", "null"], "maxItems": 0},
        "function_call": {"type": "null"},
    },
    "if": {"properties": {"role": {"const": "assistant"}}},
    "else": {"required": ["content"], "properties": {"content": _CONTENT}},
}
_CHAT_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "additionalProperties": False,
    "properties": {
        **_PLAIN,
        **_generation_parameters(CHAT),
        "messages": {"type": "array", "minItems": 1, "items": _ref("ChatMessage")},
        "max_completion_tokens": _nullable("integer", minimum=1, description=(
            "The same as ``max_tokens``; when both are sent they must be equal.")),
        "logprobs": _nullable("boolean"),
        "top_logprobs": _nullable("integer", minimum=0, maximum=MAX_LOGPROBS, description=(
            "Alternatives per token; needs ``logprobs: true``.")),
        "response_format": {
            "description": "Only ``{\"type\": \"text\"}``: structured output is not supported.",
            "anyOf": [
                {"type": "null"},
                {"type": "object", "required": ["type"], "additionalProperties": False,
                 "properties": {"type": {"const": "text"}}},
            ],
        },
        "tools": {"type": ["array", "null"], "maxItems": 0,
                  "description": "Tool calling is not supported: null or empty only."},
        "tool_choice": {"enum": [None, "none"]},
        "parallel_tool_calls": {"type": "null", "description": "Only allowed with tools."},
    },
    "allOf": [
        _STREAM_OPTIONS_NEED_STREAM,
        {
            "if": {"required": ["top_logprobs"],
                   "properties": {"top_logprobs": {"type": "integer"}}},
            "then": {"required": ["logprobs"], "properties": {"logprobs": {"const": True}}},
        },
    ],
}
_PROMPT = {
    "description": f"A string, up to {MAX_PROMPTS} strings (one choice each), one list of "
                   f"token ids, or up to {MAX_PROMPTS} lists of token ids. Token ids must be "
                   "below the vocabulary size; a "
                   "prompt that tokenizes to nothing (``\"\"`` for a model without a BOS "
                   "token) is a 400.",
    "anyOf": [
        {"type": "string"},
        {"type": "array", "minItems": 1, "maxItems": MAX_PROMPTS, "items": {"type": "string"}},
        {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}},
        {"type": "array", "minItems": 1, "maxItems": MAX_PROMPTS,
         "items": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}},
    ],
}
_COMPLETION_REQUEST = {
    "type": "object",
    "required": ["model", "prompt"],
    "additionalProperties": False,
    "properties": {
        **_PLAIN,
        **_generation_parameters(COMPLETIONS),
        "prompt": _PROMPT,
        "logprobs": _nullable("integer", minimum=0, maximum=MAX_LOGPROBS, description=(
            "Each token's log probability and this many alternatives.")),
        "echo": _nullable("boolean", description=(
            "Prepend the prompt to the text; not together with ``logprobs``.")),
        "suffix": {"type": "null", "description": "Insertion is not supported."},
    },
    "allOf": [
        _STREAM_OPTIONS_NEED_STREAM,
        {
            "if": {"required": ["echo"], "properties": {"echo": {"const": True}}},
            "then": {"properties": {"logprobs": {"type": "null"}}},
        },
    ],
}
_TOKEN_IDS = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}
_EMBEDDING_REQUEST = {
    "type": "object",
    "required": ["model", "input"],
    "additionalProperties": False,
    "properties": {
        "model": {"type": "string", "minLength": 1, "description": (
            "A READY embedding model, or a chat model whose card has ``embeddings``.")},
        "input": {
            "description": f"A string, up to {MAX_INPUTS} strings, one list of token ids, or up "
                           f"to {MAX_INPUTS} "
                           "lists of token ids; none empty. Longer inputs are truncated to the "
                           "model's ``max_seq_length``.",
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "minItems": 1, "maxItems": MAX_INPUTS,
                 "items": {"type": "string", "minLength": 1}},
                _TOKEN_IDS,
                {"type": "array", "minItems": 1, "maxItems": MAX_INPUTS, "items": _TOKEN_IDS},
            ],
        },
        "encoding_format": {"enum": ["float", "base64"], "description": (
            "``base64``: the little-endian float32 bytes.")},
        "dimensions": _nullable("integer", minimum=1, description=(
            "Keep the first N dimensions, normalised again: at most the model's size, and "
            "below it only for a model whose card says ``matryoshka``.")),
        "user": _nullable("string"),
    },
}

_INT = {"type": "integer", "minimum": 0}
_USAGE = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details"],
    "additionalProperties": False,
    "properties": {
        "prompt_tokens": _INT,
        "completion_tokens": _INT,
        "total_tokens": _INT,
        "prompt_tokens_details": {
            "type": "object",
            "required": ["cached_tokens"],
            "additionalProperties": False,
            "properties": {"cached_tokens": {**_INT, "description": (
                "Prompt tokens served from the prefix cache.")}},
        },
    },
}
_FINISH = {"enum": ["stop", "length"]}
_LOGPROB = {"type": "number", "maximum": 0}
_BYTES = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 255}}
_CHAT_TOP_LOGPROB = {
    "type": "object",
    "required": ["token", "logprob", "bytes"],
    "additionalProperties": False,
    "properties": {"token": {"type": "string"}, "logprob": _LOGPROB, "bytes": _BYTES},
}
_CHAT_LOGPROBS = {
    "type": "object",
    "required": ["content"],
    "additionalProperties": False,
    "properties": {
        "content": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["token", "logprob", "bytes", "top_logprobs"],
                "additionalProperties": False,
                "properties": {
                    **_CHAT_TOP_LOGPROB["properties"],
                    "top_logprobs": {"type": "array", "maxItems": MAX_LOGPROBS,
                                     "items": _ref("ChatTopLogprob")},
                },
            },
        }
    },
}
_COMPLETION_LOGPROBS = {
    "type": "object",
    "required": ["tokens", "token_logprobs", "top_logprobs", "text_offset"],
    "additionalProperties": False,
    "properties": {
        "tokens": {"type": "array", "items": {"type": "string"}},
        "token_logprobs": {"type": "array", "items": _LOGPROB},
        "top_logprobs": {"type": "array", "items": {
            "type": "object", "maxProperties": MAX_LOGPROBS, "additionalProperties": _LOGPROB}},
        "text_offset": {"type": "array", "items": _INT},
    },
}


def _completion_object(prefix: str, obj: str, choice: dict[str, Any], *, chunk: bool) -> dict:
    """The envelope shared by completions and their stream chunks."""
    schema: dict[str, Any] = {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "pattern": f"^{prefix}-[0-9a-f]{{32}}$"},
            "object": {"const": obj},
            "created": _INT,
            "model": {"type": "string"},
            "choices": {"type": "array", "items": choice},
            "usage": _ref("Usage"),
        },
    }
    if chunk:  # one choice per chunk; the usage chunk has none and the usage
        schema["properties"]["choices"]["maxItems"] = 1
        schema["properties"]["usage"] = {"anyOf": [{"type": "null"}, _ref("Usage")]}
    else:
        schema["required"].append("usage")
        schema["properties"]["choices"]["minItems"] = 1
    return schema


def _choice(fields: dict[str, Any], logprobs: str, *, chunk: bool) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["index", *fields, "logprobs", "finish_reason"],
        "additionalProperties": False,
        "properties": {
            "index": _INT,
            **fields,
            "logprobs": {"anyOf": [{"type": "null"}, _ref(logprobs)]},
            "finish_reason": {"anyOf": [{"type": "null"}, _FINISH]} if chunk else _FINISH,
        },
    }


_ASSISTANT = {
    "type": "object",
    "required": ["role", "content"],
    "additionalProperties": False,
    "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}},
}
_DELTA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}},
}
_TEXT = {"type": "string"}

_RUNTIME_PROFILE = {
    "type": "object",
    "required": ["name", "device", "weights", "blas", "reason", "warning"],
    "additionalProperties": False,
    "properties": {
        "name": {"enum": ["gpu", "cpu-fast", "cpu-small"]},
        "device": {"enum": ["gpu", "cpu"]},
        "weights": {"type": "string"},
        "blas": _nullable("string"),
        "reason": {"type": "string"},
        "warning": {"type": "boolean"},
    },
}
_MODEL = {
    "description": "A model folder and its state. Loaded models add their kind and settings.",
    "type": "object",
    "required": ["id", "object", "created", "owned_by", "display_name", "state"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": _INT,
        "owned_by": {"type": "string"},
        "display_name": {"type": "string"},
        "state": {"enum": ["LOADING", "READY", "UNLOADING", "UNAVAILABLE"]},
        "reason": {"type": "string", "description": "Why the model is UNAVAILABLE."},
        "kind": {"enum": ["chat", "embedding"]},
        "context_length": _nullable("integer", minimum=1),
        "max_batch_size": {"type": "integer", "minimum": 1},
        "max_tokens": {"type": "integer", "minimum": 1},
        "chat_template": {"type": "boolean"},
        "runtime_profile": {"anyOf": [{"type": "null"}, _RUNTIME_PROFILE]},
        "dimensions": {"type": "integer", "minimum": 1},
        "max_seq_length": {"type": "integer", "minimum": 1},
        "pooling": {"enum": ["mean", "cls"]},
        "normalized": {"type": "boolean"},
        "matryoshka": {"type": "boolean", "description": (
            "Trained for shorter vectors: ``dimensions`` below the full size is accepted.")},
        "embeddings": {"description": "A chat model's embeddings (``/v1/embeddings``), or null "
                       "when its architecture does not expose its hidden states.",
                       "anyOf": [{"type": "null"}, _ref("ChatEmbeddings")]},
    },
}
_CHAT_EMBEDDINGS = {
    "type": "object",
    "required": ["dimensions", "max_seq_length", "pooling", "normalized", "matryoshka"],
    "additionalProperties": False,
    "properties": {
        "dimensions": {"type": "integer", "minimum": 1},
        "max_seq_length": {"type": "integer", "minimum": 1},
        "pooling": {"enum": ["mean", "cls"]},
        "normalized": {"type": "boolean"},
        "matryoshka": {"type": "boolean"},
    },
}
_UNLOADED = {
    "description": "The answer to unloading a folder that has meanwhile gone.",
    "type": "object",
    "required": ["id", "object"],
    "additionalProperties": False,
    "properties": {"id": {"type": "string"}, "object": {"const": "model"}},
}
_STATES = {"type": "object", "additionalProperties": _MODEL["properties"]["state"]}
_ERROR = {
    "description": "OpenAI's error shape.",
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "additionalProperties": False,
            "properties": {
                "message": {"type": "string"},
                "type": {"enum": ["invalid_request_error", "authentication_error",
                                  "permission_error", "not_found_error", "timeout_error",
                                  "rate_limit_error", "server_error", "service_unavailable"]},
                "param": _nullable("string", description="The parameter at fault."),
                "code": _nullable("string"),
            },
        }
    },
}

_SCHEMAS = {
    "Error": _ERROR,
    "Usage": _USAGE,
    "TextPart": _TEXT_PART,
    "ChatMessage": _CHAT_MESSAGE,
    "ChatCompletionRequest": _CHAT_REQUEST,
    "CompletionRequest": _COMPLETION_REQUEST,
    "EmbeddingRequest": _EMBEDDING_REQUEST,
    "ChatTopLogprob": _CHAT_TOP_LOGPROB,
    "ChatLogprobs": _CHAT_LOGPROBS,
    "CompletionLogprobs": _COMPLETION_LOGPROBS,
    "ChatCompletion": _completion_object(
        "chatcmpl", "chat.completion",
        _choice({"message": _ASSISTANT}, "ChatLogprobs", chunk=False), chunk=False),
    "ChatCompletionChunk": _completion_object(
        "chatcmpl", "chat.completion.chunk",
        _choice({"delta": _DELTA}, "ChatLogprobs", chunk=True), chunk=True),
    "Completion": _completion_object(
        "cmpl", "text_completion",
        _choice({"text": _TEXT}, "CompletionLogprobs", chunk=False), chunk=False),
    "CompletionChunk": _completion_object(
        "cmpl", "text_completion",
        _choice({"text": _TEXT}, "CompletionLogprobs", chunk=True), chunk=True),
    "EmbeddingList": {
        "type": "object",
        "required": ["object", "data", "model", "usage"],
        "additionalProperties": False,
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "required": ["object", "index", "embedding"],
                "additionalProperties": False,
                "properties": {
                    "object": {"const": "embedding"},
                    "index": _INT,
                    "embedding": {"anyOf": [
                        {"type": "array", "minItems": 1, "items": {"type": "number"}},
                        {"type": "string", "contentEncoding": "base64"},
                    ]},
                },
            }},
            "model": {"type": "string"},
            "usage": {
                "type": "object",
                "required": ["prompt_tokens", "total_tokens"],
                "additionalProperties": False,
                "properties": {"prompt_tokens": _INT, "total_tokens": _INT},
            },
        },
    },
    "Model": _MODEL,
    "UnloadedModel": _UNLOADED,
    "ChatEmbeddings": _CHAT_EMBEDDINGS,
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "additionalProperties": False,
        "properties": {"object": {"const": "list"},
                       "data": {"type": "array", "items": _ref("Model")}},
    },
    "Live": {
        "type": "object", "required": ["status"], "additionalProperties": False,
        "properties": {"status": {"const": "live"}},
    },
    "Ready": {
        "type": "object", "required": ["status", "models"], "additionalProperties": False,
        "properties": {"status": {"const": "ready"}, "models": _STATES},
    },
    "NotReady": {
        "type": "object", "required": ["status", "models"], "additionalProperties": False,
        "properties": {"status": {"const": "not ready"}, "models": _STATES},
    },
}

_CONTROL_ERRORS = {
    **_errors(400, 401, 403, 404, 405, 408, 413, 415, 500, 503),
    "400": _json(_ref("Error"), "A body other than an empty object, or the model failed to "
                 "load (code ``model_load_failed``)."),
}

_PATHS = {
    "/v1/chat/completions": {"post": _operation(
        "createChatCompletion", "Chat completion, streamed as server-sent events or not",
        {
            "200": {
                "description": "The completion (JSON), or with ``stream: true`` its chunks, "
                               "then ``data: [DONE]``.",
                "content": {
                    "application/json": {"schema": _ref("ChatCompletion")},
                    **_sse("ChatCompletionChunk"),
                },
            },
            **_errors(*_GENERATION),
        },
        requestBody=_json_body(
            "ChatCompletionRequest",
            greedy={"model": _DEMO, "messages": _QUESTION, "max_tokens": 50, "temperature": 0},
            streamed={"model": _DEMO, "messages": _QUESTION, "stream": True,
                      "stream_options": {"include_usage": True}, "logprobs": True,
                      "top_logprobs": 2},
        ),
    )},
    "/v1/completions": {"post": _operation(
        "createCompletion", "Text completion of one or more prompts",
        {
            "200": {
                "description": "The completion (JSON), or with ``stream: true`` its chunks, "
                               "then ``data: [DONE]``.",
                "content": {
                    "application/json": {"schema": _ref("Completion")},
                    **_sse("CompletionChunk"),
                },
            },
            **_errors(*_GENERATION),
        },
        requestBody=_json_body(
            "CompletionRequest",
            two_prompts={"model": _DEMO, "prompt": ["The capital of France is", "Once"],
                         "max_tokens": 8, "n": 2, "seed": 7, "echo": True},
            streamed={"model": _DEMO, "prompt": "The capital of France is", "stream": True,
                      "logprobs": 1, "stop": ["."]},
        ),
    )},
    "/v1/embeddings": {"post": _operation(
        "createEmbedding", "Embeddings from an embedding model or a chat model",
        {"200": _json(_ref("EmbeddingList"), "One vector per input, in order."),
         **_errors(*_GENERATION)},
        requestBody=_json_body(
            "EmbeddingRequest",
            texts={"model": "all-MiniLM-L6-v2", "input": ["Paris is in France.", "Hello"]},
            base64={"model": "all-MiniLM-L6-v2", "input": "Hello", "encoding_format": "base64"},
        ),
    )},
    "/v1/models": {"get": _operation(
        "listModels", "Every model folder with its state",
        {"200": _json(_ref("ModelList"), "The models, sorted by id."), **_errors(*_TRANSPORT)},
    )},
    "/v1/models/{model_id}": {"get": _operation(
        "retrieveModel", "One model's card (the id is the rest of the path)",
        {"200": _json(_ref("Model"), "The model's card."), **_errors(*_TRANSPORT)},
        parameters=[_MODEL_ID],
    )},
    "/v1/models/{model_id}/load": {"post": _operation(
        "loadModel", "Explicit mode: load or reload a model folder",
        {"200": _json(_ref("Model"), "The model's card, READY."), **_CONTROL_ERRORS},
        parameters=[_FOLDER_NAME],
        description="No body, or an empty JSON object. A reload keeps the loaded model "
                    "serving until the new one is READY; a failed load is a 400 with code "
                    "``model_load_failed``.",
        requestBody={"required": False, "content": {"application/json": {"schema": {
            "type": "object", "maxProperties": 0}}}},
    )},
    "/v1/models/{model_id}/unload": {"post": _operation(
        "unloadModel", "Explicit mode: unload a model, letting its requests finish",
        {"200": _json({"anyOf": [_ref("Model"), _ref("UnloadedModel")]},
                      "The model's card: UNAVAILABLE, reason ``unloaded``."),
         **_CONTROL_ERRORS},
        parameters=[_FOLDER_NAME],
        requestBody={"required": False, "content": {"application/json": {"schema": {
            "type": "object", "maxProperties": 0}}}},
    )},
    "/v1/health/live": {"get": _operation(
        "live", "Liveness: 200 while the process runs",
        {"200": _json(_ref("Live"), "Alive."), **_errors(400, 405, 408, 500, 503)},
        security=[],
    )},
    "/v1/health/ready": {"get": _operation(
        "ready", "Readiness: a model is READY and none is LOADING",
        {
            "200": _json(_ref("Ready"), "Ready, with every model's state."),
            "503": _json({"anyOf": [_ref("NotReady"), _ref("Error")]},
                         "Not ready (with every model's state), or at the connection limit."),
            **_errors(400, 405, 408, 500),
        },
        security=[],
    )},
    "/v1/metrics": {"get": _operation(
        "metrics", "Prometheus metrics (text format 0.0.4)",
        {
            "200": {"description": "The exposition text.",
                    "content": {"text/plain": {"schema": {"type": "string"}}}},
            **_errors(*_TRANSPORT),
        },
    )},
    "/openapi.json": {"get": _operation(
        "openapi", "This document",
        {
            "200": _json({"type": "object", "required": ["openapi", "info", "paths"]},
                         "The OpenAPI document of this port."),
            **_errors(*_TRANSPORT),
        },
    )},
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "triton-mlx OpenAI API",
        "version": _version(),
        "description": "The OpenAI-compatible routes of triton-mlx (``--openai-port``). Errors "
                       "have OpenAI's shape, ``{\"error\": {\"message\", \"type\", \"param\", "
                       "\"code\"}}``. Integers must be written as integers: ``2.0`` where an "
                       "integer is expected is a 400, although JSON Schema's ``integer`` allows "
                       "it.",
        "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
    },
    "security": [{"bearerAuth": []}],
    "paths": _PATHS,
    "components": {
        "schemas": _SCHEMAS,
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


async def serve(request: Request) -> Response:
    """``GET /openapi.json``: the document above."""
    return json_response(DOCUMENT)

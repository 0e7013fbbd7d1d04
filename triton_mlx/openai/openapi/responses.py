"""Response bodies and stream chunks of the OpenAPI document, and its schema registry."""

from __future__ import annotations

from typing import Any

from triton_mlx.openai.openapi.common import (
    nullable,
    ref,
)
from triton_mlx.openai.openapi.requests import (
    CHAT_MESSAGE,
    CHAT_REQUEST,
    COMPLETION_REQUEST,
    EMBEDDING_REQUEST,
    TEXT_PART,
    TOOL,
)
from triton_mlx.serving.parameters import MAX_LOGPROBS

INT = {"type": "integer", "minimum": 0}
USAGE = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details"],
    "additionalProperties": False,
    "properties": {
        "prompt_tokens": INT,
        "completion_tokens": INT,
        "total_tokens": INT,
        "prompt_tokens_details": {
            "type": "object",
            "required": ["cached_tokens"],
            "additionalProperties": False,
            "properties": {"cached_tokens": {**INT, "description": (
                "Prompt tokens served from the prefix cache.")}},
        },
    },
}
FINISH = {"enum": ["stop", "length", "tool_calls"]}
LOGPROB = {"type": "number", "maximum": 0}
BYTES = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 255}}
CHAT_TOP_LOGPROB = {
    "type": "object",
    "required": ["token", "logprob", "bytes"],
    "additionalProperties": False,
    "properties": {"token": {"type": "string"}, "logprob": LOGPROB, "bytes": BYTES},
}
CHAT_LOGPROBS = {
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
                    **CHAT_TOP_LOGPROB["properties"],
                    "top_logprobs": {"type": "array", "maxItems": MAX_LOGPROBS,
                                     "items": ref("ChatTopLogprob")},
                },
            },
        }
    },
}
COMPLETION_LOGPROBS = {
    "type": "object",
    "required": ["tokens", "token_logprobs", "top_logprobs", "text_offset"],
    "additionalProperties": False,
    "properties": {
        "tokens": {"type": "array", "items": {"type": "string"}},
        "token_logprobs": {"type": "array", "items": LOGPROB},
        "top_logprobs": {"type": "array", "items": {
            "type": "object", "maxProperties": MAX_LOGPROBS, "additionalProperties": LOGPROB}},
        "text_offset": {"type": "array", "items": INT},
    },
}


def completion_object(prefix: str, obj: str, choice: dict[str, Any], *, chunk: bool) -> dict:
    """The envelope shared by completions and their stream chunks."""
    schema: dict[str, Any] = {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "pattern": f"^{prefix}-[0-9a-f]{{32}}$"},
            "object": {"const": obj},
            "created": INT,
            "model": {"type": "string"},
            "choices": {"type": "array", "items": choice},
            "usage": ref("Usage"),
        },
    }
    if chunk:  # one choice per chunk; the usage chunk has none and the usage
        schema["properties"]["choices"]["maxItems"] = 1
        schema["properties"]["usage"] = {"anyOf": [{"type": "null"}, ref("Usage")]}
    else:
        schema["required"].append("usage")
        schema["properties"]["choices"]["minItems"] = 1
    return schema


def choice(fields: dict[str, Any], logprobs: str, *, chunk: bool) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["index", *fields, "logprobs", "finish_reason"],
        "additionalProperties": False,
        "properties": {
            "index": INT,
            **fields,
            "logprobs": {"anyOf": [{"type": "null"}, ref(logprobs)]},
            "finish_reason": {"anyOf": [{"type": "null"}, FINISH]} if chunk else FINISH,
        },
    }


TOOL_CALL = {
    "type": "object",
    "required": ["id", "type", "function"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "type": {"const": "function"},
        "function": {"type": "object", "required": ["name", "arguments"],
                     "additionalProperties": False,
                     "properties": {"name": {"type": "string"},
                                    "arguments": {"type": "string"}}},
    },
}
TOOL_CALL_DELTA = {
    "description": "A call's first delta has its id, type and name; later ones add "
                   "argument text.",
    "type": "object",
    "required": ["index", "function"],
    "additionalProperties": False,
    "properties": {
        "index": INT,
        "id": {"type": "string"},
        "type": {"const": "function"},
        "function": {"type": "object", "required": ["arguments"], "additionalProperties": False,
                     "properties": {"name": {"type": "string"},
                                    "arguments": {"type": "string"}}},
    },
}
REASONING = {"type": "string", "description": "A reasoning model's thinking (both names)."}
ASSISTANT = {
    "type": "object",
    "required": ["role", "content"],
    "additionalProperties": False,
    "properties": {"role": {"const": "assistant"}, "content": {"type": ["string", "null"]},
                   "tool_calls": {"type": "array", "items": TOOL_CALL},
                   "reasoning_content": REASONING, "reasoning": REASONING},
}
DELTA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"role": {"const": "assistant"}, "content": {"type": "string"},
                   "tool_calls": {"type": "array", "items": TOOL_CALL_DELTA},
                   "reasoning_content": REASONING, "reasoning": REASONING},
}
TEXT = {"type": "string"}

RUNTIME_PROFILE = {
    "type": "object",
    "required": ["name", "device", "weights", "blas", "reason", "warning"],
    "additionalProperties": False,
    "properties": {
        "name": {"enum": ["gpu", "gpu-dense", "cpu-fast", "cpu-small"]},
        "device": {"enum": ["gpu", "cpu"]},
        "weights": {"type": "string"},
        "blas": nullable("string"),
        "reason": {"type": "string"},
        "warning": {"type": "boolean"},
    },
}
PARALLEL = {
    "description": "How the model is split across the ranks of mlx.launch.",
    "type": "object",
    "required": ["kind", "ranks", "backend"],
    "additionalProperties": False,
    "properties": {
        "kind": {"enum": ["tensor", "pipeline"]},
        "ranks": {"type": "integer", "minimum": 2},
        "backend": {"enum": ["ring", "jaccl", "nccl", "mpi"]},
    },
}
MODEL = {
    "description": "A model folder and its state. Loaded models add their kind and settings.",
    "type": "object",
    "required": ["id", "object", "created", "owned_by", "display_name", "state"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": INT,
        "owned_by": {"type": "string"},
        "display_name": {"type": "string"},
        "state": {"enum": ["LOADING", "READY", "UNLOADING", "UNAVAILABLE"]},
        "reason": {"type": "string", "description": "Why the model is UNAVAILABLE."},
        "kind": {"enum": ["chat", "embedding"]},
        "context_length": nullable("integer", minimum=1),
        "max_batch_size": {"type": "integer", "minimum": 1},
        "max_tokens": {"type": "integer", "minimum": 1},
        "chat_template": {"type": "boolean"},
        "runtime_profile": {"anyOf": [{"type": "null"}, RUNTIME_PROFILE]},
        "parallel": {"anyOf": [{"type": "null"}, PARALLEL]},
        "dimensions": {"type": "integer", "minimum": 1},
        "max_seq_length": {"type": "integer", "minimum": 1},
        "pooling": {"enum": ["mean", "cls"]},
        "normalized": {"type": "boolean"},
        "matryoshka": {"type": "boolean", "description": (
            "Trained for shorter vectors: ``dimensions`` below the full size is accepted.")},
        "embeddings": {"description": "A chat model's embeddings (``/v1/embeddings``), or null "
                       "when its architecture does not expose its hidden states.",
                       "anyOf": [{"type": "null"}, ref("ChatEmbeddings")]},
    },
}
CHAT_EMBEDDINGS = {
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
UNLOADED = {
    "description": "The answer to unloading a folder that has meanwhile gone.",
    "type": "object",
    "required": ["id", "object"],
    "additionalProperties": False,
    "properties": {"id": {"type": "string"}, "object": {"const": "model"}},
}
STATES = {"type": "object", "additionalProperties": MODEL["properties"]["state"]}
ERROR = {
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
                "param": nullable("string", description="The parameter at fault."),
                "code": nullable("string"),
            },
        }
    },
}

SCHEMAS = {
    "Error": ERROR,
    "Usage": USAGE,
    "TextPart": TEXT_PART,
    "ChatMessage": CHAT_MESSAGE,
    "Tool": TOOL,
    "ChatCompletionRequest": CHAT_REQUEST,
    "CompletionRequest": COMPLETION_REQUEST,
    "EmbeddingRequest": EMBEDDING_REQUEST,
    "ChatTopLogprob": CHAT_TOP_LOGPROB,
    "ChatLogprobs": CHAT_LOGPROBS,
    "CompletionLogprobs": COMPLETION_LOGPROBS,
    "ChatCompletion": completion_object(
        "chatcmpl", "chat.completion",
        choice({"message": ASSISTANT}, "ChatLogprobs", chunk=False), chunk=False),
    "ChatCompletionChunk": completion_object(
        "chatcmpl", "chat.completion.chunk",
        choice({"delta": DELTA}, "ChatLogprobs", chunk=True), chunk=True),
    "Completion": completion_object(
        "cmpl", "text_completion",
        choice({"text": TEXT}, "CompletionLogprobs", chunk=False), chunk=False),
    "CompletionChunk": completion_object(
        "cmpl", "text_completion",
        choice({"text": TEXT}, "CompletionLogprobs", chunk=True), chunk=True),
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
                    "index": INT,
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
                "properties": {"prompt_tokens": INT, "total_tokens": INT},
            },
        },
    },
    "Model": MODEL,
    "UnloadedModel": UNLOADED,
    "ChatEmbeddings": CHAT_EMBEDDINGS,
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "additionalProperties": False,
        "properties": {"object": {"const": "list"},
                       "data": {"type": "array", "items": ref("Model")}},
    },
    "Live": {
        "type": "object", "required": ["status"], "additionalProperties": False,
        "properties": {"status": {"const": "live"}},
    },
    "Ready": {
        "type": "object", "required": ["status", "models"], "additionalProperties": False,
        "properties": {"status": {"const": "ready"}, "models": STATES},
    },
    "NotReady": {
        "type": "object", "required": ["status", "models"], "additionalProperties": False,
        "properties": {"status": {"const": "not ready"}, "models": STATES},
    },
}

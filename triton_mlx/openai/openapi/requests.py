"""Request bodies of the OpenAPI document; generation parameters come from the serving
layer's parameter table, so their ranges are written once."""

from __future__ import annotations

from typing import Any

from triton_mlx.openai.embeddings import MAX_INPUTS
from triton_mlx.openai.openapi.common import (
    nullable,
    ref,
)
from triton_mlx.openai.validation import MAX_PROMPTS
from triton_mlx.serving.parameters import (
    CHAT,
    COMPLETIONS,
    MAX_LOGPROBS,
    MAX_STOP_STRINGS,
    PARAMETERS,
    Parameter,
)

STREAM_OPTIONS = {
    "description": "Only with ``stream: true``.",
    "type": ["object", "null"],
    "properties": {"include_usage": {"type": "boolean"}},
    "additionalProperties": False,
}
PLAIN = {
    "model": {"type": "string", "minLength": 1, "description": "A READY model's id."},
    "stream": nullable("boolean", description="Answer with server-sent events."),
    "stream_options": STREAM_OPTIONS,
    "user": nullable("string"),
}


def parameter_schema(parameter: Parameter, protocol: str) -> dict[str, Any]:
    """One row of the serving layer's parameter table as a JSON Schema (null: the default)."""
    described = {"description": parameter.description} if parameter.description else {}
    if protocol in parameter.default_only_in:
        return {"enum": [None, parameter.default], **described}
    if parameter.kind == "structured":
        return {**described, "type": ["object", "null"], "minProperties": 1,
                "maxProperties": 1, "additionalProperties": False, "properties": {
                    "json": {"type": ["object", "string"]},
                    "regex": {"type": "string", "minLength": 1},
                    "choice": {"type": "array", "minItems": 1,
                               "items": {"type": "string", "minLength": 1}},
                    "grammar": {"type": "string", "minLength": 1}}}
    if parameter.kind == "stop":
        return {**described, "anyOf": [
            {"type": "null"},
            {"type": "string", "minLength": 1},
            {"type": "array", "maxItems": MAX_STOP_STRINGS,
             "items": {"type": "string", "minLength": 1}},
        ]}
    if parameter.kind == "logit_bias":
        return {**described, "type": ["object", "null"],
                "propertyNames": {"pattern": "^[0-9]+$", "maxLength": 20},
                "additionalProperties": {"type": "number", "minimum": parameter.minimum,
                                         "maximum": parameter.maximum}}
    bounds: dict[str, Any] = {}
    if parameter.minimum is not None:
        key = "exclusiveMinimum" if parameter.exclusive_minimum else "minimum"
        bounds[key] = parameter.minimum
    if parameter.maximum is not None:
        bounds["maximum"] = parameter.maximum
    return nullable(parameter.kind, **bounds, **described)


def generation_parameters(protocol: str) -> dict[str, Any]:
    return {p.name: parameter_schema(p, protocol) for p in PARAMETERS if p.accepted_in(protocol)}


STREAM_OPTIONS_NEED_STREAM = {
    "if": {"required": ["stream_options"],
           "properties": {"stream_options": {"type": "object"}}},
    "then": {"required": ["stream"], "properties": {"stream": {"const": True}}},
}

TEXT_PART = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
}
CONTENT = {"anyOf": [{"type": "string"}, {"type": "array", "items": ref("TextPart")}]}
TOOL_CALL_IN = {
    "type": "object",
    "required": ["function"],
    "properties": {
        "id": nullable("string"),
        "type": {"const": "function"},
        "function": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"}, "arguments": {"type": "string"}}},
    },
}
CHAT_MESSAGE = {
    "description": "A message; ``developer`` is read as ``system``. An assistant message may "
                   "carry ``tool_calls`` (its ``content`` then may be null), a ``tool`` message "
                   "answers one by ``tool_call_id``. Other keys are ignored.",
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {"anyOf": [*CONTENT["anyOf"], {"type": "null"}]},
        "name": nullable("string"),
        "tool_calls": {"type": ["array", "null"], "items": TOOL_CALL_IN},
        "tool_call_id": nullable("string"),
        "reasoning_content": nullable("string"),
        "reasoning": nullable("string"),
        "function_call": {"type": "null"},
    },
    "allOf": [
        {"if": {"properties": {"role": {"const": "assistant"}}},
         "else": {"required": ["content"], "properties": {
             "content": CONTENT, "tool_calls": {"type": ["array", "null"], "maxItems": 0}}}},
        {"if": {"properties": {"role": {"const": "tool"}}},
         "then": {"required": ["tool_call_id"],
                  "properties": {"tool_call_id": {"type": "string", "minLength": 1}}}},
    ],
}
TOOL = {
    "type": "object",
    "required": ["type", "function"],
    "additionalProperties": False,
    "properties": {
        "type": {"const": "function"},
        "function": {
            "type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                "description": nullable("string"),
                "parameters": {"type": ["object", "null"], "description": (
                    "A JSON schema for the arguments, enforced by the grammar; one that "
                    "cannot be enforced as given is a 400 naming tools.")},
                "strict": nullable("boolean"),
            },
        },
    },
}
CHAT_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "additionalProperties": False,
    "properties": {
        **PLAIN,
        **generation_parameters(CHAT),
        "messages": {"type": "array", "minItems": 1, "items": ref("ChatMessage")},
        "max_completion_tokens": nullable("integer", minimum=1, description=(
            "The same as ``max_tokens``; when both are sent they must be equal.")),
        "logprobs": nullable("boolean"),
        "top_logprobs": nullable("integer", minimum=0, maximum=MAX_LOGPROBS, description=(
            "Alternatives per token; needs ``logprobs: true``.")),
        "response_format": {
            "description": "Enforced on every token by a grammar: ``json_object`` (any JSON "
                           "object) or ``json_schema`` (strict or not, both enforced). A schema "
                           "that cannot be enforced as given is a 400 naming response_format.",
            "anyOf": [
                {"type": "null"},
                {"type": "object", "required": ["type"], "additionalProperties": False,
                 "properties": {"type": {"enum": ["text", "json_object"]}}},
                {"type": "object", "required": ["type", "json_schema"],
                 "additionalProperties": False,
                 "properties": {"type": {"const": "json_schema"}, "json_schema": {
                     "type": "object", "required": ["name"], "additionalProperties": False,
                     "properties": {"name": {"type": "string", "minLength": 1},
                                    "description": {"type": ["string", "null"]},
                                    "schema": {"type": "object"},
                                    "strict": {"type": ["boolean", "null"]}}}}},
            ],
        },
        "tools": {"type": ["array", "null"], "maxItems": 128, "items": ref("Tool"),
                  "description": "Functions the model may call; names must be distinct. Calls "
                                 "are parsed from the model's own format and streamed as "
                                 "``tool_calls`` deltas."},
        "tool_choice": {"description": "``auto`` (default), ``none`` (text only; the tools are "
                                       "left out of the prompt), ``required`` or a named "
                                       "function (one of ``tools``), both enforced by the "
                                       "grammar.",
                        "anyOf": [{"enum": [None, "none", "auto", "required"]},
                                  {"type": "object", "required": ["type", "function"],
                                   "properties": {"type": {"const": "function"}, "function": {
                                       "type": "object", "required": ["name"],
                                       "properties": {"name": {"type": "string"}}}}}]},
        "parallel_tool_calls": nullable("boolean", description=(
            "false: at most one call. Only allowed with tools.")),
        "chat_template_kwargs": {"type": ["object", "null"], "description": (
            "Extra variables for the chat template (vLLM's extension), e.g. "
            "``{\"enable_thinking\": false}``; a name the model's template does not use is "
            "a 400.")},
        "reasoning_effort": {"enum": [None, "none", "minimal", "low", "medium", "high", "xhigh"],
                             "description": "Passed to chat templates that read it; a 400 for "
                                            "a model whose template does not."},
    },
    "allOf": [
        STREAM_OPTIONS_NEED_STREAM,
        {
            "if": {"anyOf": [
                {"required": ["parallel_tool_calls"],
                 "properties": {"parallel_tool_calls": {"type": "boolean"}}},
                {"required": ["tool_choice"], "properties": {"tool_choice": {
                    "anyOf": [{"const": "required"}, {"type": "object"}]}}}]},
            "then": {"required": ["tools"],
                     "properties": {"tools": {"type": "array", "minItems": 1}}},
        },
        {
            "if": {"required": ["top_logprobs"],
                   "properties": {"top_logprobs": {"type": "integer"}}},
            "then": {"required": ["logprobs"], "properties": {"logprobs": {"const": True}}},
        },
    ],
}
PROMPT = {
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
COMPLETION_REQUEST = {
    "type": "object",
    "required": ["model", "prompt"],
    "additionalProperties": False,
    "properties": {
        **PLAIN,
        **generation_parameters(COMPLETIONS),
        "prompt": PROMPT,
        "logprobs": nullable("integer", minimum=0, maximum=MAX_LOGPROBS, description=(
            "Each token's log probability and this many alternatives.")),
        "echo": nullable("boolean", description=(
            "Prepend the prompt to the text; not together with ``logprobs``.")),
        "suffix": {"type": "null", "description": "Insertion is not supported."},
    },
    "allOf": [
        STREAM_OPTIONS_NEED_STREAM,
        {
            "if": {"required": ["echo"], "properties": {"echo": {"const": True}}},
            "then": {"properties": {"logprobs": {"type": "null"}}},
        },
    ],
}
TOKEN_IDS = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}
EMBEDDING_REQUEST = {
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
                TOKEN_IDS,
                {"type": "array", "minItems": 1, "maxItems": MAX_INPUTS, "items": TOKEN_IDS},
            ],
        },
        "encoding_format": {"enum": ["float", "base64"], "description": (
            "``base64``: the little-endian float32 bytes.")},
        "dimensions": nullable("integer", minimum=1, description=(
            "Keep the first N dimensions, normalised again: at most the model's size, and "
            "below it only for a model whose card says ``matryoshka``.")),
        "user": nullable("string"),
    },
}

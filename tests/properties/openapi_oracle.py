"""The oracle of the parameter property tests: the OpenAPI document the server serves.

Whether a request is valid is decided by an independent JSON Schema validator (``jsonschema_rs``,
which schemathesis brings) against the request schemas of ``GET /openapi.json``, never by the
server's own validation code. The few rules the document states in words rather than in schema
are written here once, each beside the sentence it comes from. Values to try are drawn from each
parameter's schema: inside its range (edges included), just outside it, and of other types.
"""

from __future__ import annotations

import functools
import json
import math
from typing import Any

import jsonschema_rs
from hypothesis import strategies as st

from triton_mlx.openai.openapi import DOCUMENT

CHAT = "ChatCompletionRequest"
COMPLETION = "CompletionRequest"
EMBEDDING = "EmbeddingRequest"
COMPONENTS = DOCUMENT["components"]["schemas"]


def properties(request: str) -> dict[str, dict[str, Any]]:
    """The documented parameters of a request body, by name."""
    return COMPONENTS[request]["properties"]


@functools.cache
def _validator(schema_json: str) -> jsonschema_rs.Draft202012Validator:
    root = {**json.loads(schema_json), "components": {"schemas": COMPONENTS}}
    return jsonschema_rs.Draft202012Validator(root)


def schema_accepts(schema: dict[str, Any] | str, value: Any) -> bool:
    """Whether ``value`` is valid for ``schema`` (a schema, or a request's name) as JSON Schema
    says. NaN and the infinities are not JSON numbers, so no schema accepts them."""
    if isinstance(schema, str):
        schema = {"$ref": f"#/components/schemas/{schema}"}
    return _validator(json.dumps(schema, sort_keys=True)).is_valid(value)


def mentions_integer(schema: dict[str, Any]) -> bool:
    """Whether an integer is expected somewhere in ``schema`` (its type, or an enum's value)."""
    if isinstance(schema, dict):
        if "integer" in kinds(schema) or any(is_int(v) for v in schema.get("enum", ())):
            return True
        return any(mentions_integer(v) for v in schema.values())
    if isinstance(schema, list):
        return any(mentions_integer(v) for v in schema)
    return False


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def holds_float(value: Any) -> bool:
    """Whether a float appears anywhere in ``value``."""
    if isinstance(value, float):
        return True
    if isinstance(value, list):
        return any(holds_float(v) for v in value)
    if isinstance(value, dict):
        return any(holds_float(v) for v in value.values())
    return False


def openai_accepts(request: str, body: Any) -> bool:
    """Whether the OpenAI port must accept ``body`` (before any model-specific check)."""
    if not schema_accepts(request, body):
        return False
    documented = properties(request)
    # info.description: "Integers must be written as integers: 2.0 where an integer is
    # expected is a 400, although JSON Schema's integer allows it." No documented parameter
    # mixes integers and numbers, so a float anywhere in an integer parameter is refused.
    if any(mentions_integer(documented[k]) and holds_float(v) for k, v in body.items()):
        return False
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    elif body.get("max_tokens") not in (None, max_tokens):
        return False  # max_completion_tokens: "when both are sent they must be equal"
    min_tokens = body.get("min_tokens")
    # min_tokens: "At most ``max_tokens``."
    return min_tokens is None or max_tokens is None or min_tokens <= max_tokens


def meaning(request: str, name: str, value: Any) -> Any:
    """What a valid, non-null ``value`` of ``name`` means, as the document describes it."""
    schema = resolve(properties(request)[name])
    if name == "stop":
        return [value] if isinstance(value, str) else value
    if name == "logit_bias":
        return {int(token): float(bias) for token, bias in value.items()}
    if name == "top_k" and value == -1:
        return 0  # "0 or -1: no top-k filtering"
    if name == "logprobs" and request == CHAT:
        return 0 if value else None  # alternatives only with top_logprobs
    if name == "stream_options":
        return value.get("include_usage", False)
    if name == "prompt":
        if isinstance(value, str) or all(isinstance(token, int) for token in value):
            return [value]  # one prompt
        return value
    if "number" in kinds(schema):
        return float(value)
    return value


# ----- values drawn from a schema ----------------------------------------------------------

# One or two values of each JSON type, to send where another type is expected.
SAMPLES: dict[str, list[Any]] = {
    "null": [None],
    "boolean": [True, False],
    "integer": [0, 7, -3],
    "number": [0.5, -1.25],
    "string": ["", "x", "1"],
    "array": [[], [1], ["x"]],
    "object": [{}, {"x": 1}],
}
MAX_TOKEN_ID_DIGITS = 20
"""Token ids in ``logit_bias`` keys are drawn with at most this many digits: the server refuses
longer keys outright, which the document's ``^[0-9]+$`` does not say (such an id is beyond any
vocabulary, which the description does say is a 400)."""


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return COMPONENTS[ref.rsplit("/", 1)[1]] if ref else schema


def kinds(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def inside(schema: dict[str, Any]) -> st.SearchStrategy:
    """Values ``schema`` accepts, its edges included."""
    schema = resolve(schema)
    if "anyOf" in schema:
        return st.one_of([inside(branch) for branch in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    return st.one_of([_inside_kind(kind, schema) for kind in kinds(schema)])


def _inside_kind(kind: str, schema: dict[str, Any]) -> st.SearchStrategy:
    low, high = schema.get("minimum"), schema.get("maximum")
    above = schema.get("exclusiveMinimum")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low = above + 1 if above is not None else low
        edges = [v for v in (low, high) if v is not None]
        return st.integers(low, high) | st.sampled_from(edges or [0])
    if kind == "number":
        low = above if above is not None else low
        floats = st.floats(low, high, exclude_min=above is not None, allow_nan=False,
                           allow_infinity=False)
        whole = st.integers(None if low is None else math.floor(low) + 1,
                            None if high is None else math.floor(high))
        edges = [v for v in (schema.get("minimum"), high) if v is not None]
        return st.one_of(floats, whole, *([st.sampled_from(edges)] if edges else []))
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return st.text(min_size=schema.get("minLength", 0), max_size=12)
    if kind == "array":
        return st.lists(inside(schema.get("items", {})), min_size=schema.get("minItems", 0),
                        max_size=schema.get("maxItems", 4))
    assert kind == "object", schema
    if "properties" in schema:
        return st.fixed_dictionaries(
            {k: inside(v) for k, v in schema["properties"].items()
             if k in schema.get("required", ())},
            optional={k: inside(v) for k, v in schema["properties"].items()
                      if k not in schema.get("required", ())})
    names = schema.get("propertyNames", {}).get("pattern")
    keys = (st.from_regex(names, fullmatch=True).filter(lambda k: len(k) <= MAX_TOKEN_ID_DIGITS)
            if names else st.text(max_size=8))
    return st.dictionaries(keys, inside(schema.get("additionalProperties", {})), max_size=4)


def outside(schema: dict[str, Any]) -> st.SearchStrategy:
    """Values ``schema`` refuses: just past a bound, of another type, an unknown key..."""
    schema = resolve(schema)
    if "anyOf" in schema:  # outside one branch may be inside another
        candidates = st.one_of([outside(branch) for branch in schema["anyOf"]])
        return candidates.filter(lambda value: not schema_accepts(schema, value))
    if "enum" in schema or "const" in schema:
        allowed = schema.get("enum", [schema.get("const")])
        everything = [v for values in SAMPLES.values() for v in values] + [2, 1.5, "none "]
        return st.sampled_from([v for v in everything if not _among(v, allowed)])
    accepted = kinds(schema)
    if "number" in accepted:
        accepted.append("integer")
    others = [v for kind, values in SAMPLES.items() if kind not in accepted for v in values]
    past = [_past_bounds(kind, schema) for kind in kinds(schema)]
    return st.one_of(st.sampled_from(others), *[p for p in past if p is not None])


def _among(value: Any, allowed: list[Any]) -> bool:
    return any(type(value) is type(a) and value == a for a in allowed) or (
        is_int(value) and any(isinstance(a, float) and value == a for a in allowed))


def _past_bounds(kind: str, schema: dict[str, Any]) -> st.SearchStrategy | None:
    low, high = schema.get("minimum"), schema.get("maximum")
    above = schema.get("exclusiveMinimum")
    if kind == "integer":
        values = [low - 1, low - 2**70] if low is not None else []
        values += [high + 1, high + 2**70] if high is not None else []
        return st.sampled_from(values) if values else None
    if kind == "number":
        values = [math.nan, math.inf, -math.inf]
        if low is not None:
            values += [math.nextafter(low, -math.inf), low - 1, -(10**400)]
        if above is not None:
            values += [above, math.nextafter(above, -math.inf), above - 1]
        if high is not None:
            values += [math.nextafter(high, math.inf), high + 1, 10**400]
        return st.sampled_from(values)
    if kind == "string" and schema.get("minLength", 0) > 0:
        return st.just("")
    if kind == "array":
        items = schema.get("items", {})
        wrong = [st.lists(outside(items), min_size=1, max_size=3)]
        if schema.get("minItems", 0) > 0:
            wrong.append(st.just([]))
        if "maxItems" in schema:
            count = schema["maxItems"] + 1
            wrong.append(st.lists(inside(items), min_size=count, max_size=count))
        return st.one_of(wrong)
    if kind == "object":
        return _past_object(schema)
    return None


def _past_object(schema: dict[str, Any]) -> st.SearchStrategy:
    wrong = []
    if schema.get("additionalProperties") is False:
        wrong.append(st.just({"unknown_key": 1}))
    for name, sub in schema.get("properties", {}).items():
        wrong.append(outside(sub).map(lambda value, name=name: {name: value}))
    if "propertyNames" in schema:
        wrong.append(st.sampled_from([{"x": 1}, {"-1": 1}, {" 1": 1}, {"1.5": 1}]))
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        wrong.append(outside(extra).map(lambda value: {"1": value}))
    return st.one_of(wrong)


# ----- Triton's sampling parameters --------------------------------------------------------

TRITON_NAMES = ("temperature", "top_p", "top_k", "min_p", "max_tokens", "min_tokens",
                "ignore_eos", "stop", "seed", "frequency_penalty", "presence_penalty",
                "repetition_penalty", "logit_bias")
"""README: "Sampling parameters have the OpenAI API's ranges and defaults"."""
TRITON_DEFAULT_ONLY = {
    # README: "n, best_of, include_stop_str_in_output and detokenize at their defaults only"
    # (vLLM's defaults).
    "n": {"enum": [None, 1]},
    "best_of": {"enum": [None, 1]},
    "include_stop_str_in_output": {"enum": [None, False]},
    "detokenize": {"enum": [None, True]},
}
TRITON_PARAMETERS = {**{name: properties(COMPLETION)[name] for name in TRITON_NAMES},
                     **TRITON_DEFAULT_ONLY}


def value_kind(schema: dict[str, Any]) -> str | None:
    """The kind of value vLLM converts a string to for this parameter ("number", "integer",
    "boolean" or "object"), or None when it takes strings as they are."""
    for value in schema.get("enum", ()):
        if isinstance(value, bool):
            return "boolean"
        if is_int(value):
            return "integer"
    declared = [k for k in kinds(schema) if k != "null"]
    return declared[0] if len(declared) == 1 else None


def as_vllm_reads(schema: dict[str, Any], value: Any) -> Any:
    """What vLLM's backend makes of a string: ``float()`` or ``int()`` of it for numbers,
    "true"/"false" in any case for booleans, the JSON object it spells for ``logit_bias``.
    Anything else stays as it is (a string where a number is expected: refused)."""
    if not isinstance(value, str):
        return value
    kind = value_kind(schema)
    try:
        if kind == "number":
            return float(value)
        if kind == "integer":
            return int(value)
        if kind == "object":
            return json.loads(value)
    except ValueError:  # not a number, too many digits, or not JSON
        return value
    if kind == "boolean" and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def triton_reads(raw: dict[str, Any]) -> dict[str, Any] | None:
    """The sampling parameters ``raw`` stands for (null: the default, left out), or None when
    Triton must refuse them. Whole floats are integers here: the document's JSON Schema
    ``integer``, as vLLM reads them."""
    read = {}
    for name, value in raw.items():
        if value is None:
            continue
        schema = TRITON_PARAMETERS.get(name)
        if schema is None:
            return None  # README: "a parameter this server does not implement is a 400"
        value = as_vllm_reads(schema, value)
        if not schema_accepts(schema, value):
            return None
        read[name] = value
    if read.get("min_tokens", 0) > read.get("max_tokens", math.inf):
        return None  # min_tokens: "At most ``max_tokens``."
    return read


def spelled(schema: dict[str, Any], values: st.SearchStrategy) -> st.SearchStrategy:
    """``values`` of a number, integer, boolean or ``logit_bias`` parameter, spelled as strings
    the way vLLM's clients send them (others are left as they are)."""
    kind = value_kind(schema)

    def spell(value: Any) -> st.SearchStrategy:
        if kind == "boolean" and isinstance(value, bool):
            return st.sampled_from(["true", "True", "TRUE"] if value else ["false", "False"])
        if kind in ("integer", "number") and (is_int(value) or isinstance(value, float)):
            return st.just(json.dumps(value))
        if kind == "object" and value is not None:
            return st.just(json.dumps(value))
        return st.just(value)

    return values.flatmap(spell)

"""OpenAI's request parameters against the OpenAPI document the server serves, both ways.

For every documented parameter of a chat or a text completion, tried alone: a value the
document's schema accepts is accepted and parsed to what it means; a value just outside it is
refused with a 400 whose ``param`` names it; and for any JSON value the validator decides as
the schema does. A validator that refuses everything, or takes everything, fails here. The
oracle is ``openapi_oracle.py``; the document's own ranges are pinned to OpenAI's and vLLM's
published ones at the end, so a wrong document cannot make a wrong validator pass.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.properties.openapi_oracle import (
    CHAT,
    COMPLETION,
    inside,
    kinds,
    meaning,
    openai_accepts,
    outside,
    properties,
    schema_accepts,
)
from tests.properties.strategies import json_values
from triton_mlx.openai.validation import ChatParams, CompletionParams, parse_chat, parse_completion
from triton_mlx.serving.errors import RequestError

PARSERS = {CHAT: parse_chat, COMPLETION: parse_completion}
BASES = {
    # Bodies in which every parameter can be tried alone: streaming on (``stream_options``
    # needs it) and, for chat, log probabilities on (``top_logprobs`` needs them).
    CHAT: {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
           "logprobs": True},
    COMPLETION: {"model": "m", "prompt": "hi", "stream": True},
}
GRAMMARS = {"response_format", "structured_outputs", "tools"}
NEED_TOOLS = {"tool_choice", "parallel_tool_calls"}
ALONE = {request: sorted(set(properties(request)) - {"messages"} - GRAMMARS - NEED_TOOLS)
         for request in PARSERS}
"""``messages`` has rules across its items, and ``tool_choice`` and ``parallel_tool_calls``
rules with ``tools``: the whole-body properties (test_validators.py) draw them together.
Whether a schema, regex or grammar can be enforced is the grammar compiler's to say, not the
document's: tests/functional/test_structured_output.py covers both sides of those."""

UNREAD = object()
"""What :func:`parsed` gives for a parameter accepted at its no-op values only (``user``,
``best_of``, ``tools``...): nothing of it is kept."""


def parsed(params: ChatParams | CompletionParams, name: str) -> Any:
    """Where a parsed request keeps the parameter ``name``."""
    generation = params.generation
    if name == "max_completion_tokens":
        return generation.max_tokens
    if name in ("logprobs", "top_logprobs"):
        return generation.logprobs
    if name == "prompt":
        return params.prompts
    if name in ("model", "stream", "echo"):
        return getattr(params, name)
    if name == "stream_options":
        return params.include_usage
    return getattr(generation, name, UNREAD)


def outcome(request: str, body: dict[str, Any]) -> ChatParams | CompletionParams | RequestError:
    try:
        return PARSERS[request](body)
    except RequestError as refused:
        return refused


def parameter_and(values) -> st.SearchStrategy:
    """(request, parameter name, value) with value drawn by ``values(schema)``."""
    return st.sampled_from(sorted(PARSERS)).flatmap(
        lambda request: st.sampled_from(ALONE[request]).flatmap(
            lambda name: st.tuples(st.just(request), st.just(name),
                                   values(properties(request)[name]))))


def assert_refused_naming(result: Any, name: str) -> None:
    assert isinstance(result, RequestError), f"accepted: {result}"
    assert result.status == 400 and result.param == name, result


@given(parameter_and(inside))
def test_documented_values_are_accepted_and_mean_what_they_say(case):
    request, name, value = case
    body = {**BASES[request], name: value}
    assert openai_accepts(request, body), "the oracle drew a value outside the schema"
    result = outcome(request, body)
    assert not isinstance(result, RequestError), result
    if value is None:  # null means "not sent"
        without = {k: v for k, v in BASES[request].items() if k != name}
        assert result == PARSERS[request](without)
    elif parsed(result, name) is not UNREAD:
        assert parsed(result, name) == meaning(request, name, value)


@given(parameter_and(outside))
@example((COMPLETION, "best_of", 2))
@example((CHAT, "top_logprobs", 21))
def test_values_outside_the_schema_are_refused_naming_the_parameter(case):
    request, name, value = case
    body = {**BASES[request], name: value}
    assert not openai_accepts(request, body), "the oracle drew a value the schema accepts"
    assert_refused_naming(outcome(request, body), name)


@given(parameter_and(lambda schema: st.one_of(inside(schema), outside(schema), json_values)))
def test_any_value_is_decided_as_the_schema_decides(case):
    request, name, value = case
    body = {**BASES[request], name: value}
    result = outcome(request, body)
    if openai_accepts(request, body):
        assert not isinstance(result, RequestError), result
    else:
        assert_refused_naming(result, name)


@given(st.sampled_from(sorted(PARSERS)), st.text(min_size=1, max_size=12), json_values)
def test_undocumented_parameters_are_refused_naming_them(request, name, value):
    if name in properties(request):
        return
    assert_refused_naming(outcome(request, {**BASES[request], name: value}), name)


@given(st.sampled_from([(CHAT, "max_tokens"), (CHAT, "max_completion_tokens"),
                        (COMPLETION, "max_tokens")]),
       st.integers(0, 40), st.integers(1, 40))
def test_min_tokens_is_at_most_max_tokens(where, min_tokens, max_tokens):
    request, limit = where
    body = {**BASES[request], "min_tokens": min_tokens, limit: max_tokens}
    result = outcome(request, body)
    if min_tokens <= max_tokens:
        assert not isinstance(result, RequestError), result
        assert result.generation.min_tokens == min_tokens
        assert result.generation.max_tokens == max_tokens
    else:
        assert_refused_naming(result, "min_tokens")


@given(st.integers(1, 40), st.integers(1, 40))
def test_max_tokens_and_max_completion_tokens_must_agree(max_tokens, max_completion_tokens):
    body = {**BASES[CHAT], "max_tokens": max_tokens,
            "max_completion_tokens": max_completion_tokens}
    result = outcome(CHAT, body)
    if max_tokens == max_completion_tokens:
        assert not isinstance(result, RequestError), result
        assert result.generation.max_tokens == max_tokens
    else:
        assert_refused_naming(result, "max_completion_tokens")


@pytest.mark.parametrize("body, name", [
    ({"stream": False, "stream_options": {"include_usage": True}}, "stream_options"),
    ({"logprobs": False, "top_logprobs": 2}, "top_logprobs"),
])
def test_chat_parameters_that_need_another(body, name):
    alone = {**BASES[CHAT], **body}
    assert not openai_accepts(CHAT, alone)
    assert_refused_naming(outcome(CHAT, alone), name)
    together = {**BASES[CHAT], name: body[name]}
    assert openai_accepts(CHAT, together)
    assert not isinstance(outcome(CHAT, together), RequestError)


def test_echo_excludes_logprobs():
    body = {**BASES[COMPLETION], "echo": True, "logprobs": 1}
    assert not openai_accepts(COMPLETION, body)
    assert_refused_naming(outcome(COMPLETION, body), "echo")
    assert outcome(COMPLETION, {**body, "echo": False}).generation.logprobs == 1


# ----- the document's ranges are the published ones ----------------------------------------

PUBLISHED = [
    # OpenAI's API reference.
    ("temperature", {"minimum": 0, "maximum": 2}),
    ("top_p", {"minimum": 0, "maximum": 1}),
    ("frequency_penalty", {"minimum": -2, "maximum": 2}),
    ("presence_penalty", {"minimum": -2, "maximum": 2}),
    ("n", {"minimum": 1}),
    ("max_tokens", {"minimum": 1}),
    # vLLM's extensions (its SamplingParams).
    ("ignore_eos", {}),
    ("min_tokens", {"minimum": 0}),
    ("top_k", {"minimum": -1}),
    ("min_p", {"minimum": 0, "maximum": 1}),
    ("repetition_penalty", {"exclusiveMinimum": 0}),
]
TYPES = {"ignore_eos": "boolean", "min_tokens": "integer", "n": "integer", "top_k": "integer",
         "max_tokens": "integer"}


@pytest.mark.parametrize("request_name", [CHAT, COMPLETION])
@pytest.mark.parametrize("name, bounds", PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_the_document_states_the_published_ranges(request_name, name, bounds):
    schema = properties(request_name)[name]
    assert {k: schema.get(k) for k in bounds} == bounds
    assert set(kinds(schema)) == {TYPES.get(name, "number"), "null"}


@pytest.mark.parametrize("request_name", [CHAT, COMPLETION])
def test_logit_bias_is_documented_as_openai_states_it(request_name):
    schema = properties(request_name)["logit_bias"]
    assert schema_accepts(schema, {"50256": -100, "1": 100})
    assert not schema_accepts(schema, {"50256": -101})
    assert not schema_accepts(schema, {"x": 1})


def test_top_logprobs_is_documented_as_openai_states_it():
    schema = properties(CHAT)["top_logprobs"]
    assert (schema["minimum"], schema["maximum"]) == (0, 20)

"""Triton's sampling parameters (vLLM's names) against the OpenAPI document's ranges, both ways.

The README says they have the OpenAI API's ranges and defaults, that numbers may be sent as
strings (as vLLM's own sample client does) and that null means the default. So for each one,
sent natively or as a string: a value the schema accepts is accepted and read as what it means,
a value outside it is refused with a 400 naming it, and any value is decided as the schema
decides (``openapi_oracle.triton_reads``).
"""

from __future__ import annotations

from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from tests.properties.openapi_oracle import (
    COMPLETION,
    TRITON_PARAMETERS,
    inside,
    meaning,
    outside,
    spelled,
    triton_reads,
)
from tests.properties.strategies import json_values
from triton_mlx.serving.parameters import GenerationParams
from triton_mlx.triton.errors import TritonError
from triton_mlx.triton.sampling import generation_params

SOURCE = "sampling_parameters"


def outcome(raw: dict[str, Any]) -> GenerationParams | TritonError:
    try:
        return generation_params(raw, SOURCE)
    except TritonError as refused:
        return refused


def assert_refused_naming(result: Any, name: str) -> None:
    assert isinstance(result, TritonError), f"accepted: {result}"
    assert result.status == 400 and name in result.message, result.message


def parameter_and(values) -> st.SearchStrategy:
    """(parameter name, value) with value drawn by ``values(name)``."""
    return st.sampled_from(sorted(TRITON_PARAMETERS)).flatmap(
        lambda name: st.tuples(st.just(name), values(name)))


def accepted_values(name: str) -> st.SearchStrategy:
    schema = TRITON_PARAMETERS[name]
    return st.one_of(inside(schema), spelled(schema, inside(schema)))


def refused_values(name: str) -> st.SearchStrategy:
    """Outside the schema, natively or spelled; a spelling vLLM reads as a valid value (``"1"``
    for ``n``) is left to the other side."""
    schema = TRITON_PARAMETERS[name]
    values = st.one_of(outside(schema), spelled(schema, outside(schema)),
                       st.sampled_from(["yes", "1", "", "x", "0.5.1"]))
    return values.filter(lambda value: triton_reads({name: value}) is None)


@given(parameter_and(accepted_values))
@example(("temperature", "0.5")).via("vLLM's sample client")
@example(("max_tokens", "100")).via("vLLM's sample client")
@example(("ignore_eos", "true"))
@example(("max_tokens", 100.0)).via("a whole float")
def test_documented_values_are_accepted_and_mean_what_they_say(case):
    name, value = case
    read = triton_reads({name: value})
    assert read is not None, "the oracle drew a value outside the schema"
    result = outcome({name: value})
    assert not isinstance(result, TritonError), result.message
    if value is None:
        assert result == generation_params({}, SOURCE)
    elif hasattr(result, name):
        assert getattr(result, name) == meaning(COMPLETION, name, read[name])


@given(parameter_and(refused_values))
@example(("temperature", "2.5")).via("a string out of range")
@example(("max_tokens", "0"))
@example(("max_tokens", "9" * 5000))
@example(("n", "2"))
@example(("ignore_eos", "yes"))
def test_values_outside_the_schema_are_refused_naming_the_parameter(case):
    name, value = case
    assert_refused_naming(outcome({name: value}), name)


@given(parameter_and(lambda name: json_values))
def test_any_value_is_decided_as_the_schema_decides(case):
    name, value = case
    result = outcome({name: value})
    if triton_reads({name: value}) is None:
        assert_refused_naming(result, name)
    else:
        assert not isinstance(result, TritonError), result.message


@given(st.text(min_size=1, max_size=12), json_values)
def test_parameters_this_server_does_not_implement_are_refused_unless_null(name, value):
    if name in TRITON_PARAMETERS:
        return
    result = outcome({name: value})
    if value is None:  # null means the default, for any name
        assert result == generation_params({}, SOURCE)
    else:
        assert_refused_naming(result, name)


@given(st.integers(0, 40), st.integers(1, 40), st.booleans())
def test_min_tokens_is_at_most_max_tokens(min_tokens, max_tokens, strings):
    raw = {"min_tokens": min_tokens, "max_tokens": max_tokens}
    result = outcome({k: str(v) for k, v in raw.items()} if strings else raw)
    if min_tokens <= max_tokens:
        assert not isinstance(result, TritonError), result.message
        assert (result.min_tokens, result.max_tokens) == (min_tokens, max_tokens)
    else:
        assert_refused_naming(result, "min_tokens")

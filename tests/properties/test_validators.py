"""Whole request bodies through the validators of both front-ends, called directly (no sockets).

Many parameters at once, well-formed or not, and any JSON value as a body: the validator
accepts exactly what the OpenAPI document's schemas accept (``openapi_oracle.py``), and refuses
the rest with a 400 naming a parameter the body holds (or a required one it lacks), never with
another exception, which would reach the client as a 500. Past validation, the model's limits:
the length to generate and the sampling settings, as the parameters' descriptions state them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from types import SimpleNamespace
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from tests.properties.openapi_oracle import (
    CHAT,
    COMPLETION,
    EMBEDDING,
    TRITON_PARAMETERS,
    holds_float,
    meaning,
    openai_accepts,
    properties,
    schema_accepts,
    triton_reads,
)
from tests.properties.strategies import TEXT, around, int_near, json_values, number_near
from triton_mlx.config import ServerConfig
from triton_mlx.openai.embeddings import MAX_INPUTS, _inputs
from triton_mlx.openai.errors import error_body
from triton_mlx.openai.validation import MAX_PROMPTS, ChatParams, parse_chat, parse_completion
from triton_mlx.serving.errors import RequestError
from triton_mlx.serving.parameters import (
    MAX_CHOICES,
    MAX_LOGPROBS,
    MAX_STOP_STRINGS,
    GenerationParams,
)
from triton_mlx.serving.requests import resolve_max_tokens, sampling_params
from triton_mlx.triton import sampling
from triton_mlx.triton.errors import TritonError
from triton_mlx.triton.inference import request_sampling_parameters

# ----- strategies of request bodies ----------------------------------------------------------

texts = st.text(max_size=12)
tokens = st.integers(min_value=-2, max_value=300)
stop_values = st.one_of(texts, st.lists(texts, max_size=MAX_STOP_STRINGS + 2))
logit_bias = st.dictionaries(
    st.one_of(st.integers(-5, 300).map(str), texts), number_near(-100, 100), max_size=4
)
content_parts = st.lists(
    st.fixed_dictionaries({"type": around(st.just("text")), "text": around(texts)}), max_size=3
)
message = st.fixed_dictionaries(
    {"role": around(st.sampled_from(["system", "developer", "user", "assistant", "tool"]))},
    optional={
        "content": around(st.one_of(texts, content_parts, st.none())),
        "name": around(texts),
        "tool_calls": json_values,
        "tool_call_id": around(texts),
        "reasoning_content": around(texts),
    },
)
COMMON = {
    "temperature": around(number_near(0, 2)),
    "top_p": around(number_near(0, 1)),
    "top_k": around(int_near(-1, 100)),
    "min_p": around(number_near(0, 1)),
    "max_tokens": around(int_near(1, 60)),
    "min_tokens": around(int_near(0, 60)),
    "ignore_eos": around(st.booleans()),
    "stop": around(stop_values),
    "stream": around(st.booleans()),
    "stream_options": around(st.fixed_dictionaries({}, optional={
        "include_usage": around(st.booleans()), "other": json_values})),
    "frequency_penalty": around(number_near(-2, 2)),
    "presence_penalty": around(number_near(-2, 2)),
    "repetition_penalty": around(number_near(0, 10)),
    "seed": around(st.one_of(st.integers(), st.sampled_from([-(2**63), 2**64 - 1, 2**64]))),
    "logit_bias": around(logit_bias),
    "user": around(texts),
    "n": around(int_near(1, MAX_CHOICES)),
    "unknown_parameter": json_values,
}
TOOL_LISTS = [
    [],
    [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}],
    [{"type": "function", "function": {"name": "a", "description": "A.", "strict": True}},
     {"type": "function", "function": {"name": "b-2", "parameters": None}}],
    [{"type": "function", "function": {"name": "no spaces allowed"}}],
]
"""Tools whose schemas the grammar compiler takes (whether one compiles is its to say, not the
document's: tests/functional/test_tools.py covers that), and a few the document refuses."""
chat_bodies = st.fixed_dictionaries(
    {"model": around(texts), "messages": around(st.lists(message, max_size=3))},
    optional={
        **COMMON,
        "max_completion_tokens": around(int_near(1, 60)),
        "logprobs": around(st.booleans()),
        "top_logprobs": around(int_near(0, MAX_LOGPROBS)),
        "response_format": around(st.sampled_from([{"type": "text"}, {"type": "json_object"}])),
        "tools": around(st.one_of(st.sampled_from(TOOL_LISTS), json_values)),
        "tool_choice": around(st.sampled_from(["none", "auto", "required"])),
        "parallel_tool_calls": around(st.booleans()),
        "chat_template_kwargs": around(st.dictionaries(texts, json_values, max_size=2)),
        "reasoning_effort": around(st.sampled_from(["low", "high", "extreme"])),
    },
)
prompts = st.one_of(
    texts,
    st.lists(texts, max_size=MAX_PROMPTS + 2),
    st.lists(tokens, max_size=6),
    st.lists(st.lists(tokens, max_size=4), max_size=4),
    st.lists(st.one_of(texts, tokens), max_size=4),
)
completion_bodies = st.fixed_dictionaries(
    {"model": around(texts), "prompt": around(prompts)},
    optional={
        **COMMON,
        "logprobs": around(int_near(0, MAX_LOGPROBS)),
        "echo": around(st.booleans()),
        "best_of": around(int_near(1, 3)),
        "suffix": around(st.one_of(st.none(), texts)),
    },
)


# ----- OpenAI --------------------------------------------------------------------------------

def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def assert_refused_for_a_parameter_of(result: Any, body: Any, request: str) -> None:
    """A 400 whose ``param`` names a parameter of ``body``, or a required one it lacks."""
    assert isinstance(result, RequestError), f"accepted: {result}"
    assert result.status == 400, result
    json.dumps(error_body(result))  # the error body itself must serialize
    if not isinstance(body, dict):
        assert result.param is None, result
        return
    if result.param not in body:  # an unknown key is named as sent, dots and all
        named = re.split(r"[.\[]", result.param or "")[0]  # "messages[0].role": messages
        assert named in set(body) | set(COMPONENTS_REQUIRED[request]), result


COMPONENTS_REQUIRED = {CHAT: ("model", "messages"), COMPLETION: ("model", "prompt")}
USER = [{"role": "user", "content": "hi"}]


def outcome(parse, body: Any) -> Any:
    try:
        return parse(body)
    except RequestError as refused:
        return refused


@given(st.one_of(chat_bodies, json_values))
@example({"model": "m", "messages": USER, "temperature": 10**400})
@example({"model": "m", "messages": [{"role": ["user"], "content": "hi"}]})
@example({"model": "m", "messages": USER, "logit_bias": {"²": 1, "1": 10**400}})
@example({"model": "m", "messages": USER, "max_tokens": 5, "min_tokens": 6})
def test_chat_bodies_are_accepted_exactly_when_the_document_says(body):
    result = outcome(parse_chat, body)
    if not openai_accepts(CHAT, body):
        assert_refused_for_a_parameter_of(result, body, CHAT)
        return
    assert isinstance(result, ChatParams), result
    assert result.model == body["model"] and len(result.messages) == len(body["messages"])
    for sent, entry in zip(body["messages"], result.messages, strict=True):
        assert entry["role"] == ("system" if sent["role"] == "developer" else sent["role"])
        content = sent.get("content") or ("" if not sent.get("tool_calls") else None)
        if isinstance(content, list):
            content = "".join(part["text"] for part in content)
        assert entry["content"] == content
    assert_generation_matches(CHAT, body, result.generation)


@given(st.one_of(completion_bodies, json_values))
def test_completion_bodies_are_accepted_exactly_when_the_document_says(body):
    result = outcome(parse_completion, body)
    if not openai_accepts(COMPLETION, body):
        assert_refused_for_a_parameter_of(result, body, COMPLETION)
        return
    assert not isinstance(result, RequestError), result
    assert result.prompts == meaning(COMPLETION, "prompt", body["prompt"])
    assert result.echo is bool(body.get("echo"))
    assert result.generation.logprobs == body.get("logprobs")
    assert_generation_matches(COMPLETION, body, result.generation)


GENERATION = {field.name for field in dataclasses.fields(GenerationParams)} - {"logprobs"}
"""The parameters read into :class:`GenerationParams` under their own name (``logprobs`` is
read from two parameters, checked by each test)."""


def assert_generation_matches(request: str, body: dict, generation: GenerationParams) -> None:
    """Every generation parameter the body sends is read as what it means."""
    for name, value in body.items():
        if value is not None and name in GENERATION:
            assert getattr(generation, name) == meaning(request, name, value), name


def test_a_token_id_longer_than_any_vocabulary_is_refused_naming_logit_bias():
    result = outcome(parse_chat, {"model": "m", "messages": USER,
                                  "logit_bias": {"9" * 5000: 1}})
    assert isinstance(result, RequestError) and result.param == "logit_bias"


embedding_inputs = st.one_of(
    texts,
    st.lists(texts, max_size=5),
    st.lists(tokens, max_size=5),
    st.lists(st.lists(tokens, max_size=4), max_size=4),
    st.lists(st.one_of(texts, tokens, st.lists(tokens, max_size=2)), max_size=4),
    json_values,
)


@given(embedding_inputs)
@example(["x"] * MAX_INPUTS)
@example(["x"] * (MAX_INPUTS + 1))
@example([[1]] * (MAX_INPUTS + 1))
@example([1] * (MAX_INPUTS + 1))
def test_embedding_inputs_are_accepted_exactly_when_the_document_says(value):
    result = outcome(_inputs, value)
    # "input" expects integers (token ids): a float there is refused (info.description).
    if not schema_accepts(properties(EMBEDDING)["input"], value) or holds_float(value):
        assert isinstance(result, RequestError) and result.param == "input", result
        return
    assert not isinstance(result, RequestError), result
    texts_out, ids_out = result
    if isinstance(value, str) or all(isinstance(item, str) for item in value):
        assert texts_out == ([value] if isinstance(value, str) else value) and ids_out is None
    else:
        assert texts_out is None
        assert ids_out == ([value] if all(is_int(t) for t in value) else value)


# ----- past validation: the model's limits ----------------------------------------------------

def expected_length(model, params: GenerationParams, prompt_length: int,
                    default: int) -> int | str:
    """The tokens to generate, or the parameter a 400 names, as the descriptions state it:
    max_tokens "defaults to --default-max-tokens trimmed to the model. Beyond the model's
    max_tokens or its context: 400"; min_tokens is "at most max_tokens"."""
    context, limit = model.context_length, model.max_tokens_limit
    room = math.inf if context is None else context - prompt_length
    if room < 1:
        return "prompt"  # the prompt alone fills the context
    if params.max_tokens is not None:
        fits = params.max_tokens <= min(room, limit or math.inf)
        return params.max_tokens if fits else "max_tokens"
    trimmed = int(min(default, room, limit or math.inf))
    return trimmed if params.min_tokens <= trimmed else "min_tokens"


generation_settings = st.builds(
    GenerationParams,
    temperature=st.one_of(st.none(), st.floats(0, 2)),
    max_tokens=st.one_of(st.none(), st.integers(1, 80)),
    min_tokens=st.integers(0, 80),
    logit_bias=st.dictionaries(st.integers(0, 500), st.floats(-100, 100), max_size=3),
).filter(lambda p: p.max_tokens is None or p.min_tokens <= p.max_tokens)


@given(
    params=generation_settings,
    vocab=st.integers(1, 400),
    context=st.one_of(st.none(), st.integers(1, 64)),
    limit=st.one_of(st.none(), st.integers(1, 64)),
    default_temperature=st.one_of(st.none(), st.floats(0, 2)),
    default_max=st.integers(1, 512),
    prompt_length=st.integers(1, 80),
)
def test_the_model_limits_decide_the_length_and_the_sampling_settings(
    params, vocab, context, limit, default_temperature, default_max, prompt_length
):
    model = SimpleNamespace(vocab_size=vocab, context_length=context, max_tokens_limit=limit,
                            default_temperature=default_temperature)
    config = ServerConfig(model_repository=".", default_max_tokens=default_max)
    expected = expected_length(model, params, prompt_length, default_max)
    length = outcome(lambda p: resolve_max_tokens(model, p, prompt_length, config), params)
    if isinstance(expected, str):
        assert isinstance(length, RequestError) and length.param == expected, length
    else:
        assert length == expected
    settings = outcome(lambda p: sampling_params(model, p), params)
    if any(token >= vocab for token in params.logit_bias):
        assert isinstance(settings, RequestError) and settings.param == "logit_bias", settings
        return
    assert settings.logit_bias == params.logit_bias
    # temperature: "Defaults to the model's default_temperature, else 1."
    fallback = 1.0 if default_temperature is None else default_temperature
    assert settings.temperature == (fallback if params.temperature is None
                                    else params.temperature)


# ----- Triton --------------------------------------------------------------------------------

def spelled_as_strings(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """vLLM's clients send numbers as strings too."""
    return strategy.map(lambda v: v if isinstance(v, str) else json.dumps(v))


SAMPLING = {
    **{name: COMMON[name] for name in TRITON_PARAMETERS if name in COMMON},
    "max_tokens": around(st.one_of(int_near(1, 60), spelled_as_strings(int_near(1, 60)))),
    "frequency_penalty": around(spelled_as_strings(number_near(-2, 2))),
    "logit_bias": around(st.one_of(logit_bias, spelled_as_strings(logit_bias), st.dictionaries(
        st.sampled_from(["²", "--5", "+5", " 7 ", "1_0", "٣", "9" * 5000, "-0"]),
        number_near(-100, 100), max_size=2))),
    "n": around(st.sampled_from([1, "1", 2, 1.0])),
    "best_of": around(st.sampled_from([1, 2])),
    "ignore_eos": around(st.sampled_from([False, "false", "True", True, "yes"])),
    "min_tokens": around(st.one_of(int_near(0, 60), spelled_as_strings(int_near(0, 60)))),
    "include_stop_str_in_output": around(st.booleans()),
    "detokenize": around(st.booleans()),
    "use_beam_search": json_values,
}
sampling_dicts = st.fixed_dictionaries({}, optional=SAMPLING)


def triton_outcome(raw: dict[str, Any], source: str) -> GenerationParams | TritonError:
    try:
        return sampling.generation_params(raw, source)
    except TritonError as refused:
        return refused


def assert_triton_decides(raw: dict[str, Any], result: Any) -> None:
    """Accepted, each parameter read as what it means, exactly when the document says so;
    otherwise a 400 naming one of the parameters sent."""
    read = triton_reads(raw)
    if read is None:
        assert isinstance(result, TritonError), f"accepted: {result}"
        assert result.status == 400
        assert any(name in result.message for name, v in raw.items() if v is not None)
        return
    assert not isinstance(result, TritonError), result.message
    for name, value in read.items():
        if hasattr(result, name):
            assert getattr(result, name) == meaning(COMPLETION, name, value), name


@given(st.one_of(sampling_dicts, st.dictionaries(TEXT, json_values, max_size=4)))
@example({"temperature": 10**400})
@example({"top_p": -(10**4000)})
@example({"logit_bias": {"²": 1}})
@example({"logit_bias": '{"1": ' + "1" * 5000 + "}"})
@example({"max_tokens": "9" * 5000})
@example({"n": 10**400})
@example({"seed": 1e300})
@example({"ignore_eos": "TRUE"})
def test_triton_sampling_parameters_are_accepted_exactly_when_the_document_says(raw):
    assert_triton_decides(raw, triton_outcome(raw, "sampling_parameters"))


@given(sampling_dicts)
def test_triton_sampling_parameters_as_json_text(raw):
    text = json.dumps(raw)
    assert json.dumps(sampling.parse_json_parameters(text)) == text  # NaN != NaN
    assert_triton_decides(raw, triton_outcome(raw, "sampling_parameters"))


TRITON_OWN = ["sequence_id", "priority", "timeout", "sequence_start", "sequence_end",
              "binary_data_output", "triton_x", "headers"]
request_parameters = st.dictionaries(
    st.one_of(st.sampled_from(TRITON_OWN), st.sampled_from(sorted(SAMPLING)), TEXT),
    st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(["", "0", "x"])),
    max_size=4,
)


@given(request_parameters)
def test_triton_request_parameters_feed_the_sampling_parameters(parameters):
    """Without the sampling_parameters input, the request's own parameters are read instead,
    Triton's (``binary_data_output``, sequences...) taken out first."""
    try:
        raw = request_sampling_parameters(parameters)
    except TritonError as refused:
        assert refused.status == 400 and set(parameters) & set(TRITON_OWN), refused.message
        return
    assert not set(raw) & set(TRITON_OWN)
    assert raw == {k: v for k, v in parameters.items() if k not in TRITON_OWN}
    assert_triton_decides(raw, triton_outcome(raw, "parameters"))

"""Properties of the request validators of both front-ends, called directly (no sockets).

For any JSON-like input a validator either accepts it and returns well-typed values within the
documented bounds, or raises the front-end's own error with a 4xx status. Anything else (a
``TypeError``, ``OverflowError``, ``ValueError`` ...) would reach the client as a 500.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from tests.properties.strategies import (
    TEXT,
    around,
    int_near,
    json_values,
    number_near,
)
from triton_mlx.config import ServerConfig
from triton_mlx.http import BodyDecodeError, Headers, Request
from triton_mlx.openai import generation as gen
from triton_mlx.openai.embeddings import MAX_INPUTS, _inputs
from triton_mlx.openai.errors import OpenAIError
from triton_mlx.openai.validation import (
    MAX_CHOICES,
    MAX_LOGPROBS,
    MAX_PROMPTS,
    MAX_STOP_STRINGS,
    ChatParams,
    CompletionParams,
    GenerationParams,
    parse_chat,
    parse_completion,
)
from triton_mlx.triton import sampling, signature, tensors
from triton_mlx.triton.app import _model_path
from triton_mlx.triton.errors import TritonError
from triton_mlx.triton.generate_request import parse_generate
from triton_mlx.triton.inference import request_sampling_parameters

# ----- helpers -----------------------------------------------------------------------------


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any, low: float, high: float) -> bool:
    return isinstance(value, float) and math.isfinite(value) and low <= value <= high


def valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def assert_client_error(exc: OpenAIError | TritonError) -> None:
    assert 400 <= exc.status < 500, (exc.status, exc.message)
    assert isinstance(exc.message, str) and exc.message
    json.dumps(exc.body())  # the error body itself must serialize


def assert_generation_params(p: GenerationParams) -> None:
    """The documented bounds of every shared sampling and length parameter."""
    assert isinstance(p.model, str) and p.model
    assert p.temperature is None or is_real(p.temperature, 0.0, 2.0)
    assert is_real(p.top_p, 0.0, 1.0)
    assert is_int(p.top_k) and p.top_k >= 0
    assert is_real(p.min_p, 0.0, 1.0)
    assert p.max_tokens is None or (is_int(p.max_tokens) and p.max_tokens >= 1)
    assert isinstance(p.stop, list) and len(p.stop) <= MAX_STOP_STRINGS
    assert all(isinstance(s, str) and s for s in p.stop)
    assert isinstance(p.stream, bool) and isinstance(p.include_usage, bool)
    assert p.stream or not p.include_usage
    assert is_real(p.frequency_penalty, -2.0, 2.0)
    assert is_real(p.presence_penalty, -2.0, 2.0)
    assert is_real(p.repetition_penalty, 0.0, 10.0) and p.repetition_penalty > 0
    assert p.seed is None or (is_int(p.seed) and -(2**63) <= p.seed <= 2**64 - 1)
    for token, weight in p.logit_bias.items():
        assert is_int(token) and token >= 0
        assert is_real(weight, -100.0, 100.0)
    assert is_int(p.n) and 1 <= p.n <= MAX_CHOICES
    assert p.logprobs is None or (is_int(p.logprobs) and 0 <= p.logprobs <= MAX_LOGPROBS)


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
    },
)

COMMON = {
    "temperature": around(number_near(0, 2)),
    "top_p": around(number_near(0, 1)),
    "top_k": around(int_near(-1, 100)),
    "min_p": around(number_near(0, 1)),
    "max_tokens": around(int_near(1)),
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
chat_bodies = st.fixed_dictionaries(
    {"model": around(texts), "messages": around(st.lists(message, max_size=3))},
    optional={
        **COMMON,
        "max_completion_tokens": around(int_near(1)),
        "logprobs": around(st.booleans()),
        "top_logprobs": around(int_near(0, MAX_LOGPROBS)),
        "response_format": around(st.sampled_from([{"type": "text"}, {"type": "json_object"}])),
        "tools": json_values,
        "tool_choice": around(st.sampled_from(["none", "auto"])),
        "parallel_tool_calls": json_values,
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


USER = [{"role": "user", "content": "hi"}]


@given(st.one_of(chat_bodies, json_values))
@example({"model": "m", "messages": USER, "temperature": 10**400})
@example({"model": "m", "messages": [{"role": ["user"], "content": "hi"}]})
@example({"model": "m", "messages": USER, "logit_bias": {"9" * 5000: 1}})
@example({"model": "m", "messages": USER, "logit_bias": {"²": 1, "1": 10**400}})
def test_chat_validation_accepts_in_bounds_or_answers_400(body):
    try:
        params = parse_chat(body)
    except OpenAIError as exc:
        assert_client_error(exc)
        return
    assert isinstance(params, ChatParams)
    assert_generation_params(params)
    assert params.messages
    for entry in params.messages:
        assert entry["role"] in {"system", "user", "assistant", "tool"}
        assert isinstance(entry["content"], str)
        assert set(entry) <= {"role", "content", "name"}
        assert isinstance(entry.get("name", ""), str)


@given(st.one_of(completion_bodies, json_values))
def test_completion_validation_accepts_in_bounds_or_answers_400(body):
    try:
        params = parse_completion(body)
    except OpenAIError as exc:
        assert_client_error(exc)
        return
    assert isinstance(params, CompletionParams)
    assert_generation_params(params)
    assert 1 <= len(params.prompts) <= MAX_PROMPTS
    for prompt in params.prompts:
        assert isinstance(prompt, str) or (
            isinstance(prompt, list) and prompt and all(is_int(t) and t >= 0 for t in prompt)
        )
    assert isinstance(params.echo, bool)
    assert not (params.echo and params.logprobs is not None)


def fake_model(vocab: int, context: int | None, limit: int | None, temperature: float | None):
    return SimpleNamespace(vocab_size=vocab, context_length=context, max_tokens_limit=limit,
                           default_temperature=temperature)


@given(
    body=completion_bodies,
    vocab=st.integers(1, 400),
    context=st.one_of(st.none(), st.integers(1, 64)),
    limit=st.one_of(st.none(), st.integers(1, 64)),
    default_max=st.integers(1, 512),
    prompt_length=st.integers(1, 80),
)
def test_length_and_sampling_resolution_stays_within_the_model_limits(
    body, vocab, context, limit, default_max, prompt_length
):
    """Past validation, the model's limits: a max_tokens that fits, or a 400 saying why."""
    try:
        params = parse_completion(body)
    except OpenAIError:
        return
    model = fake_model(vocab, context, limit, None)
    config = ServerConfig(model_repository=".", default_max_tokens=default_max)
    try:
        max_tokens = gen.resolve_max_tokens(model, params, prompt_length, config)
        settings = gen.sampling_params(model, params)
    except OpenAIError as exc:
        assert_client_error(exc)
        return
    assert is_int(max_tokens) and max_tokens >= 1
    if context is not None:
        assert prompt_length + max_tokens <= context
    if limit is not None:
        assert max_tokens <= limit
    if params.max_tokens is not None:
        assert max_tokens == params.max_tokens
    assert all(0 <= t < vocab for t in settings.logit_bias)
    assert is_real(settings.temperature, 0.0, 2.0)


embedding_inputs = st.one_of(
    texts,
    st.lists(texts, max_size=5),
    st.lists(tokens, max_size=5),
    st.lists(st.lists(tokens, max_size=4), max_size=4),
    st.lists(st.one_of(texts, tokens, st.lists(tokens, max_size=2)), max_size=4),
    json_values,
)


@given(embedding_inputs)
def test_embedding_inputs_are_texts_or_token_lists_or_400(value):
    try:
        texts_out, ids_out = _inputs(value)
    except OpenAIError as exc:
        assert_client_error(exc)
        return
    assert (texts_out is None) != (ids_out is None)
    items = texts_out if texts_out is not None else ids_out
    assert 1 <= len(items) <= MAX_INPUTS
    if texts_out is not None:
        assert all(isinstance(t, str) and t for t in texts_out)
    else:
        assert all(isinstance(ids, list) and ids for ids in ids_out)
        assert all(is_int(t) and t >= 0 for ids in ids_out for t in ids)


# ----- JSON decoding, the entry point of every body ------------------------------------------

def json_texts() -> st.SearchStrategy[bytes]:
    """Bodies near JSON: valid documents, numbers with thousands of digits, lone surrogate
    escapes, deep nesting, broken UTF-8, and arbitrary bytes."""
    documents = json_values.map(lambda v: json.dumps(v, ensure_ascii=False))
    tricky = st.sampled_from([
        "1" * 5000, "-" + "9" * 4301, '{"temperature": ' + "1" * 4400 + "}",
        '"\\ud800"', '{"a": "x\\udfff"}', '["\\ud83d\\ude00"]', '{"\\ud800": 1}',
        "[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000,
        "NaN", "-Infinity", "1e999", '"\\u0000"', "",
    ])
    text = st.one_of(documents, tricky).map(lambda s: s.encode("utf-8"))
    return st.one_of(text, st.binary(max_size=64), text.map(lambda b: b[:-1] + b"\xff"))


def strings_in(value: Any) -> list[str]:
    found, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
    return found


def request_with(body: bytes, version: str | None = None) -> Request:
    request = Request(method="POST", path="/", raw_path="/", query={}, headers=Headers(),
                      body=body, request_id="p", client=None, http_version="1.1")
    request.path_params = {"model": "m"} if version is None else {"model": "m",
                                                                     "version": version}
    return request


TRICKY_JSON = [b"1" * 5000, b'{"a": -' + b"9" * 4400 + b"}", b'"\\ud800"', b'["\\udc00x"]',
               b'{"\\ud800": 1}', b"[" * 5000 + b"]" * 5000]


def with_examples(*values):
    """Pin regressions as explicit examples, run on every profile."""
    def decorate(test):
        for value in values:
            test = example(value)(test)
        return test
    return decorate


@given(json_texts())
@with_examples(*TRICKY_JSON)
def test_request_json_decodes_or_raises_body_decode_error(body):
    try:
        value = request_with(body).json()
    except BodyDecodeError as exc:
        assert str(exc)
        return
    assert all(valid_unicode(s) for s in strings_in(value)), "a lone surrogate got through"


@given(json_texts())
@with_examples(*TRICKY_JSON)
def test_triton_json_decodes_or_raises_400(body):
    for parse in (tensors.parse_json, lambda b: sampling.parse_json_parameters(
            b.decode("utf-8", "replace"))):
        try:
            value = parse(body)
        except TritonError as exc:
            assert_client_error(exc)
            continue
        assert all(valid_unicode(s) for s in strings_in(value)), "a lone surrogate got through"


# ----- Triton --------------------------------------------------------------------------------

def as_string(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """vLLM's clients send numbers as strings too."""
    return strategy.map(lambda v: v if isinstance(v, str) else json.dumps(v))


SAMPLING = {
    "temperature": around(number_near(0, 2)),
    "top_p": around(number_near(0, 1)),
    "top_k": around(int_near(-1, 100)),
    "min_p": around(number_near(0, 1)),
    "max_tokens": around(st.one_of(int_near(1), as_string(int_near(1)))),
    "stop": around(stop_values),
    "seed": around(st.integers()),
    "frequency_penalty": around(as_string(number_near(-2, 2))),
    "presence_penalty": around(number_near(-2, 2)),
    "repetition_penalty": around(number_near(0, 10)),
    "logit_bias": around(st.one_of(logit_bias, as_string(logit_bias), st.dictionaries(
        st.sampled_from(["²", "--5", "+5", " 7 ", "1_0", "٣", "9" * 5000, "-0"]),
        number_near(-100, 100), max_size=2))),
    "n": around(st.sampled_from([1, "1", 2, 1.0])),
    "best_of": around(st.sampled_from([1, 2])),
    "ignore_eos": around(st.sampled_from([False, "false", "True", True])),
    "min_tokens": around(int_near(0, 2)),
    "include_stop_str_in_output": around(st.booleans()),
    "detokenize": around(st.booleans()),
    "use_beam_search": json_values,
}
sampling_dicts = st.fixed_dictionaries({}, optional=SAMPLING)


@given(st.one_of(sampling_dicts, st.dictionaries(TEXT, json_values, max_size=4)))
@with_examples({"temperature": 10**400}, {"top_p": -(10**4000)}, {"logit_bias": {"²": 1}},
               {"logit_bias": {"--5": 1}}, {"logit_bias": {"9" * 5000: 1}},
               {"logit_bias": '{"1": ' + "1" * 5000 + "}"}, {"max_tokens": "9" * 5000},
               {"n": 10**400}, {"seed": 1e300}, {"ignore_eos": "TRUE"})
def test_triton_sampling_parameters_accept_in_bounds_or_answer_400(raw):
    try:
        params = sampling.generation_params("m", raw, "sampling_parameters")
    except TritonError as exc:
        assert_client_error(exc)
        return
    assert_generation_params(params)


@given(sampling_dicts.map(json.dumps) | st.text(max_size=40))
def test_triton_sampling_parameters_json_text(text):
    try:
        raw = sampling.parse_json_parameters(text)
        params = sampling.generation_params("m", raw, "sampling_parameters")
    except TritonError as exc:
        assert_client_error(exc)
        return
    assert_generation_params(params)


request_parameters = st.dictionaries(
    st.one_of(st.sampled_from(["sequence_id", "priority", "timeout", "sequence_start",
                               "sequence_end", "binary_data_output", "triton_x", "headers"]),
              st.sampled_from(sorted(SAMPLING)), TEXT),
    st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(["", "0", "x"])),
    max_size=4,
)


@given(request_parameters)
def test_triton_request_parameters_feed_sampling_or_answer_400(parameters):
    try:
        raw = request_sampling_parameters(parameters)
        params = sampling.generation_params("m", raw, "parameters")
    except TritonError as exc:
        assert_client_error(exc)
        return
    assert_generation_params(params)
    assert not any(name.startswith("triton_") for name in raw)


generate_documents = st.fixed_dictionaries(
    {},
    optional={
        "id": around(texts),
        "text_input": around(st.one_of(texts, st.lists(texts, max_size=2))),
        "stream": around(st.one_of(st.booleans(), st.lists(st.booleans(), max_size=2))),
        "exclude_input_in_output": around(st.booleans()),
        "sampling_parameters": around(sampling_dicts.map(json.dumps)),
        "parameters": around(st.one_of(sampling_dicts, request_parameters)),
        "temperature": around(number_near(0, 2)),
    },
)


@given(st.one_of(generate_documents, json_values))
def test_generate_request_maps_to_checked_inputs_or_answers_400(document):
    """The generate extension's whole front half: document -> tensors -> signature -> params."""
    try:
        parsed = parse_generate(document)
        inputs = signature.check_inputs("m", parsed.inputs, parsed.id)
        if inputs.sampling_parameters is not None:
            raw = sampling.parse_json_parameters(inputs.sampling_parameters)
        else:
            raw = request_sampling_parameters(parsed.parameters)
        params = sampling.generation_params("m", raw, "parameters")
    except TritonError as exc:
        assert_client_error(exc)
        return
    assert parsed.id is None or isinstance(parsed.id, str)
    assert isinstance(inputs.text, str) and valid_unicode(inputs.text)
    assert isinstance(inputs.stream, bool)
    assert inputs.exclude_input_in_output in (None, True, False)
    for value in parsed.parameters.values():
        assert isinstance(value, str | int | float | bool)
    assert_generation_params(params)


@given(st.one_of(st.text(max_size=8), st.sampled_from(["1", "01", "0001", "²", "١", "9" * 5000,
                                                        "-1", "+1", " 1"])))
def test_model_version_in_the_path_is_a_version_or_404(version):
    try:
        name, parsed = _model_path(request_with(b"", version))
    except TritonError as exc:
        assert exc.status == 404
        return
    assert name == "m"
    assert parsed is not None and parsed.isdigit()
    assert parsed == "0" or not parsed.startswith("0")


@pytest.mark.parametrize("value", ["1" * 5000, "x" * 10, " 12 ", "-3", "²"])
def test_inference_header_length_is_a_length_or_400(value):
    try:
        length = tensors.header_length(value, 100)
    except TritonError as exc:
        assert_client_error(exc)
        return
    assert 0 <= length <= 100


@given(st.text(max_size=12), st.integers(0, 1000))
def test_inference_header_length_property(value, content_length):
    try:
        length = tensors.header_length(value, content_length)
    except TritonError as exc:
        assert_client_error(exc)
        return
    assume(length is not None)
    assert is_int(length) and 0 <= length <= content_length

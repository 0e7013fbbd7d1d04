"""What every request goes through before its parameters: JSON bodies, Triton's generate
document, the model version in the path and the binary header length, both ways: what is
well-formed is read as what it spells, the rest is a 4xx, and nothing raises anything else.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from tests.properties.openapi_oracle import (
    COMPLETION,
    TRITON_PARAMETERS,
    inside,
    meaning,
    triton_reads,
)
from tests.properties.strategies import around, json_values
from triton_mlx.http import BodyDecodeError, Headers, Request
from triton_mlx.triton import sampling, signature, tensors
from triton_mlx.triton.app import _model_path
from triton_mlx.triton.errors import TritonError
from triton_mlx.triton.generate_request import parse_generate
from triton_mlx.triton.inference import request_sampling_parameters


def valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


def spelled_value(body: bytes) -> tuple[bool, Any]:
    """(True, value) when ``body`` is UTF-8 JSON as Python reads it (NaN and Infinity
    included) with only Unicode strings in it; (False, None) otherwise."""
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # ValueError: JSON, digits
        return False, None
    return all(valid_unicode(s) for s in strings_in(value)), value


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


TRICKY_JSON = [b"1" * 5000, b'{"a": -' + b"9" * 4400 + b"}", b'"\\ud800"', b'["\\udc00x"]',
               b'{"\\ud800": 1}', b"[" * 5000 + b"]" * 5000, b'["\\ud83d\\ude00"]']


def with_examples(*values):
    """Pin regressions as explicit examples, run on every profile."""
    def decorate(test):
        for value in values:
            test = example(value)(test)
        return test
    return decorate


def request_with(body: bytes, version: str | None = None) -> Request:
    request = Request(method="POST", path="/", raw_path="/", query={}, headers=Headers(),
                      body=body, request_id="p", client=None, http_version="1.1")
    request.path_params = {"model": "m"} if version is None else {"model": "m",
                                                                     "version": version}
    return request


def same_json(a: Any, b: Any) -> bool:
    return json.dumps(a) == json.dumps(b)  # NaN != NaN, but its spelling is the same


@given(json_texts())
@with_examples(*TRICKY_JSON)
def test_openai_bodies_decode_exactly_when_they_are_json(body):
    valid, value = spelled_value(body)
    try:
        decoded = request_with(body).json()
    except BodyDecodeError as refused:
        assert not valid and str(refused)
        return
    assert valid and same_json(decoded, value)


@given(json_texts())
@with_examples(*TRICKY_JSON)
def test_triton_bodies_decode_exactly_when_they_are_json(body):
    valid, value = spelled_value(body)
    for parse, needs_object in ((tensors.parse_json, False),
                                (lambda b: sampling.parse_json_parameters(b.decode()), True)):
        try:
            decoded = parse(body)
        except (TritonError, UnicodeDecodeError) as refused:  # the input tensor is text
            assert not valid or (needs_object and not isinstance(value, dict)), refused
            continue
        assert valid and same_json(decoded, value)


# ----- the generate extension ----------------------------------------------------------------

texts = st.text(max_size=12)
valid_sampling = st.fixed_dictionaries({}, optional={
    name: inside(schema) for name, schema in TRITON_PARAMETERS.items()
    if name not in ("min_tokens", "max_tokens")  # together they have a rule: tried elsewhere
})


@given(text=texts, stream=st.booleans(), exclude=st.one_of(st.none(), st.booleans()),
       raw=valid_sampling, nested=st.booleans(), as_input=st.booleans())
def test_a_well_formed_generate_document_is_read_as_it_says(text, stream, exclude, raw,
                                                              nested, as_input):
    """Extra keys are parameters, top-level or under ``parameters``, or the JSON of the
    ``sampling_parameters`` input."""
    document: dict[str, Any] = {"text_input": text, "stream": stream}
    if exclude is not None:
        document["exclude_input_in_output"] = exclude
    if as_input:
        document["sampling_parameters"] = json.dumps(raw)
    else:  # Triton's request parameters are strings, numbers and booleans only
        raw = {k: v for k, v in raw.items() if isinstance(v, str | int | float | bool)}
        document.update({"parameters": raw} if nested else raw)
    parsed = parse_generate(document)
    inputs = signature.check_inputs("m", parsed.inputs, parsed.id)
    assert (inputs.text, inputs.stream, inputs.exclude_input_in_output) == (text, stream,
                                                                          exclude)
    if as_input:
        given_raw = sampling.parse_json_parameters(inputs.sampling_parameters)
    else:
        given_raw = request_sampling_parameters(parsed.parameters)
    params = sampling.generation_params(given_raw, "parameters")
    for name, value in triton_reads(raw).items():
        if hasattr(params, name):
            assert getattr(params, name) == meaning(COMPLETION, name, value), name


generate_documents = st.fixed_dictionaries(
    {},
    optional={
        "id": around(texts),
        "text_input": around(st.one_of(texts, st.lists(texts, max_size=2))),
        "stream": around(st.one_of(st.booleans(), st.lists(st.booleans(), max_size=2))),
        "exclude_input_in_output": around(st.booleans()),
        "sampling_parameters": around(valid_sampling.map(json.dumps)),
        "parameters": around(valid_sampling),
        "temperature": around(st.floats(-1, 3)),
    },
)


@given(st.one_of(generate_documents, json_values))
def test_any_generate_document_is_read_or_answered_with_400(document):
    """The generate extension's front half: document -> tensors -> signature -> parameters.
    A document without a one-string ``text_input`` is refused; nothing raises but a 400."""
    try:
        parsed = parse_generate(document)
        inputs = signature.check_inputs("m", parsed.inputs, parsed.id)
        if inputs.sampling_parameters is not None:
            raw = sampling.parse_json_parameters(inputs.sampling_parameters)
        else:
            raw = request_sampling_parameters(parsed.parameters)
        sampling.generation_params(raw, "parameters")
    except TritonError as refused:
        assert refused.status == 400 and refused.message
        return
    text = document["text_input"]
    assert inputs.text == (text[0] if isinstance(text, list) else text)
    assert parsed.id == document.get("id")


# ----- the path and the headers --------------------------------------------------------------

@given(st.one_of(st.text(max_size=8), st.from_regex(r"[0-9]{1,6}", fullmatch=True)))
@with_examples("1", "01", "0001", "0", "²", "١", "9" * 5000, "-1", "+1", " 1", "1 ")
def test_model_version_in_the_path_is_a_decimal_number_or_404(version):
    try:
        name, parsed = _model_path(request_with(b"", version))
    except TritonError as refused:
        assert refused.status == 404
        assert not re.fullmatch(r"[0-9]+", version), "a version number was refused"
        return
    assert re.fullmatch(r"[0-9]+", version), f"{version!r} is not a version number"
    assert name == "m" and parsed == (version.lstrip("0") or "0")


@given(st.tuples(st.one_of(st.text(max_size=12), st.integers(-5, 1200).map(str)),
                 st.integers(0, 1000)))
@with_examples(("1" * 5000, 100), ("x" * 10, 100), (" 12 ", 100), ("-3", 100), ("", 100),
               ("100", 100), ("101", 100), ("0", 0))
def test_inference_header_length_is_a_length_within_the_body_or_400(case):
    """A decimal number up to the body's size is read; no number, or one beyond the body, is a
    400. (Other spellings of a number, "+5" or "٣", are left unspecified.)"""
    value, content_length = case
    decimal = re.fullmatch(r"\s*0*([0-9]{1,20})\s*", value)  # more digits: beyond any body
    try:
        length = tensors.header_length(value, content_length)
    except TritonError as refused:
        assert refused.status == 400
        assert not decimal or int(decimal[1]) > content_length, value
        return
    assert 0 <= length <= content_length
    assert re.search(r"[0-9]", value), f"{value!r} spells no number"
    if decimal:
        assert length == int(decimal[1])


def test_no_header_length_means_a_json_only_body():
    assert tensors.header_length(None, 100) is None

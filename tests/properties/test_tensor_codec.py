"""Properties of the KServe v2 tensor codec (JSON and binary tensor data), against tritonclient.

tritonclient's own encoder builds the requests and its own decoder reads our responses, so the
round trips check our codec against an independent implementation of the same wire format.
Malformed payloads (truncated, wrong sizes, bad length prefixes, a bad header length) must be
refused with the codec's 400, never with any other exception.
"""

from __future__ import annotations

import json
import math
import struct

import ml_dtypes
import numpy as np
import tritonclient.http as triton_http
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tritonclient.http._utils import _get_inference_request

from tests.properties.strategies import json_values
from triton_mlx.triton import tensors
from triton_mlx.triton.errors import TritonError

NUMPY_TYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    "BF16": ml_dtypes.bfloat16, "BYTES": np.object_,
}
assert set(NUMPY_TYPES) == tensors.DATATYPES  # a new datatype needs a line here
BINARY_ONLY = {"FP16", "BF16"}  # Triton takes these in binary only
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)


@st.composite
def arrays(draw, datatype: str, *, text: bool = False) -> np.ndarray:
    shape = draw(shapes)
    if datatype == "BYTES":
        element = st.text(max_size=6).map(str.encode) if text else st.binary(max_size=6)
        return draw(hnp.arrays(np.object_, shape, elements=element))
    if datatype == "BF16":
        floats = draw(hnp.arrays(np.float32, shape))
        return floats.astype(ml_dtypes.bfloat16)
    return draw(hnp.arrays(NUMPY_TYPES[datatype], shape))


@st.composite
def requests(draw, *, allow_json: bool = True) -> tuple[list[tuple[str, np.ndarray, bool]],
                                                         bytes, int | None]:
    """1-3 named inputs of any datatype, each in binary or JSON, encoded by tritonclient."""
    specs = []
    for i in range(draw(st.integers(1, 3))):
        datatype = draw(st.sampled_from(sorted(NUMPY_TYPES)))
        binary = datatype in BINARY_ONLY or not allow_json or draw(st.booleans())
        array = draw(arrays(datatype, text=not binary))
        specs.append((f"in{i}", datatype, array, binary))
    inputs = []
    for name, datatype, array, binary in specs:
        tensor = triton_http.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    body, json_size = _get_inference_request(inputs, None, None, 0, False, False, 0, None, None)
    body = body if isinstance(body, bytes) else body.encode("utf-8")
    return [(name, array, binary) for name, _, array, binary in specs], body, json_size


def expected_elements(array: np.ndarray) -> np.ndarray:
    flat = array.reshape(-1)
    if flat.dtype == ml_dtypes.bfloat16:
        return flat.astype(np.float32)  # our decoder widens BF16 to float32
    return flat


def same_elements(decoded: list, array: np.ndarray) -> bool:
    expected = expected_elements(array)
    if array.dtype == np.object_:
        return decoded == list(expected)
    got = np.array(decoded, dtype=expected.dtype) if decoded else expected[:0]
    return got.shape == expected.shape and np.array_equal(got, expected, equal_nan=True)


@given(requests())
def test_every_datatype_and_shape_round_trips_from_tritonclient(request):
    specs, body, json_size = request
    decoded = tensors.decode_request(body, json_size, "m")
    assert [t.name for t in decoded.inputs] == [name for name, _, _ in specs]
    for tensor, (_, array, _) in zip(decoded.inputs, specs, strict=True):
        assert tensor.shape == list(array.shape)
        assert len(tensor.data) == math.prod(array.shape)
        assert same_elements(tensor.data, array), (tensor.datatype, tensor.data, array)


RESPONSE_TYPES = sorted(set(NUMPY_TYPES) - {"BF16"})  # BF16 outputs are never produced


@st.composite
def response_cases(draw) -> tuple[str, np.ndarray, bool]:
    datatype = draw(st.sampled_from(RESPONSE_TYPES))
    binary = datatype in BINARY_ONLY or draw(st.booleans())
    return datatype, draw(arrays(datatype, text=not binary)), binary  # JSON carries text


@given(response_cases())
def test_responses_decode_in_tritonclient_to_what_was_encoded(case):
    datatype, array, binary = case
    data = [bytes(e) for e in array.reshape(-1)] if datatype == "BYTES" else (
        array.reshape(-1).tolist())
    tensor = tensors.Tensor("out", datatype, list(array.shape), data)
    body, header = tensors.encode_response(
        model_name="m", model_version="1", request_id="r", outputs=[(tensor, binary)])
    result = triton_http.InferResult.from_response_body(body, header_length=header)
    assert result.get_response()["id"] == "r"
    got = result.as_numpy("out")
    assert got.shape == array.shape
    if datatype == "BYTES":
        # tritonclient gives bytes for binary outputs, str for JSON ones
        assert [e if isinstance(e, bytes) else e.encode() for e in got.reshape(-1)] == data
    else:
        assert np.array_equal(got.astype(array.dtype), array, equal_nan=True)


# ----- malformed payloads ------------------------------------------------------------------------


def assert_400_or_consistent(body: bytes, json_length: int | None) -> None:
    try:
        decoded = tensors.decode_request(body, json_length, "m")
    except TritonError as exc:
        assert exc.status == 400, exc.message
        return
    for tensor in decoded.inputs:
        assert tensor.datatype in tensors.DATATYPES
        assert all(isinstance(d, int) and d >= 0 for d in tensor.shape)
        assert len(tensor.data) == math.prod(tensor.shape)
        if tensor.datatype == "BYTES":
            assert all(isinstance(e, bytes) for e in tensor.data)


def with_sizes(body: bytes, json_size: int, sizes: list) -> tuple[bytes, int]:
    """The same request with other ``binary_data_size`` values in its header."""
    header = json.loads(body[:json_size])
    binary = [i for i in header["inputs"] if "binary_data_size" in i.get("parameters", {})]
    for item, size in zip(binary, sizes, strict=False):
        item["parameters"]["binary_data_size"] = size
    new_header = json.dumps(header).encode()
    return new_header + body[json_size:], len(new_header)


mutations = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 10_000)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("length"), st.integers(-3, 10_000)),
    st.tuples(st.just("sizes"), st.lists(st.one_of(
        st.integers(-2, 64), st.sampled_from([2**32, 2**64, 10**400, True, 1.5, "4", None])),
        min_size=1, max_size=3)),
    st.tuples(st.just("prefix"), st.integers(0, 10_000), st.integers(0, 2**32 - 1)),
)


@given(requests(allow_json=False), mutations)
def test_malformed_binary_payloads_are_refused_with_400(request, mutation):
    _, body, json_size = request
    assert json_size is not None
    kind = mutation[0]
    header_value: str | None = str(json_size)
    if kind == "truncate":
        body = body[: mutation[1] % (len(body) + 1)]
    elif kind == "append":
        body += mutation[1]
    elif kind == "flip":
        at = mutation[1] % len(body)
        body = body[:at] + bytes([body[at] ^ mutation[2]]) + body[at + 1:]
    elif kind == "length":
        header_value = str(mutation[1])
    elif kind == "sizes":
        body, json_size = with_sizes(body, json_size, mutation[1])
        header_value = str(json_size)
    elif kind == "prefix" and len(body) > json_size:  # overwrite 4 bytes of the binary part
        at = json_size + mutation[1] % (len(body) - json_size)
        body = body[:at] + struct.pack("<I", mutation[2]) + body[at + 4:]
    try:
        length = tensors.header_length(header_value, len(body))
    except TritonError as exc:
        assert exc.status == 400
        return
    assert_400_or_consistent(body, length)


input_items = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.text(max_size=4), json_values),
        "datatype": st.one_of(st.sampled_from(sorted(NUMPY_TYPES) + ["INT128", ""]), json_values),
        "shape": st.one_of(st.lists(st.integers(-1, 3), max_size=3), json_values),
        "data": json_values,
        "parameters": st.one_of(
            st.fixed_dictionaries({}, optional={
                "binary_data_size": st.one_of(st.integers(-1, 8), json_values),
                "shared_memory_region": json_values}),
            json_values),
    },
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "inputs": st.one_of(st.lists(st.one_of(input_items, json_values), max_size=3),
                            json_values),
        "outputs": st.one_of(st.lists(st.fixed_dictionaries({}, optional={
            "name": json_values, "parameters": json_values}), max_size=2), json_values),
        "parameters": st.one_of(st.dictionaries(st.text(max_size=4), json_values, max_size=3),
                                json_values),
    },
)


@given(st.one_of(documents, json_values), st.binary(max_size=16), st.booleans())
def test_arbitrary_json_documents_decode_or_answer_400(document, tail, with_length):
    header = json.dumps(document).encode()
    body = header + tail if with_length else header
    assert_400_or_consistent(body, len(header) if with_length else None)


@given(st.binary(max_size=64), st.one_of(st.none(), st.integers(0, 64)))
def test_arbitrary_bytes_decode_or_answer_400(body, json_length):
    assert_400_or_consistent(body, None if json_length is None else min(json_length, len(body)))

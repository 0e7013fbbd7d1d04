"""The tensor codec and the sampling parameters, without a server."""

import json
import struct

import pytest

from triton_mlx.triton import sampling, tensors
from triton_mlx.triton.errors import TritonError


def binary_body(inputs: list[tuple[dict, bytes]]) -> tuple[bytes, int]:
    header = json.dumps({"inputs": [spec for spec, _ in inputs]}).encode()
    return header + b"".join(blob for _, blob in inputs), len(header)


def test_decodes_every_fixed_size_type_from_binary():
    cases = {
        "BOOL": ("<3?", [True, False, True]),
        "UINT8": ("<3B", [0, 7, 255]),
        "INT16": ("<3h", [-2, 0, 2]),
        "UINT32": ("<3I", [1, 2, 4_000_000_000]),
        "INT64": ("<3q", [-(2**40), 0, 2**40]),
        "FP32": ("<3f", [0.5, -1.25, 2.0]),
        "FP64": ("<3d", [0.1, 0.2, 0.3]),
        "FP16": ("<3e", [0.5, 1.0, -2.0]),
    }
    for datatype, (fmt, values) in cases.items():
        blob = struct.pack(fmt, *values)
        body, length = binary_body([({"name": "x", "datatype": datatype, "shape": [3],
                                      "parameters": {"binary_data_size": len(blob)}}, blob)])
        (tensor,) = tensors.decode_request(body, length, "m").inputs
        assert tensor.data == values, datatype


def test_bf16_widens_to_float():
    blob = struct.pack("<2H", 0x3F80, 0xC000)  # 1.0, -2.0
    body, length = binary_body([({"name": "x", "datatype": "BF16", "shape": [2],
                                  "parameters": {"binary_data_size": 4}}, blob)])
    assert tensors.decode_request(body, length, "m").inputs[0].data == [1.0, -2.0]


def test_json_data_is_flattened_row_major_and_checked():
    body = json.dumps({"inputs": [{"name": "x", "datatype": "INT32", "shape": [2, 2],
                                   "data": [[1, 2], [3, 4]]}]}).encode()
    assert tensors.decode_request(body, None, "m").inputs[0].data == [1, 2, 3, 4]
    for data, words in (([1, 2, 3], "Shape does not match"), ([1, 2, 3, True], "INT32"),
                        ([1, 2, 3, 2**40], "out of range")):
        body = json.dumps({"inputs": [{"name": "x", "datatype": "INT32", "shape": [2, 2],
                                       "data": data}]}).encode()
        with pytest.raises(TritonError) as info:
            tensors.decode_request(body, None, "m")
        assert info.value.status == 400 and words in info.value.message


def test_bytes_round_trip_and_binary_response_layout():
    out = tensors.Tensor("y", "BYTES", [2], [b"ab", "é".encode()])
    body, length = tensors.encode_response(model_name="m", model_version="1", request_id="7",
                                           outputs=[(out, True)])
    header = json.loads(body[:length])
    assert header["id"] == "7" and header["outputs"][0]["parameters"]["binary_data_size"] == 12
    assert body[length:] == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 2) + "é".encode()
    body, length = tensors.encode_response(model_name="m", model_version="1", request_id=None,
                                           outputs=[(out, False)])
    assert length is None and json.loads(body)["outputs"][0]["data"] == ["ab", "é"]


def test_sampling_parameters_follow_vllm_and_openai_rules():
    params = sampling.generation_params(
        {"temperature": "0.5", "max_tokens": 10.0, "top_k": -1, "stop": "x",
              "seed": None, "n": 1, "ignore_eos": "false", "logit_bias": '{"3": -100}'},
        "sampling_parameters")
    assert (params.temperature, params.max_tokens, params.top_k, params.stop) == (
        0.5, 10, 0, ["x"])
    assert params.seed is None and params.logit_bias == {3: -100.0}
    assert params.ignore_eos is False and params.min_tokens == 0
    params = sampling.generation_params({"ignore_eos": "true", "min_tokens": "3"}, "parameters")
    assert params.ignore_eos is True and params.min_tokens == 3
    for raw, words in (({"n": 2}, "n=2"), ({"max_tokens": 1.5}, "integer"),
                       ({"min_tokens": 5, "max_tokens": 4}, "min_tokens"),
                       ({"min_tokens": -1}, "min_tokens"), ({"ignore_eos": "maybe"}, "boolean"),
                       ({"stop": [""]}, "empty"), ({"lora_name": "a"}, "'lora_name'"),
                       ({"repetition_penalty": 0}, "> 0")):
        with pytest.raises(TritonError) as info:
            sampling.generation_params(raw, "parameters")
        assert info.value.status == 400 and words in info.value.message
        assert info.value.message.startswith("parameters")


def test_timing_phases_and_statistics_records():
    from triton_mlx.observability.inference_stats import (
        CANCELED,
        InferenceStats,
        InferenceTiming,
    )

    timing = InferenceTiming.from_marks(received=1.0, submitted=1.5, first_output=3.0,
                                        last_output=7.0, finished=7.25)
    assert (timing.duration, timing.compute_input, timing.queue, timing.compute_infer,
            timing.compute_output, timing.first_response) == (
        6_250_000_000, 500_000_000, 1_500_000_000, 4_000_000_000, 250_000_000, 6_250_000_000)
    stats = InferenceStats()
    stats.record("m", timing, inferences=2)
    stats.record("m", InferenceTiming(duration=10), outcome=CANCELED)
    snapshot = stats.snapshot("m")
    assert (snapshot.inference_count, snapshot.execution_count) == (2, 1)
    assert snapshot.fail.as_dict() == {"count": 1, "ns": 10}
    assert snapshot.failures == {CANCELED: 1}
    assert stats.snapshot("other").inference_count == 0
    with pytest.raises(ValueError):
        stats.record("m", timing, outcome="EXPLODED")

"""``/infer`` through the real tritonclient: binary and JSON tensors, sampling, errors."""

import json
import struct

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import TINY
from tests.triton.wire import client, error, request

NO_EOS = {"2": -100}  # the tiny model's end-of-sequence token, banned: exact lengths


def text_input(prompt: str, binary: bool = True) -> httpclient.InferInput:
    tensor = httpclient.InferInput("text_input", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([prompt.encode()], dtype=object), binary_data=binary)
    return tensor


def sampling(params: dict, binary: bool = True) -> httpclient.InferInput:
    tensor = httpclient.InferInput("sampling_parameters", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([json.dumps(params).encode()], dtype=object),
                               binary_data=binary)
    return tensor


def flag(name: str, value: bool, binary: bool = True) -> httpclient.InferInput:
    tensor = httpclient.InferInput(name, [1], "BOOL")
    tensor.set_data_from_numpy(np.array([value]), binary_data=binary)
    return tensor


def infer_text(server, inputs, **kwargs) -> str:
    result = client(server).infer(TINY, inputs, **kwargs)
    output = result.as_numpy("text_output")
    assert output.shape == (1,)
    return output[0].decode()


def test_default_binary_infer_generates_max_tokens(tiny_server):
    engine = tiny_server.engine()
    before = engine.stats().generated_tokens
    result = client(tiny_server).infer(
        TINY, [text_input("Hello"), sampling({"max_tokens": 6, "logit_bias": NO_EOS})]
    )
    output = result.get_output("text_output")
    assert output["datatype"] == "BYTES" and output["shape"] == [1]
    assert output["parameters"]["binary_data_size"] > 4  # sent in binary, as asked
    text = result.as_numpy("text_output")[0].decode()
    assert text.startswith("Hello") and len(text) > len("Hello")  # the prompt comes first
    assert engine.stats().generated_tokens - before == 6
    assert result.get_response()["model_name"] == TINY
    assert result.get_response()["model_version"] == "1"


def test_json_tensors_both_ways(tiny_server):
    params = {"max_tokens": 4, "seed": 3, "temperature": 1.0}
    binary = infer_text(tiny_server, [text_input("Hi"), sampling(params)])
    result = client(tiny_server).infer(
        TINY, [text_input("Hi", binary=False), sampling(params, binary=False)],
        outputs=[httpclient.InferRequestedOutput("text_output", binary_data=False)],
        request_id="abc",
    )
    output = result.get_output("text_output")
    assert "parameters" not in output and output["data"] == [binary]  # same seed, same text
    assert result.get_response()["id"] == "abc"


def test_seed_gives_reproducible_text_and_other_seeds_differ(tiny_server):
    def run(seed):
        return infer_text(tiny_server, [text_input("Hello"), sampling(
            {"max_tokens": 12, "seed": seed, "temperature": 1.0, "logit_bias": NO_EOS})])

    assert run(7) == run(7)
    assert len({run(7), run(8), run(9)}) > 1


def test_numbers_as_strings_like_vllms_sample_client(tiny_server):
    engine = tiny_server.engine()
    before = engine.stats().generated_tokens
    infer_text(tiny_server, [text_input("Hello"), sampling(
        {"temperature": "0.1", "top_p": "0.95", "max_tokens": "5", "logit_bias": NO_EOS})])
    assert engine.stats().generated_tokens - before == 5


def test_exclude_input_in_output(tiny_server):
    params = {"max_tokens": 5, "temperature": 0, "logit_bias": NO_EOS}
    full = infer_text(tiny_server, [text_input("Hello"), sampling(params)])
    generated = infer_text(tiny_server, [text_input("Hello"), sampling(params),
                                         flag("exclude_input_in_output", True)])
    assert full == "Hello" + generated
    assert infer_text(tiny_server, [text_input("Hello"), sampling(params),
                                    flag("exclude_input_in_output", False)]) == full


def test_request_parameters_are_sampling_parameters_without_the_input(tiny_server):
    engine = tiny_server.engine()
    before = engine.stats().generated_tokens
    infer_text(tiny_server, [text_input("Hello")],
               parameters={"max_tokens": 3, "logit_bias": json.dumps(NO_EOS)})
    assert engine.stats().generated_tokens - before == 3


def test_greedy_text_matches_the_openai_port(tiny_server):
    from tests.openai.http_client import request as openai_request

    body = {"model": TINY, "prompt": "Hello", "max_tokens": 8, "temperature": 0}
    status, _, answer = openai_request(tiny_server.port, "POST", "/v1/completions", body)
    assert status == 200
    triton = infer_text(tiny_server, [text_input("Hello"), sampling(
        {"max_tokens": 8, "temperature": 0}), flag("exclude_input_in_output", True)])
    assert triton == answer["choices"][0]["text"]


def test_gzip_request_body(tiny_server):
    text = infer_text(tiny_server, [text_input("Hello"), sampling({"max_tokens": 2})],
                      request_compression_algorithm="gzip")
    assert text.startswith("Hello")


def raises(server, inputs, **kwargs) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        client(server).infer(TINY, inputs, **kwargs)
    return info.value


def test_unknown_model(tiny_server):
    with pytest.raises(InferenceServerException) as info:
        client(tiny_server).infer("nope", [text_input("Hi")])
    assert info.value.message() == "Request for unknown model: 'nope' is not found"


@pytest.mark.parametrize("params, words", [
    ({"max_tokens": 0}, ("max_tokens", ">= 1")),
    ({"temperature": "hot"}, ("temperature", "number")),
    ({"temperature": 3}, ("temperature", "between 0 and 2")),
    ({"stop": [1]}, ("stop",)),
    ({"top_p": 2}, ("top_p",)),
    ({"logit_bias": {"99999": 1}}, ("logit_bias", "out of range")),
    ({"max_tokens": 600}, ("512",)),  # beyond the tiny model's context
    ({"frobnicate": 1, "guided_decoding": "x"}, ("'frobnicate'", "'guided_decoding'")),
    ({"n": 2}, ("n=2",)),
])
def test_bad_sampling_parameters_are_400_naming_them(tiny_server, params, words):
    exc = raises(tiny_server, [text_input("Hi"), sampling(params)])
    assert exc.status() == "400", exc.message()
    assert exc.message().startswith("sampling_parameters"), exc.message()
    for word in words:
        assert word in exc.message(), exc.message()


def test_sampling_parameters_not_json_is_400(tiny_server):
    tensor = httpclient.InferInput("sampling_parameters", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"{temperature: 0"], dtype=object))
    exc = raises(tiny_server, [text_input("Hi"), tensor])
    assert exc.status() == "400" and "not valid JSON" in exc.message()


def test_wrong_datatype_and_shape_are_tritons_messages(tiny_server):
    wrong_type = httpclient.InferInput("text_input", [1], "INT32")
    wrong_type.set_data_from_numpy(np.array([5], dtype=np.int32))
    exc = raises(tiny_server, [wrong_type])
    assert exc.status() == "400"
    assert exc.message() == ("[request id: <id_unknown>] inference input 'text_input' data-type "
                             f"is 'INT32', but model '{TINY}' expects 'BYTES'")
    two = httpclient.InferInput("text_input", [2], "BYTES")
    two.set_data_from_numpy(np.array([b"a", b"b"], dtype=object))
    exc = raises(tiny_server, [two], request_id="r1")
    assert exc.message() == (f"[request id: r1] unexpected shape for input 'text_input' for "
                             f"model '{TINY}'. Expected [1], got [2]. ")


def test_missing_and_unknown_inputs_and_outputs(tiny_server):
    exc = raises(tiny_server, [flag("stream", False)])
    assert "missing required inputs ['text_input']" in exc.message()
    other = httpclient.InferInput("image", [1], "BYTES")
    other.set_data_from_numpy(np.array([b"x"], dtype=object))
    exc = raises(tiny_server, [text_input("Hi"), other])
    assert exc.message() == f"unexpected inference input 'image' for model '{TINY}'"
    exc = raises(tiny_server, [text_input("Hi")],
                 outputs=[httpclient.InferRequestedOutput("logits")])
    assert exc.message() == f"unexpected inference output 'logits' for model '{TINY}'"


def test_stream_on_infer_is_refused_as_for_decoupled_models(tiny_server):
    exc = raises(tiny_server, [text_input("Hi"), flag("stream", True)])
    assert exc.status() == "501"
    assert "doesn't support models with decoupled transaction policy" in exc.message()


def test_reserved_and_unsupported_request_parameters(tiny_server):
    exc = raises(tiny_server, [text_input("Hi")], priority=1)
    assert exc.status() == "400" and "'priority'" in exc.message()
    status, _, body = request(tiny_server.http_port, "POST", f"/v2/models/{TINY}/infer", {
        "inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["Hi"]}],
        "parameters": {"triton_x": 1},
    })
    assert status == 400 and "reserved for Triton" in error(body)


def binary_request(prompt: bytes, declared: int, extra: bytes = b"") -> tuple[bytes, str]:
    header = json.dumps({"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": declared}}]}).encode()
    return header + struct.pack("<I", len(prompt)) + prompt + extra, str(len(header))


@pytest.mark.parametrize("declared, extra, words", [
    (4 + 5 + 3, b"", "expecting 3 additional bytes"),
    (4 + 5, b"xx", "unexpected additional input data"),
    (4 + 3, b"", "exceeds the end of the buffer"),
])
def test_malformed_binary_bodies(tiny_server, declared, extra, words):
    body, header = binary_request(b"Hello", declared, extra)
    status, _, answer = request(tiny_server.http_port, "POST", f"/v2/models/{TINY}/infer",
                                raw=body, headers={"Inference-Header-Content-Length": header})
    assert status == 400 and words in error(answer)


def test_header_length_beyond_the_body_and_json_errors(tiny_server):
    path = f"/v2/models/{TINY}/infer"
    status, _, answer = request(tiny_server.http_port, "POST", path, raw=b"{}",
                                headers={"Inference-Header-Content-Length": "99"})
    assert status == 400 and "inference header size should be in range" in error(answer)
    status, _, answer = request(tiny_server.http_port, "POST", path, raw=b"{nope")
    assert status == 400 and error(answer).startswith("failed to parse the request JSON buffer")
    status, _, answer = request(tiny_server.http_port, "POST", path, {"inputs": [
        {"name": "text_input", "shape": [1], "datatype": "BYTES"}]})
    assert status == 400 and "no field is set" in error(answer)


def test_binary_output_layout_on_the_wire(tiny_server):
    body = {"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["Hi"]},
                       {"name": "sampling_parameters", "shape": [1], "datatype": "BYTES",
                        "data": [json.dumps({"max_tokens": 2})]}],
            "parameters": {"binary_data_output": True}}
    status, headers, data = request(tiny_server.http_port, "POST",
                                    f"/v2/models/{TINY}/infer", body)
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    length = int(headers["inference-header-content-length"])
    header = json.loads(data[:length])
    size = header["outputs"][0]["parameters"]["binary_data_size"]
    blob = data[length:]
    assert len(blob) == size
    (n,) = struct.unpack("<I", blob[:4])
    assert n == size - 4 and blob[4:].decode().startswith("Hi")

"""KServe v2 tensors on the wire: JSON tensors and Triton's binary tensor data extension.

A request body is a JSON header, optionally followed by raw tensor bytes; the
``Inference-Header-Content-Length`` HTTP header gives the JSON's length. An input with
``parameters.binary_data_size`` takes that many bytes, in input order, from after the JSON.
Binary data is little-endian and row major; a BOOL is one byte; a BYTES element is a 4-byte
little-endian length and then its bytes. Responses use the same layout for the outputs asked
for in binary. Nothing here knows about models: ``signature.py`` checks tensors against one.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from triton_mlx.http.messages import ClientJSONError, loads_client_json
from triton_mlx.triton.errors import TritonError, invalid_arg

# datatype -> (struct format of one element, its size); BYTES is length-prefixed.
_FIXED: dict[str, tuple[str, int]] = {
    "BOOL": ("?", 1),
    "UINT8": ("B", 1),
    "UINT16": ("H", 2),
    "UINT32": ("I", 4),
    "UINT64": ("Q", 8),
    "INT8": ("b", 1),
    "INT16": ("h", 2),
    "INT32": ("i", 4),
    "INT64": ("q", 8),
    "FP16": ("e", 2),
    "FP32": ("f", 4),
    "FP64": ("d", 8),
    "BF16": ("H", 2),  # raw 16-bit words, widened to float32 on decode
}
DATATYPES = frozenset(_FIXED) | {"BYTES"}
_LENGTH = struct.Struct("<I")


@dataclass
class Tensor:
    """A named tensor with its elements flattened row major.

    ``data`` holds ``bytes`` for BYTES, ``bool`` for BOOL, ``int`` or ``float`` otherwise.
    """

    name: str
    datatype: str
    shape: list[int]
    data: list[Any]


@dataclass
class RequestedOutput:
    """An output the client named; ``binary`` is None when it did not say how to send it."""

    name: str
    binary: bool | None = None


@dataclass
class InferRequest:
    """A decoded ``POST .../infer`` body."""

    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[RequestedOutput] | None = None

    @property
    def binary_data_output(self) -> bool:
        return self.parameters.get("binary_data_output") is True


def header_length(value: str | None, content_length: int) -> int | None:
    """The ``Inference-Header-Content-Length`` value, checked against the body's size."""
    if value is None:
        return None
    try:
        length = int(value.strip())
    except ValueError:
        raise invalid_arg(
            f"Unable to parse Inference-Header-Content-Length, got: {value}"
        ) from None
    if not 0 <= length <= content_length:
        raise invalid_arg(
            f"inference header size should be in range (0, {content_length}), got: {value}"
        )
    return length


def parse_json(data: bytes) -> Any:
    """Parse a JSON document, with Triton's message when it is not valid JSON."""
    try:
        return loads_client_json(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise invalid_arg(
            f"failed to parse the request JSON buffer: invalid UTF-8 at {exc.start}"
        ) from None
    except json.JSONDecodeError as exc:
        detail = "The document is empty." if not data.strip() else exc.msg
        raise invalid_arg(
            f"failed to parse the request JSON buffer: {detail} at {exc.pos}"
        ) from None
    except ClientJSONError as exc:
        raise invalid_arg(f"failed to parse the request JSON buffer: {exc}") from None


def decode_request(body: bytes, json_length: int | None, model: str) -> InferRequest:
    """Decode an infer request body: the JSON header and any binary input data after it."""
    header = body if json_length is None else body[:json_length]
    document = parse_json(header)
    if not isinstance(document, dict):
        raise invalid_arg("Unable to parse 'inputs': the request must be a JSON object")
    request = InferRequest(id=_request_id(document), parameters=_parameters(document))
    inputs = document.get("inputs")
    if not isinstance(inputs, list):
        raise invalid_arg("Unable to parse 'inputs'")
    binary = memoryview(body)[len(header):]
    offset = 0
    for item in inputs:
        tensor, offset = _decode_input(item, binary, offset, json_length, model)
        request.inputs.append(tensor)
    if offset != len(binary):
        raise invalid_arg(f"unexpected additional input data for model '{model}'")
    if "outputs" in document:
        request.outputs = _requested_outputs(document["outputs"])
    return request


def _request_id(document: dict[str, Any]) -> str | None:
    value = document.get("id")
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid_arg("Unable to parse 'id'")
    return value


def _parameters(document: dict[str, Any]) -> dict[str, Any]:
    params = document.get("parameters", {})
    if not isinstance(params, dict):
        raise invalid_arg("failed to get request params.")
    check_parameter_values(params)
    return params


def check_parameter_values(params: dict[str, Any]) -> None:
    """Request parameters are strings, integers, booleans or numbers, as in Triton."""
    for name, value in params.items():
        if not isinstance(value, str | int | float | bool) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            raise invalid_arg(
                f"parameter '{name}' has invalid type. It should be either 'int', 'bool', "
                "or 'string'."
            )


def _decode_input(
    item: Any, binary: memoryview, offset: int, json_length: int | None, model: str
) -> tuple[Tensor, int]:
    if not isinstance(item, dict):
        raise invalid_arg("Unable to parse 'inputs'")
    params = item.get("parameters", {})
    if not isinstance(params, dict):
        raise invalid_arg("Unable to parse 'parameters'")
    _one_content_field(item, params)
    name = item.get("name")
    if not isinstance(name, str):
        raise invalid_arg("Unable to parse 'name'")
    datatype = item.get("datatype")
    if not isinstance(datatype, str):
        raise invalid_arg("Unable to parse 'datatype'")
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise invalid_arg("Unable to parse 'shape'")
    if datatype not in DATATYPES:
        raise invalid_arg(f"invalid datatype for input {name}")
    count = math.prod(shape)
    if "shared_memory_region" in params:
        region = params["shared_memory_region"]
        raise invalid_arg(f"Unable to find shared memory region: '{region}'")
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise invalid_arg("Unable to parse 'binary_data_size'")
        if size and not json_length:
            raise invalid_arg(
                "must specify valid 'Infer-Header-Content-Length' in request header and "
                "'binary_data_size' when passing inputs in binary data format"
            )
        if offset + size > len(binary):
            missing = offset + size - len(binary)
            raise invalid_arg(
                f"unexpected size for input '{name}', expecting {missing} additional bytes "
                f"for model '{model}'"
            )
        raw = bytes(binary[offset:offset + size])
        return Tensor(name, datatype, shape, _from_binary(name, datatype, raw, count, model)), (
            offset + size
        )
    return Tensor(name, datatype, shape, _from_json(name, datatype, item["data"], count)), offset


def _one_content_field(item: dict[str, Any], params: dict[str, Any]) -> None:
    present = [
        label
        for label, found in (
            ("'data'", "data" in item),
            ("'binary_data_size'", "binary_data_size" in params),
            ("'shared_memory_region'", "shared_memory_region" in params),
        )
        if found
    ]
    if len(present) != 1:
        detail = " no field is set" if not present else " set " + " ".join(present)
        raise invalid_arg(
            "Input must set only one of the following fields: 'data', 'binary_data_size' in "
            "'parameters', 'shared_memory_region' in 'parameters'. But" + detail
        )


def _from_json(name: str, datatype: str, data: Any, count: int) -> list[Any]:
    if datatype in ("FP16", "BF16"):
        raise invalid_arg(
            f"receiving {datatype} data via JSON is not supported. Please use the binary data "
            f"format for input {name}"
        )
    elements = list(_flatten(data))
    if len(elements) != count:
        raise invalid_arg(
            "Unable to parse 'data': Shape does not match true shape of 'data' field"
        )
    check = _JSON_CHECKS[datatype]
    out = []
    for element in elements:
        if not check(element):
            raise invalid_arg(
                f"Unable to parse 'data': expected {datatype} elements for input '{name}', "
                f"got {json.dumps(element)}"
            )
        out.append(element.encode("utf-8") if datatype == "BYTES" else element)
    if datatype.startswith(("INT", "UINT")):
        lo, hi = _int_range(datatype)
        if any(not lo <= v <= hi for v in out):
            raise invalid_arg(f"Unable to parse 'data': {datatype} value out of range for "
                              f"input '{name}'")
    return out


def _flatten(data: Any) -> Iterator[Any]:
    if isinstance(data, list):
        for item in data:
            yield from _flatten(item)
    else:
        yield data


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_JSON_CHECKS = {
    "BOOL": lambda v: isinstance(v, bool),
    "BYTES": lambda v: isinstance(v, str),
    "FP32": _is_number,
    "FP64": _is_number,
    **{t: _is_int for t in ("UINT8", "UINT16", "UINT32", "UINT64",
                            "INT8", "INT16", "INT32", "INT64")},
}


def _int_range(datatype: str) -> tuple[int, int]:
    bits = int(datatype.removeprefix("U").removeprefix("INT"))
    if datatype.startswith("U"):
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _from_binary(name: str, datatype: str, raw: bytes, count: int, model: str) -> list[Any]:
    if datatype == "BYTES":
        return _split_bytes(name, raw, count, model)
    fmt, size = _FIXED[datatype]
    if len(raw) != count * size:
        raise invalid_arg(
            f"input byte size mismatch for input '{name}' for model '{model}'. Expected "
            f"{count * size}, got {len(raw)}"
        )
    values = list(struct.unpack(f"<{count}{fmt}", raw))
    if datatype == "BF16":
        values = [struct.unpack("<f", struct.pack("<I", v << 16))[0] for v in values]
    return values


def _split_bytes(name: str, raw: bytes, count: int, model: str) -> list[bytes]:
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise invalid_arg(
                f"element byte size indicator exceeds the end of the buffer for input '{name}'"
            )
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise invalid_arg(
                f"element byte size indicator exceeds the end of the buffer for input '{name}'"
            )
        elements.append(raw[offset:offset + length])
        offset += length
    if len(elements) != count:
        raise invalid_arg(
            f"unexpected number of string elements {len(elements)} for inference input "
            f"'{name}' for model '{model}', expecting {count}"
        )
    return elements


def _requested_outputs(value: Any) -> list[RequestedOutput]:
    if not isinstance(value, list):
        raise invalid_arg("Unable to parse 'outputs'")
    outputs = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise invalid_arg("Unable to parse 'name'")
        params = item.get("parameters", {})
        if not isinstance(params, dict):
            raise invalid_arg("Unable to parse 'parameters'")
        if "shared_memory_region" in params:
            region = params["shared_memory_region"]
            raise invalid_arg(f"Unable to find shared memory region: '{region}'")
        if params.get("classification"):
            raise invalid_arg(
                f"classification is not supported for output '{item['name']}' of this model"
            )
        binary = params.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise invalid_arg("Unable to parse 'binary_data'")
        outputs.append(RequestedOutput(item["name"], binary))
    return outputs


def encode_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: list[tuple[Tensor, bool]],
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when any output is sent in binary.

    ``outputs`` pairs each tensor with whether it goes in binary (after the JSON).
    """
    document: dict[str, Any] = {}
    if request_id:
        document["id"] = request_id
    document["model_name"] = model_name
    document["model_version"] = model_version
    blobs: list[bytes] = []
    entries = []
    for tensor, binary in outputs:
        entry: dict[str, Any] = {
            "name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape,
        }
        if binary:
            blob = _to_binary(tensor)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _to_json(tensor)
        entries.append(entry)
    document["outputs"] = entries
    header = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def _to_binary(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        return b"".join(_LENGTH.pack(len(e)) + e for e in tensor.data)
    fmt, _ = _FIXED[tensor.datatype]
    return struct.pack(f"<{len(tensor.data)}{fmt}", *tensor.data)


def _to_json(tensor: Tensor) -> list[Any]:
    if tensor.datatype == "BYTES":
        return [e.decode("utf-8", "replace") for e in tensor.data]
    if tensor.datatype in ("FP16", "BF16"):
        raise TritonError(
            400, f"sending {tensor.datatype} data via JSON is not supported. Please use the "
            "binary data format for output",
        )
    return list(tensor.data)

"""The generate extension's request object, mapped to tensors and parameters as Triton does.

``{"text_input": "...", "parameters": {"stream": true, "temperature": 0}}``: a key (top-level
or inside ``parameters``) that names a model input becomes that input, with the value as its
one element; any other key becomes a request parameter (a string, number or boolean).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from triton_mlx.triton.errors import invalid_arg
from triton_mlx.triton.signature import INPUTS
from triton_mlx.triton.tensors import Tensor, check_parameter_values

_SPECS = {spec.name: spec for spec in INPUTS}


@dataclass
class GenerateRequest:
    id: str | None = None
    inputs: list[Tensor] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)


def parse_generate(document: Any) -> GenerateRequest:
    if not isinstance(document, dict):
        raise invalid_arg("the generate request must be a JSON object")
    request = GenerateRequest()
    for key, value in document.items():
        if key == "id":
            if not isinstance(value, str):
                raise invalid_arg("Unable to parse 'id'")
            request.id = value
        elif key == "parameters":
            if not isinstance(value, dict):
                raise invalid_arg("Expected JSON object for keyword: 'parameters'")
            for name, item in value.items():
                _map(request, name, item)
        else:
            _map(request, key, value)
    check_parameter_values(request.parameters)
    return request


def _map(request: GenerateRequest, name: str, value: Any) -> None:
    spec = _SPECS.get(name)
    if spec is None:
        request.parameters[name] = value
        return
    elements = value if isinstance(value, list) else [value]
    if len(elements) != 1:
        raise invalid_arg(
            f"The schema can not convert input '{name}' to tensor with proper shape"
        )
    element = elements[0]
    if spec.datatype == "BYTES":
        if not isinstance(element, str):
            raise invalid_arg(
                f"Unable to parse 'data': input '{name}' expects a string, got {element!r}"
            )
        data: Any = element.encode("utf-8")
    else:
        if not isinstance(element, bool):
            raise invalid_arg(
                f"Unable to parse 'data': input '{name}' expects a boolean, got {element!r}"
            )
        data = element
    request.inputs = [t for t in request.inputs if t.name != name]
    request.inputs.append(Tensor(name, spec.datatype, [1], [data]))

"""The tensor signature every model is served with, as Triton's vLLM backend defines it.

Inputs: ``text_input`` (BYTES [1], required), ``stream`` (BOOL [1]), ``sampling_parameters``
(BYTES [1], a JSON object as a string) and ``exclude_input_in_output`` (BOOL [1]), all optional
but the first; output: ``text_output`` (BYTES [-1]). The model is decoupled (a streamed request
gets many responses) and does no Triton-side batching (``max_batch_size`` 0): the engine batches
continuously on its own. This module describes the signature (metadata, config) and checks a
request's tensors against it with the messages Triton's core gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from triton_mlx.triton.errors import invalid_arg
from triton_mlx.triton.tensors import RequestedOutput, Tensor

MODEL_VERSION = "1"
PLATFORM = "mlx"
TEXT_INPUT = "text_input"
STREAM = "stream"
SAMPLING_PARAMETERS = "sampling_parameters"
EXCLUDE_INPUT = "exclude_input_in_output"
TEXT_OUTPUT = "text_output"

# Triton's protocol datatype for each config data_type.
_CONFIG_TYPES = {"BYTES": "TYPE_STRING", "BOOL": "TYPE_BOOL", "FP32": "TYPE_FP32"}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # protocol name: BYTES, BOOL
    dims: tuple[int, ...]
    optional: bool = False

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.dims)}


INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec(TEXT_INPUT, "BYTES", (1,)),
    TensorSpec(STREAM, "BOOL", (1,), optional=True),
    TensorSpec(SAMPLING_PARAMETERS, "BYTES", (1,), optional=True),
    TensorSpec(EXCLUDE_INPUT, "BOOL", (1,), optional=True),
)
OUTPUTS: tuple[TensorSpec, ...] = (TensorSpec(TEXT_OUTPUT, "BYTES", (-1,)),)
_INPUTS = {spec.name: spec for spec in INPUTS}
_OUTPUTS = {spec.name: spec for spec in OUTPUTS}


def metadata(
    model: str, inputs: tuple[TensorSpec, ...] = INPUTS, outputs: tuple[TensorSpec, ...] = OUTPUTS
) -> dict[str, Any]:
    """``GET /v2/models/{m}``: KServe's model metadata."""
    return {
        "name": model,
        "versions": [MODEL_VERSION],
        "platform": PLATFORM,
        "inputs": [spec.metadata() for spec in inputs],
        "outputs": [spec.metadata() for spec in outputs],
    }


def config(
    model: str, inputs: tuple[TensorSpec, ...] = INPUTS, outputs: tuple[TensorSpec, ...] = OUTPUTS,
    decoupled: bool = True,
) -> dict[str, Any]:
    """``GET /v2/models/{m}/config``: the JSON form of Triton's ModelConfig for this model."""
    return {
        "name": model,
        "platform": "",
        "backend": PLATFORM,
        "runtime": "",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": 0,
        "input": [
            {
                "name": spec.name,
                "data_type": _CONFIG_TYPES[spec.datatype],
                "format": "FORMAT_NONE",
                "dims": list(spec.dims),
                "is_shape_tensor": False,
                "allow_ragged_batch": False,
                "optional": spec.optional,
            }
            for spec in inputs
        ],
        "output": [
            {
                "name": spec.name,
                "data_type": _CONFIG_TYPES[spec.datatype],
                "dims": list(spec.dims),
                "label_filename": "",
                "is_shape_tensor": False,
            }
            for spec in outputs
        ],
        "batch_input": [],
        "batch_output": [],
        "instance_group": [
            {"name": f"{model}_0", "kind": "KIND_MODEL", "count": 1, "gpus": [],
             "secondary_devices": [], "profile": [], "passive": False, "host_policy": ""}
        ],
        "default_model_filename": "",
        "cc_model_filenames": {},
        "metric_tags": {},
        "parameters": {},
        "model_warmup": [],
        "model_transaction_policy": {"decoupled": decoupled},
    }


@dataclass(frozen=True)
class LLMInputs:
    """The request's inputs, checked: the prompt text and the optional flags."""

    text: str
    stream: bool = False
    exclude_input_in_output: bool | None = None
    sampling_parameters: str | None = None


def check_inputs(model: str, tensors: list[Tensor], request_id: str | None) -> LLMInputs:
    """Check ``tensors`` against the signature, in the order Triton's core does.

    Input count first, then each input's name, data type and shape; the messages carry the
    ``[request id: ...]`` prefix Triton's core puts on them.
    """
    prefix = f"[request id: {request_id or '<id_unknown>'}] "
    by_name: dict[str, Tensor] = {}
    for tensor in tensors:
        by_name[tensor.name] = tensor  # Triton keeps the last of a repeated name
    required = [spec.name for spec in INPUTS if not spec.optional]
    missing = [name for name in required if name not in by_name]
    if len(by_name) > len(INPUTS) or missing:
        got = "[" + ",".join(f"'{name}'" for name in by_name) + "]"
        need = "[" + ",".join(f"'{name}'" for name in missing) + "]"
        raise invalid_arg(
            f"{prefix}expected number of inputs between {len(required)} and {len(INPUTS)} but "
            f"got {len(by_name)} inputs for model '{model}'. Got inputs {got}, but missing "
            f"required inputs {need}. Please provide all required inputs."
        )
    for tensor in by_name.values():
        spec = _INPUTS.get(tensor.name)
        if spec is None:
            raise invalid_arg(f"unexpected inference input '{tensor.name}' for model '{model}'")
        check_tensor(model, tensor, spec, prefix)
    return LLMInputs(
        text=_text(by_name[TEXT_INPUT]),
        stream=_flag(by_name.get(STREAM)) or False,
        exclude_input_in_output=_flag(by_name.get(EXCLUDE_INPUT)),
        sampling_parameters=(
            _text(by_name[SAMPLING_PARAMETERS]) if SAMPLING_PARAMETERS in by_name else None
        ),
    )


def check_outputs(model: str, outputs: list[RequestedOutput] | None) -> None:
    for output in outputs or ():
        if output.name not in _OUTPUTS:
            raise invalid_arg(f"unexpected inference output '{output.name}' for model '{model}'")


def check_tensor(model: str, tensor: Tensor, spec: TensorSpec, prefix: str) -> None:
    """The data type and shape of one input, with Triton core's messages."""
    if tensor.datatype != spec.datatype:
        raise invalid_arg(
            f"{prefix}inference input '{tensor.name}' data-type is '{tensor.datatype}', but "
            f"model '{model}' expects '{spec.datatype}'"
        )
    if not _shape_matches(tensor.shape, spec.dims):
        raise invalid_arg(
            f"{prefix}unexpected shape for input '{tensor.name}' for model '{model}'. "
            f"Expected {_dims(spec.dims)}, got {_dims(tensor.shape)}. "
        )


def _shape_matches(shape: list[int], dims: tuple[int, ...]) -> bool:
    return len(shape) == len(dims) and all(d in (-1, s) for s, d in zip(shape, dims, strict=True))


def _dims(dims: Any) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _text(tensor: Tensor) -> str:
    try:
        return tensor.data[0].decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_arg(f"input '{tensor.name}' is not valid UTF-8 text") from None


def _flag(tensor: Tensor | None) -> bool | None:
    return None if tensor is None else bool(tensor.data[0])

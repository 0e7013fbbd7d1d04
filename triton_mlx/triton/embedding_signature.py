"""The tensor signature embedding models are served with on the Triton side.

Input: ``text_input`` (BYTES [-1]: one UTF-8 text per element); output: ``embedding``
(FP32 [-1, dimensions]: one row per text, pooled and normalised as ``/v1/embeddings`` does).
Not decoupled: one request, one response. Texts are truncated to the model's maximum length,
as on the OpenAI side.
"""

from __future__ import annotations

from typing import Any

from triton_mlx.triton.errors import invalid_arg
from triton_mlx.triton.signature import TEXT_INPUT, TensorSpec, check_tensor, config, metadata
from triton_mlx.triton.tensors import RequestedOutput, Tensor

EMBEDDING_OUTPUT = "embedding"
INPUTS: tuple[TensorSpec, ...] = (TensorSpec(TEXT_INPUT, "BYTES", (-1,)),)


def outputs(dimensions: int) -> tuple[TensorSpec, ...]:
    return (TensorSpec(EMBEDDING_OUTPUT, "FP32", (-1, dimensions)),)


def embedding_metadata(model: str, dimensions: int) -> dict[str, Any]:
    return metadata(model, INPUTS, outputs(dimensions))


def embedding_config(model: str, dimensions: int) -> dict[str, Any]:
    return config(model, INPUTS, outputs(dimensions), decoupled=False)


def check_inputs(model: str, tensors: list[Tensor], request_id: str | None) -> list[str]:
    """The texts to embed; Triton core's messages for a wrong input set, type or shape."""
    prefix = f"[request id: {request_id or '<id_unknown>'}] "
    names = {tensor.name for tensor in tensors}
    if names != {TEXT_INPUT}:
        got = "[" + ",".join(f"'{name}'" for name in sorted(names)) + "]"
        raise invalid_arg(
            f"{prefix}expected 1 inputs but got {len(names)} inputs for model '{model}'. "
            f"Got inputs {got}, expected ['{TEXT_INPUT}']."
        )
    tensor = [t for t in tensors if t.name == TEXT_INPUT][-1]
    check_tensor(model, tensor, INPUTS[0], prefix)
    if not tensor.data:
        raise invalid_arg(f"{prefix}input '{TEXT_INPUT}' holds no texts")
    texts = []
    for i, element in enumerate(tensor.data):
        try:
            text = element.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid_arg(f"input '{TEXT_INPUT}'[{i}] is not valid UTF-8 text") from None
        if not text:
            raise invalid_arg(f"input '{TEXT_INPUT}'[{i}] is an empty string")
        texts.append(text)
    return texts


def check_outputs(model: str, requested: list[RequestedOutput] | None) -> None:
    for output in requested or ():
        if output.name != EMBEDDING_OUTPUT:
            raise invalid_arg(f"unexpected inference output '{output.name}' for model '{model}'")

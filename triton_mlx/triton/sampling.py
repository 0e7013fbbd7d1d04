"""Sampling parameters, as Triton's vLLM backend takes them, read with the serving layer's table.

They come from the ``sampling_parameters`` input (a JSON object in a string) or, without it,
from the request's parameters (``/infer``'s ``parameters``, ``/generate``'s extra keys), as the
vLLM backend reads them. Like vLLM, a ``null`` value means "the default" and numbers may be
sent as strings (``{"temperature": "0.1", "max_tokens": "100"}``, as vLLM's own sample client
does). Names and ranges are the table's (``serving/parameters.py``); a parameter this server
does not implement is refused with a 400 that names it, never ignored.
"""

from __future__ import annotations

import json
from typing import Any

from triton_mlx.http.messages import ClientJSONError, loads_client_json
from triton_mlx.serving.errors import RequestError
from triton_mlx.serving.parameters import (
    TRITON,
    Dialect,
    GenerationParams,
    names_for,
    read_parameters,
)
from triton_mlx.triton.errors import from_request_error, invalid_arg

SUPPORTED = names_for(TRITON)


def parse_json_parameters(text: str) -> dict[str, Any]:
    """The ``sampling_parameters`` input: a JSON object."""
    try:
        value = loads_client_json(text)
    except (json.JSONDecodeError, ClientJSONError) as exc:
        raise invalid_arg(f"sampling_parameters is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise invalid_arg("sampling_parameters must be a JSON object")
    return value


def generation_params(raw: dict[str, Any], source: str) -> GenerationParams:
    """Validate ``raw`` (from ``source``, named in errors) into generation parameters."""
    unknown = [k for k, v in raw.items() if v is not None and k not in SUPPORTED]
    if unknown:
        names = ", ".join(f"'{k}'" for k in unknown)
        raise invalid_arg(
            f"{source}: unsupported sampling parameter(s) {names}; this server supports "
            f"{', '.join(SUPPORTED)}"
        )
    try:
        return read_parameters(raw, Dialect(TRITON, strings_as_numbers=True, source=source))
    except RequestError as exc:
        raise from_request_error(exc, source) from None

"""Sampling parameters, as Triton's vLLM backend takes them, validated like the OpenAI API's.

They come from the ``sampling_parameters`` input (a JSON object in a string) or, without it,
from the request's parameters (``/infer``'s ``parameters``, ``/generate``'s extra keys), as the
vLLM backend reads them. Like vLLM, a ``null`` value means "the default" and numbers may be
sent as strings (``{"temperature": "0.1", "max_tokens": "100"}``, as vLLM's own sample client
does). The names and ranges are the OpenAI API's; a parameter this server does not implement
is refused with a 400 that names it, never ignored.
"""

from __future__ import annotations

import json
import math
from typing import Any

from triton_mlx.http.messages import ClientJSONError, loads_client_json
from triton_mlx.openai.validation import MAX_STOP_STRINGS, GenerationParams
from triton_mlx.triton.errors import invalid_arg

SUPPORTED = (
    "temperature", "top_p", "top_k", "min_p", "max_tokens", "stop", "seed",
    "frequency_penalty", "presence_penalty", "repetition_penalty", "logit_bias",
)
# vLLM parameters accepted only at the value that changes nothing.
_NO_OP = {
    "n": 1, "best_of": 1, "ignore_eos": False, "min_tokens": 0,
    "include_stop_str_in_output": False, "detokenize": True,
}


def parse_json_parameters(text: str) -> dict[str, Any]:
    """The ``sampling_parameters`` input: a JSON object."""
    try:
        value = loads_client_json(text)
    except (json.JSONDecodeError, ClientJSONError) as exc:
        raise invalid_arg(f"sampling_parameters is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise invalid_arg("sampling_parameters must be a JSON object")
    return value


def generation_params(model: str, raw: dict[str, Any], source: str) -> GenerationParams:
    """Validate ``raw`` (from ``source``, named in errors) into engine-ready parameters."""
    values = {k: v for k, v in raw.items() if v is not None}
    unknown = [k for k in values if k not in SUPPORTED and k not in _NO_OP]
    if unknown:
        names = ", ".join(f"'{k}'" for k in unknown)
        raise invalid_arg(
            f"{source}: unsupported sampling parameter(s) {names}; this server supports "
            f"{', '.join(SUPPORTED)}"
        )
    for name, default in _NO_OP.items():
        if name in values and _coerce_like(default, values[name], name, source) != default:
            raise invalid_arg(
                f"{source}: {name}={values[name]!r} is not supported by this server "
                f"(only {json.dumps(default)})"
            )
    p = _Reader(values, source)
    top_k = p.integer("top_k", minimum=-1)
    repetition = p.number("repetition_penalty", 0.0, 10.0)
    if repetition is not None and repetition <= 0:
        raise invalid_arg(f"{source}: repetition_penalty must be > 0")
    top_p = p.number("top_p", 0.0, 1.0)
    return GenerationParams(
        model=model,
        temperature=p.number("temperature", 0.0, 2.0),
        top_p=1.0 if top_p is None else top_p,
        top_k=0 if top_k in (None, -1) else top_k,
        min_p=p.number("min_p", 0.0, 1.0) or 0.0,
        max_tokens=p.integer("max_tokens", minimum=1),
        stop=p.stop(),
        frequency_penalty=p.number("frequency_penalty", -2.0, 2.0) or 0.0,
        presence_penalty=p.number("presence_penalty", -2.0, 2.0) or 0.0,
        repetition_penalty=1.0 if repetition is None else repetition,
        seed=p.integer("seed", minimum=-(2**63), maximum=2**64 - 1),
        logit_bias=p.logit_bias(),
    )


def _coerce_like(default: Any, value: Any, name: str, source: str) -> Any:
    reader = _Reader({name: value}, source)
    if isinstance(default, bool):
        return reader.boolean(name)
    return reader.integer(name, minimum=-(2**63))


class _Reader:
    """Typed access to the parameters, with vLLM's leniency for numbers sent as strings."""

    def __init__(self, values: dict[str, Any], source: str) -> None:
        self.values = values
        self.source = source

    def _fail(self, name: str, what: str) -> Exception:
        return invalid_arg(f"{self.source}: {name} {what}, got {json.dumps(self.values[name])}")

    def number(self, name: str, low: float, high: float) -> float | None:
        value = self.values.get(name)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise self._fail(name, "must be a number") from None
        if isinstance(value, bool) or not isinstance(value, int | float) or (
            isinstance(value, float) and not math.isfinite(value)  # an int may exceed a float
        ):
            raise self._fail(name, "must be a number")
        if not low <= value <= high:
            raise self._fail(name, f"must be between {low:g} and {high:g}")
        return float(value)

    def integer(self, name: str, *, minimum: int, maximum: int | None = None) -> int | None:
        value = self.values.get(name)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise self._fail(name, "must be an integer") from None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(name, "must be an integer")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            raise self._fail(name, f"must be {bound}")
        return value

    def boolean(self, name: str) -> bool:
        value = self.values[name]
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise self._fail(name, "must be a boolean")
        return value

    def stop(self) -> list[str]:
        value = self.values.get("stop")
        if value is None:
            return []
        stops = [value] if isinstance(value, str) else value
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise self._fail("stop", "must be a string or a list of strings")
        if len(stops) > MAX_STOP_STRINGS:
            raise self._fail("stop", f"may hold at most {MAX_STOP_STRINGS} strings")
        if any(s == "" for s in stops):
            raise self._fail("stop", "strings must not be empty")
        return stops

    def logit_bias(self) -> dict[int, float]:
        value = self.values.get("logit_bias")
        if value is None:
            return {}
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):  # bad JSON, too deep, too many digits
                value = None
        if not isinstance(value, dict):
            raise self._fail("logit_bias", "must be an object of token ids to numbers")
        bias: dict[int, float] = {}
        for key, weight in value.items():
            try:
                token = int(key) if key.strip().lstrip("-").isdigit() else -1
            except ValueError:  # more digits than int() converts
                token = -1
            if token < 0:
                raise invalid_arg(f"{self.source}: logit_bias key {key!r} is not a token id")
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise invalid_arg(f"{self.source}: logit_bias values must be numbers")
            if not -100 <= weight <= 100:
                raise invalid_arg(f"{self.source}: logit_bias values must be between -100 and 100")
            bias[token] = float(weight)
        return bias

"""Generation parameters: one declarative table, read the same way by every front-end.

Each row says a parameter's type, range, default, which protocols accept it, and where it is
accepted at its default only (a parameter we do not implement there: accepted when it changes
nothing, refused with a 400 naming it otherwise; never ignored). The OpenAI validation, Triton's
``sampling_parameters`` and the OpenAPI document's limits all come from this table, so a range
is written once.

Protocols differ only in how lenient they are, which a :class:`Dialect` says: Triton's vLLM
backend takes numbers sent as strings (``{"temperature": "0.1"}``) and whole floats as integers;
OpenAI takes JSON numbers only. ``null`` means "the default" everywhere.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from triton_mlx.serving.errors import RequestError, invalid
from triton_mlx.serving.structured import structured_outputs_grammar

CHAT = "chat"
COMPLETIONS = "completions"
TRITON = "triton"
ALL_PROTOCOLS = frozenset({CHAT, COMPLETIONS, TRITON})

MAX_STOP_STRINGS = 16
MAX_CHOICES = 64
MAX_LOGPROBS = 20
MAX_BIAS = 100.0


@dataclass(frozen=True)
class Parameter:
    """One generation parameter: ``kind`` is "number", "integer", "boolean", "stop" or
    "logit_bias"; ``minimum``/``maximum`` bound numbers (``exclusive_minimum``: strictly above)."""

    name: str
    kind: str
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    protocols: frozenset[str] = ALL_PROTOCOLS
    default_only_in: frozenset[str] = frozenset()
    """Protocols that accept the parameter at its default value only."""
    description: str = ""
    field: str = ""
    """The ``GenerationParams`` field it fills, when not its own name."""

    def accepted_in(self, protocol: str) -> bool:
        return protocol in self.protocols


PARAMETERS: tuple[Parameter, ...] = (
    Parameter("temperature", "number", None, 0.0, 2.0, description=(
        "Defaults to the model's ``default_temperature``, else 1. 0 is greedy.")),
    Parameter("top_p", "number", 1.0, 0.0, 1.0),
    Parameter("top_k", "integer", 0, -1, description="0 or -1: no top-k filtering."),
    Parameter("min_p", "number", 0.0, 0.0, 1.0),
    Parameter("max_tokens", "integer", None, 1, description=(
        "Tokens to generate; defaults to ``--default-max-tokens`` trimmed to the model. Beyond "
        "the model's ``max_tokens`` or its context: 400.")),
    Parameter("min_tokens", "integer", 0, 0, description=(
        "vLLM's extension: no end-of-sequence token and no stop string ends the generation "
        "before this many tokens. At most ``max_tokens``.")),
    Parameter("ignore_eos", "boolean", False, description=(
        "vLLM's extension: go on past end-of-sequence tokens up to ``max_tokens`` (fixed "
        "output lengths, as benchmark clients ask).")),
    Parameter("stop", "stop", (), maximum=MAX_STOP_STRINGS, description=(
        f"Up to {MAX_STOP_STRINGS} strings that end the generation, matched on the text (also "
        "when split across tokens) and never included in it.")),
    Parameter("frequency_penalty", "number", 0.0, -2.0, 2.0),
    Parameter("presence_penalty", "number", 0.0, -2.0, 2.0),
    Parameter("repetition_penalty", "number", 1.0, 0.0, 10.0, exclusive_minimum=True),
    Parameter("seed", "integer", None, -(2**63), 2**64 - 1, description=(
        "Reproducible sampling, also while batched; choice i of ``n`` samples with seed + i.")),
    Parameter("logit_bias", "logit_bias", None, -MAX_BIAS, MAX_BIAS, description=(
        "Token id (decimal string) to a bias added to its logit. Ids must be below the "
        "model's vocabulary size.")),
    Parameter("structured_outputs", "structured", None, field="grammar", description=(
        "vLLM's structured output: exactly one of ``json`` (a JSON schema), ``regex``, "
        "``choice`` (a list of strings) or ``grammar`` (Lark or GBNF), enforced on every "
        "token. A constraint that cannot be enforced as given is a 400.")),
    Parameter("n", "integer", 1, 1, MAX_CHOICES, default_only_in=frozenset({TRITON}),
              description="Choices per prompt, at most the model's batch slots "
                          "(``max_batch_size``)."),
    Parameter("best_of", "integer", 1, 1, protocols=frozenset({COMPLETIONS, TRITON}),
              default_only_in=frozenset({COMPLETIONS, TRITON}),
              description="Best-of sampling is not supported: 1 or null only."),
    Parameter("include_stop_str_in_output", "boolean", False, protocols=frozenset({TRITON}),
              default_only_in=frozenset({TRITON})),
    Parameter("detokenize", "boolean", True, protocols=frozenset({TRITON}),
              default_only_in=frozenset({TRITON})),
)
BY_NAME = {p.name: p for p in PARAMETERS}


def names_for(protocol: str) -> tuple[str, ...]:
    """The table's parameters a protocol accepts, in table order."""
    return tuple(p.name for p in PARAMETERS if p.accepted_in(protocol))


@dataclass(frozen=True)
class Dialect:
    """How leniently one protocol reads values, and how its messages name the source."""

    protocol: str
    strings_as_numbers: bool = False
    """Numbers and booleans may come as strings ("0.5", "100", "true"), as vLLM reads them."""
    source: str = ""
    """Prefixed to messages ("sampling_parameters: ...") where the protocol has no ``param``."""


@dataclass
class GenerationParams:
    """Validated generation parameters, before model-specific defaults are applied."""

    temperature: float | None = None
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    max_tokens: int | None = None
    min_tokens: int = 0
    ignore_eos: bool = False
    stop: list[str] = field(default_factory=list)
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    logit_bias: dict[int, float] = field(default_factory=dict)
    n: int = 1
    logprobs: int | None = None
    """None: none; k: each token's log probability and its k most likely alternatives."""
    grammar: str | None = None
    """An llguidance grammar every token must follow (``serving/structured.py``)."""
    keep_special_tokens: bool = False
    """Keep special tokens in the text (tool-call markers that are special tokens)."""


def read_parameters(values: dict[str, Any], dialect: Dialect) -> GenerationParams:
    """Validate the table's parameters found in ``values`` (other keys are the caller's).

    Raises :class:`RequestError` (400) naming the first parameter at fault.
    """
    reader = _Reader(dialect)
    read: dict[str, Any] = {}
    for parameter in PARAMETERS:
        value = values.get(parameter.name)
        if value is None or not parameter.accepted_in(dialect.protocol):
            continue
        value = reader.read(parameter, value)
        if dialect.protocol in parameter.default_only_in:
            if value != parameter.default:
                raise reader.error(parameter.name, (
                    f"{parameter.name}={json.dumps(values[parameter.name])} is not supported "
                    f"by this server (only {json.dumps(parameter.default)})"))
            continue
        read[parameter.field or parameter.name] = value
    if read.get("top_k") == -1:
        read["top_k"] = 0  # vLLM's "no top-k"
    if "stop" in read:
        read["stop"] = list(read["stop"])
    params = GenerationParams(**read)
    if params.max_tokens is not None and params.min_tokens > params.max_tokens:
        raise reader.error("min_tokens", (
            f"min_tokens ({params.min_tokens}) must be at most max_tokens "
            f"({params.max_tokens})"))
    return params


class _Reader:
    """Typed reading of one value against its row, in one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect

    def error(self, name: str, message: str) -> RequestError:
        prefix = f"{self.dialect.source}: " if self.dialect.source else ""
        return invalid(prefix + message, name)

    def read(self, parameter: Parameter, value: Any) -> Any:
        kind = parameter.kind
        if kind == "number":
            return self._number(parameter, value)
        if kind == "integer":
            return self._integer(parameter, value)
        if kind == "boolean":
            return self._boolean(parameter.name, value)
        if kind == "stop":
            return self._stop(parameter, value)
        if kind == "structured":
            try:
                return structured_outputs_grammar(value, parameter.name)
            except RequestError as exc:
                raise self.error(parameter.name, exc.message) from None
        return self._logit_bias(parameter, value)

    def _got(self, value: Any) -> str:
        try:
            return json.dumps(value)
        except (TypeError, ValueError):
            return repr(value)

    def _range_error(self, parameter: Parameter, value: Any) -> RequestError:
        low, high, name = parameter.minimum, parameter.maximum, parameter.name
        if parameter.exclusive_minimum:
            bound = f"> {low:g} and <= {high:g}"
        elif high is None:
            bound = f">= {low}"
        elif parameter.kind == "integer":
            bound = f"between {low} and {high}"
        else:
            bound = f"between {low:g} and {high:g}"
        return self.error(name, f"{name} must be {bound}, got {self._got(value)}")

    def _in_range(self, parameter: Parameter, value: float) -> bool:
        low, high = parameter.minimum, parameter.maximum
        if low is not None and (value <= low if parameter.exclusive_minimum else value < low):
            return False
        return high is None or value <= high

    def _number(self, parameter: Parameter, value: Any) -> float:
        name = parameter.name
        if isinstance(value, str) and self.dialect.strings_as_numbers:
            try:
                value = float(value)
            except ValueError:
                raise self.error(name, f"{name} must be a number, got {self._got(value)}") from None
        if isinstance(value, bool) or not isinstance(value, int | float) or (
            isinstance(value, float) and not math.isfinite(value)  # an int may exceed a float
        ):
            raise self.error(name, f"{name} must be a number, got {self._got(value)}")
        if not self._in_range(parameter, value):
            raise self._range_error(parameter, value)
        return float(value)

    def _integer(self, parameter: Parameter, value: Any) -> int:
        name = parameter.name
        original = value
        if self.dialect.strings_as_numbers:
            if isinstance(value, str):
                try:
                    value = int(value.strip())
                except ValueError:  # not a number, or more digits than int() converts
                    raise self.error(name, f"{name} must be an integer, got "
                                           f"{self._got(original)}") from None
            elif isinstance(value, float) and value.is_integer():
                value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"{name} must be an integer, got {self._got(original)}")
        if not self._in_range(parameter, value):
            raise self._range_error(parameter, value)
        return value

    def _boolean(self, name: str, value: Any) -> bool:
        if (isinstance(value, str) and self.dialect.strings_as_numbers
                and value.lower() in ("true", "false")):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise self.error(name, f"{name} must be a boolean, got {self._got(value)}")
        return value

    def _stop(self, parameter: Parameter, value: Any) -> list[str]:
        stops = [value] if isinstance(value, str) else value
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise self.error("stop", "stop must be a string or a list of strings")
        if len(stops) > MAX_STOP_STRINGS:
            raise self.error("stop", f"stop may hold at most {MAX_STOP_STRINGS} strings")
        if any(s == "" for s in stops):
            raise self.error("stop", "stop strings must not be empty")
        return stops

    def _logit_bias(self, parameter: Parameter, value: Any) -> dict[int, float]:
        if isinstance(value, str) and self.dialect.strings_as_numbers:
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):  # bad JSON, too deep, too many digits
                value = None
        if not isinstance(value, dict):
            raise self.error("logit_bias",
                             "logit_bias must be an object mapping token ids to numbers")
        bias: dict[int, float] = {}
        for key, weight in value.items():
            # Decimal digits only: not " 5", "+5", "1_0", "-1"; int() refuses over 4300 digits.
            if not (key.isascii() and key.isdigit()) or len(key) > 20:
                raise self.error("logit_bias", f"logit_bias key {key!r} is not a token id")
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise self.error("logit_bias", "logit_bias values must be numbers")
            if not -MAX_BIAS <= weight <= MAX_BIAS:
                raise self.error("logit_bias", f"logit_bias values must be between "
                                               f"{-MAX_BIAS:g} and {MAX_BIAS:g}")
            bias[int(key)] = float(weight)
        return bias

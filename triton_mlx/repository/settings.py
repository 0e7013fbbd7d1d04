"""Per-model settings from ``triton_mlx.json`` beside a model's ``config.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from triton_mlx.serving.tool_calls import FORMATS

SETTINGS_FILE = "triton_mlx.json"
TOOL_CALL_FORMATS = ("default", *FORMATS)


class ModelFolderError(Exception):
    """A model folder cannot be served; the message says why, for logs and the model list."""


@dataclass(frozen=True)
class ModelSettings:
    """What a model's owner may set; ``None`` means the server-wide default applies."""

    display_name: str | None = None
    max_batch_size: int | None = None
    max_tokens: int | None = None
    default_temperature: float | None = None
    tool_call_format: str | None = None
    """Overrides the tool-call format detected from the chat template (``serving.tool_calls``
    formats, or ``default``)."""
    matryoshka: bool = False
    """The model was trained so that its vectors' leading dimensions embed on their own
    (Matryoshka representation learning): only then does ``dimensions`` truncate them."""


def read_settings(folder: Path) -> ModelSettings:
    """Parse and validate ``triton_mlx.json``; a missing file means all defaults.

    Unknown keys are rejected rather than ignored, so a typo never silently does nothing.
    """
    path = folder / SETTINGS_FILE
    if not path.exists():
        return ModelSettings()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"{SETTINGS_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelFolderError(f"{SETTINGS_FILE} must hold a JSON object")
    unknown = sorted(set(data) - set(ModelSettings.__dataclass_fields__))
    if unknown:
        raise ModelFolderError(f"{SETTINGS_FILE} has unknown keys: {', '.join(unknown)}")
    display_name = data.get("display_name")
    if display_name is not None and not isinstance(display_name, str):
        raise ModelFolderError(f"{SETTINGS_FILE}: display_name must be a string")
    matryoshka = data.get("matryoshka", False)
    if not isinstance(matryoshka, bool):
        raise ModelFolderError(f"{SETTINGS_FILE}: matryoshka must be true or false")
    tool_call_format = data.get("tool_call_format")
    if tool_call_format is not None and tool_call_format not in TOOL_CALL_FORMATS:
        raise ModelFolderError(f"{SETTINGS_FILE}: tool_call_format must be one of "
                               f"{', '.join(TOOL_CALL_FORMATS)}, got {tool_call_format!r}")
    return ModelSettings(
        display_name=display_name,
        tool_call_format=tool_call_format,
        matryoshka=matryoshka,
        max_batch_size=_positive_int(data, "max_batch_size"),
        max_tokens=_positive_int(data, "max_tokens"),
        default_temperature=_temperature(data),
    )


def _positive_int(data: dict, key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelFolderError(f"{SETTINGS_FILE}: {key} must be an integer >= 1, got {value!r}")
    return value


def _temperature(data: dict) -> float | None:
    value = data.get("default_temperature")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 2:
        raise ModelFolderError(
            f"{SETTINGS_FILE}: default_temperature must be a number in [0, 2], got {value!r}"
        )
    return float(value)

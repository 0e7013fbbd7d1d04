"""Explicit model control, shared by both front-ends: they only translate the errors."""

from __future__ import annotations

from triton_mlx.repository.repository import (
    ModelLoadError,
    ModelNotFound,
    ModelRepository,
    ModelState,
)


class ControlNotAllowed(Exception):
    """Load and unload are refused outside explicit mode."""


def check_allowed(repository: ModelRepository) -> None:
    if repository.config.model_control_mode != "explicit":
        raise ControlNotAllowed(repository.config.model_control_mode)


async def load_model(repository: ModelRepository, name: str) -> None:
    """Load ``name``, or reload it when loaded (Triton's behaviour: a failed reload keeps the
    loaded model). Raises ControlNotAllowed, ModelNotFound or ModelLoadError."""
    check_allowed(repository)
    entry = await repository.load(name)
    if entry.state is not ModelState.READY:
        raise ModelLoadError(name, entry.reason)


async def unload_model(repository: ModelRepository, name: str) -> None:
    """Unload ``name``; a folder that is not loaded is a no-op. Raises ControlNotAllowed or
    ModelNotFound (neither an entry nor a folder of that name)."""
    check_allowed(repository)
    if repository.get(name) is None:
        repository.refresh_unloaded()
        if repository.get(name) is None:
            raise ModelNotFound(name)
    await repository.unload(name)

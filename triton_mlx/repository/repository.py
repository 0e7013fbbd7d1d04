"""The model repository: one sub-folder with a ``config.json`` per model.

A folder's name is the model's id. Each model goes through LOADING to READY, or to UNAVAILABLE
with a reason; one broken folder is logged and listed, and never stops the server or the other
models.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from triton_mlx import blas
from triton_mlx.config import ServerConfig
from triton_mlx.engine.runtime_profile import on_gpu
from triton_mlx.repository.loading import load_served_model
from triton_mlx.repository.served import ServedModel
from triton_mlx.repository.settings import ModelFolderError, ModelSettings, read_settings
from triton_mlx.serving.prompts import ChatTemplateError

logger = logging.getLogger("triton_mlx.repository")

UNLOADED = "unloaded"
"""Triton's reason for a folder of the repository that is not loaded (explicit mode)."""
RETIRE_GRACE_SECONDS = 30.0
"""How long a replaced or unloaded engine may finish its running and queued requests."""


class ModelNotFound(LookupError):
    """No folder with a ``config.json`` of that name in the repository."""


class ModelState(enum.StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass
class ModelEntry:
    """One folder of the repository and what became of it."""

    name: str
    path: Path
    state: ModelState
    reason: str = ""
    settings: ModelSettings = field(default_factory=ModelSettings)
    model: ServedModel | None = None
    fingerprint: tuple = ()
    """Names, sizes and mtimes of the folder's files when it was last (tried to be) loaded."""

    @property
    def display_name(self) -> str:
        return self.settings.display_name or self.name


class ModelRepository:
    """Discovers, loads and unloads the models of one repository folder."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.root = Path(config.model_repository)
        self._entries: dict[str, ModelEntry] = {}
        self._chat_template_override = (
            config.chat_template.read_text(encoding="utf-8") if config.chat_template else None
        )
        self._blas_logged = False
        self._locks: dict[str, asyncio.Lock] = {}
        self._retiring: dict[asyncio.Task, ServedModel] = {}
        self.retire_grace = RETIRE_GRACE_SECONDS

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def discover(self) -> list[str]:
        """Names of the sub-folders that hold a ``config.json``, sorted."""
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / "config.json").is_file()
        )

    async def load_all(self) -> None:
        """Load every discovered model, one at a time so peaks of memory never add up."""
        for name in self.discover():
            await self.load(name)

    async def start(self, load_models: tuple[str, ...] = ()) -> None:
        """The first load of the control mode: all models (none, poll), else only
        ``load_models``; in explicit mode the other folders are listed as unloaded."""
        if self.config.model_control_mode != "explicit":
            await self.load_all()
            return
        self.refresh_unloaded()
        for name in load_models:
            try:
                await self.load(name)
            except ModelNotFound:
                logger.error("failed to poll model '%s': model not found in the repository", name)

    def refresh_unloaded(self) -> None:
        """Explicit mode: list new folders as UNAVAILABLE "unloaded", forget vanished ones."""
        names = set(self.discover())
        for name in names - set(self._entries):
            self._entries[name] = ModelEntry(
                name=name, path=self.root / name, state=ModelState.UNAVAILABLE, reason=UNLOADED
            )
        for name in set(self._entries) - names:
            entry = self._entries[name]
            if entry.model is None and entry.state is ModelState.UNAVAILABLE:
                del self._entries[name]

    async def load(self, name: str, fingerprint: tuple | None = None) -> ModelEntry:
        """Load ``name``, or reload it if it is loaded: the old engine serves until the new one
        is READY, then finishes its requests and stops. A failed reload keeps the old one."""
        path = self.root / name
        if not (path / "config.json").is_file() or name.startswith(".") or "/" in name:
            raise ModelNotFound(name)
        async with self._lock(name):
            if fingerprint is None:
                fingerprint = await asyncio.to_thread(folder_fingerprint, path)
            entry = self._entries.get(name)
            old = entry.model if entry is not None and entry.state is ModelState.READY else None
            if old is not None and getattr(old.worker, "layout", None) is not None:
                # Split across ranks (``distributed``): the new copy cannot load beside the
                # old one, whose shards fill the ranks' memory, and one split model steps at a
                # time. So it stops first, on every rank; the model is LOADING meanwhile.
                logger.info("model %s is split across ranks: stopping it before the reload",
                            name)
                entry.model, entry.state = None, ModelState.LOADING
                await self._drain_and_stop(old)
                old = None
            if old is None:
                entry = ModelEntry(name=name, path=path, state=ModelState.LOADING)
                self._entries[name] = entry
            entry.fingerprint = fingerprint
            self._log_blas_once()
            logger.info("%s model %s from %s", "reloading" if old else "loading", name, path)
            started = time.perf_counter()
            try:
                settings = read_settings(path)
                model = await asyncio.to_thread(
                    load_served_model, name, path, settings, self.config,
                    self._chat_template_override,
                )
            except Exception as exc:  # any failure makes this model, and only it, unavailable
                reason = _describe(exc)
                if not isinstance(exc, ModelFolderError | ChatTemplateError):
                    logger.debug("load failure of %s", name, exc_info=exc)
                if old is not None:
                    logger.error("reload of model %s failed, the loaded one serves on: %s",
                                 name, reason)
                    raise ModelLoadError(name, reason) from None
                entry.state = ModelState.UNAVAILABLE
                entry.reason = reason
                logger.error("model %s is unavailable: %s", name, entry.reason)
                return entry
            entry.settings = settings
            entry.model = model
            entry.reason = ""
            entry.state = ModelState.READY
            if old is not None:
                self._retire(old)
            logger.info("model %s is ready (%.1f s)", name, time.perf_counter() - started)
            profile = getattr(model, "runtime_profile", None)  # chat models have one
            if profile is not None:
                level = logging.WARNING if profile.warning else logging.INFO
                logger.log(level, "model %s: %s", name, profile.describe())
            return entry

    async def unload(self, name: str, *, forget: bool = False) -> None:
        """UNLOADING, let its requests finish (up to the grace period), stop the engine; then
        UNAVAILABLE "unloaded", or gone from the repository when ``forget``."""
        async with self._lock(name):
            entry = self._entries.get(name)
            if entry is None:
                return
            model, entry.model = entry.model, None
            entry.state = ModelState.UNLOADING
            if model is not None:
                logger.info("unloading model %s", name)
                await self._drain_and_stop(model)
            if forget:
                self._entries.pop(name, None)
            else:
                entry.state = ModelState.UNAVAILABLE
                entry.reason = UNLOADED

    def _retire(self, model: ServedModel) -> None:
        task = asyncio.get_running_loop().create_task(self._drain_and_stop(model))
        self._retiring[task] = model
        task.add_done_callback(lambda done: self._retiring.pop(done, None))

    def retiring(self) -> list[ServedModel]:
        """Replaced models still finishing their requests."""
        return list(self._retiring.values())

    async def _drain_and_stop(self, model: ServedModel) -> None:
        deadline = time.monotonic() + self.retire_grace
        while time.monotonic() < deadline:
            stats = model.worker.stats()
            if stats.running == 0 and stats.queued == 0:
                break
            await asyncio.sleep(0.05)
        await asyncio.to_thread(model.worker.stop)

    def _log_blas_once(self) -> None:
        """Say which BLAS MLX's CPU backend uses; a warning when a CPU run is on the slow one."""
        if self._blas_logged:
            return
        self._blas_logged = True
        slow = blas.loaded_blas() is None and sys.platform.startswith("linux") and not on_gpu()
        logger.log(logging.WARNING if slow else logging.INFO, "BLAS: %s", blas.blas_status())

    def get(self, name: str) -> ModelEntry | None:
        return self._entries.get(name)

    def entries(self) -> list[ModelEntry]:
        return [self._entries[name] for name in sorted(self._entries)]

    @property
    def ready(self) -> bool:
        """True when at least one model serves and none is still loading."""
        entries = self._entries.values()
        return (any(_serving(e) for e in entries)
                and all(e.state is not ModelState.LOADING for e in entries))

    @property
    def strictly_ready(self) -> bool:
        """Triton's strict readiness: every model that should be loaded is READY (folders
        unloaded on purpose in explicit mode do not count)."""
        return all(
            _serving(e)
            for e in self._entries.values()
            if not (e.state is ModelState.UNAVAILABLE and e.reason == UNLOADED)
        )

    async def close(self) -> None:
        for task, model in list(self._retiring.items()):
            task.cancel()
            with suppress(BaseException):
                await task
            await asyncio.to_thread(model.worker.stop)
        for entry in self._entries.values():
            if entry.model is not None:
                entry.state = ModelState.UNLOADING
                await asyncio.to_thread(entry.model.worker.stop)
                entry.model = None


class ModelLoadError(Exception):
    """A (re)load that failed; the reason is Triton's ``UNAVAILABLE`` reason."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(reason)
        self.name = name
        self.reason = reason


def _serving(entry: ModelEntry) -> bool:
    """READY, and its engine still answers (a model split across ranks whose other ranks have
    gone quiet does not: ``distributed.watchdog``)."""
    return (entry.state is ModelState.READY and entry.model is not None
            and getattr(entry.model.worker, "answering", True))


def folder_fingerprint(path: Path) -> tuple:
    """(relative path, size, mtime_ns) of every file under ``path``, sorted; () if gone."""
    items = []
    try:
        for file in path.rglob("*"):
            with suppress(OSError):
                if file.is_file():
                    st = file.stat()
                    items.append((str(file.relative_to(path)), st.st_size, st.st_mtime_ns))
    except OSError:
        return ()
    return tuple(sorted(items))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ModelFolderError | ChatTemplateError):
        return str(exc)
    return f"failed to load: {type(exc).__name__}: {exc}"

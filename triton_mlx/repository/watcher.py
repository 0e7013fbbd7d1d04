"""Poll mode: rescan the repository every ``--repository-poll-secs`` and follow its changes.

A folder is acted on only once its files have stopped changing: its fingerprint (names, sizes
and mtimes of its files) must be the same over two consecutive scans, so a model that is still
being copied in is never loaded. Then a new folder is loaded, a changed one reloaded (the old
engine serves until the new one is READY) and a removed one unloaded and forgotten.
"""

from __future__ import annotations

import asyncio
import logging

from triton_mlx.repository.repository import (
    ModelLoadError,
    ModelNotFound,
    ModelRepository,
    folder_fingerprint,
)

logger = logging.getLogger("triton_mlx.repository")


class RepositoryWatcher:
    def __init__(self, repository: ModelRepository, interval: float) -> None:
        self.repository = repository
        self.interval = interval
        self._previous: dict[str, tuple] = {}
        self._task: asyncio.Task | None = None
        self.scans = 0
        """Scans completed so far: what a test waits on to know the watcher looked again."""

    def start(self) -> None:
        self._previous = {e.name: e.fingerprint for e in self.repository.entries()}
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.scan()
            except asyncio.CancelledError:
                raise
            except Exception:  # a scan that fails must not end polling
                logger.exception("repository scan failed")
            self.scans += 1

    async def scan(self) -> None:
        """One scan: act on every folder whose fingerprint held still since the last scan."""
        repository = self.repository
        names = await asyncio.to_thread(repository.discover)
        current = {
            name: await asyncio.to_thread(folder_fingerprint, repository.root / name)
            for name in names
        }
        previous, self._previous = self._previous, current
        for name, fingerprint in current.items():
            if previous.get(name) != fingerprint:
                continue  # new or still changing: wait for the next scan
            entry = repository.get(name)
            if entry is not None and entry.fingerprint == fingerprint:
                continue
            logger.info("repository: model %s %s", name, "changed" if entry else "appeared")
            try:
                await repository.load(name, fingerprint)
            except (ModelLoadError, ModelNotFound) as exc:
                logger.warning("repository: %s not (re)loaded: %s", name, exc)
                if entry is not None:
                    entry.fingerprint = fingerprint  # retried when its files change again
        for entry in repository.entries():
            if entry.name not in current:
                logger.info("repository: model %s was removed", entry.name)
                await repository.unload(entry.name, forget=True)

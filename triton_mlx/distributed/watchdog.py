"""Never hang on a rank that died: exit non-zero when the ranks stop answering.

A rank whose peer's connection drops sees its next collective fail (MLX's ring backend raises
"connection to a peer was lost"): ``abandon`` ends it. A peer that hangs, or a link that goes
silent, raises nothing, which is what the rest of this module is for.

A collective waits for every rank, and MLX's backends wait for a dead peer forever: a rank
killed mid-run would leave the others blocked inside a step, serving nothing, and an
orchestrator would never learn. So every rank notes each exchange with rank 0 (``beat``; rank
0 sends an empty one every ``HEARTBEAT_SECS`` while idle) and, while a split model runs, a
thread checks that the last one is no older than ``--rank-timeout-secs``. Past half of that,
rank 0 reports not ready (``LockstepEngine.answering``); past all of it, the process logs
which rank it is and why, and exits with status 1, and the launcher or the orchestrator
restarts the set.
"""

from __future__ import annotations

import logging
import os
import threading
import time

logger = logging.getLogger("triton_mlx.distributed")

HEARTBEAT_SECS = 5.0  # rank 0's exchange while idle, at most


class Watchdog:
    """One per process; ``arm`` while a split model runs, ``beat`` at every exchange."""

    def __init__(self) -> None:
        self.timeout = 120.0
        self.rank = 0
        self._since: float | None = None
        self._thread: threading.Thread | None = None

    @property
    def heartbeat(self) -> float:
        """How often rank 0, idle, sends an empty exchange: well inside the timeout."""
        return min(HEARTBEAT_SECS, self.timeout / 4)

    def arm(self) -> None:
        self._since = time.monotonic()
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="rank-watchdog",
                                            daemon=True)
            self._thread.start()

    def beat(self) -> None:
        if self._since is not None:
            self._since = time.monotonic()

    def quiet_for(self) -> float:
        """Seconds since the last exchange while armed; 0 when not armed."""
        since = self._since
        return 0.0 if since is None else time.monotonic() - since

    def disarm(self) -> None:
        self._since = None

    def abandon(self, reason: str, grace: float = 1.0) -> None:
        """The ranks can no longer work together (a collective failed): exit with status 1
        after ``grace`` seconds, time for the failed requests' answers to leave."""
        logger.critical("rank %d: %s; exiting with status 1", self.rank, reason)
        timer = threading.Timer(grace, _exit)
        timer.daemon = True
        timer.start()

    def _watch(self) -> None:
        while True:
            time.sleep(min(1.0, self.timeout / 4))
            since = self._since
            if since is not None and time.monotonic() - since > self.timeout:
                logger.critical(
                    "rank %d: no word from the other ranks for %.0f s (--rank-timeout-secs): "
                    "a rank has died or hangs; exiting with status 1", self.rank, self.timeout)
                _exit()


def _exit() -> None:
    logging.shutdown()
    os._exit(1)


watchdog = Watchdog()

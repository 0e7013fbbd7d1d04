"""Never hang on a rank that died: exit non-zero when the ranks stop answering.

A collective waits for every rank, and MLX's backends wait for a dead peer forever: a rank
killed mid-run would leave the others blocked inside a step, serving nothing, and an
orchestrator would never learn. So every rank notes each exchange with rank 0 (``beat``; rank
0 sends an empty one every ``HEARTBEAT_SECS`` while idle) and, while a split model runs, a
thread checks that the last one is no older than ``--rank-timeout-secs``. Past that, the
process logs which rank it is and why, and exits with status 1: its port closes (rank 0 stops
answering ``/v2/health/ready``), and the launcher or the orchestrator restarts the set.
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

    def disarm(self) -> None:
        self._since = None

    def _watch(self) -> None:
        while True:
            time.sleep(min(1.0, self.timeout / 4))
            since = self._since
            if since is not None and time.monotonic() - since > self.timeout:
                logger.critical(
                    "rank %d: no word from the other ranks for %.0f s (--rank-timeout-secs): "
                    "a rank has died or hangs; exiting with status 1", self.rank, self.timeout)
                logging.shutdown()
                os._exit(1)


watchdog = Watchdog()

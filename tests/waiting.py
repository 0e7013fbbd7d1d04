"""Waiting for a condition in tests: poll a predicate until it holds, or fail saying what."""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_SECONDS = 0.01


def wait_for(condition: Callable[[], object], timeout: float = 30.0,
             what: str = "condition") -> object:
    """Return ``condition()``'s first truthy value; fail the test after ``timeout`` seconds.

    The timeout is a bound on a hang, not a speed target: keep it generous."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL_SECONDS)

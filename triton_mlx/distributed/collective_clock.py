"""How long a split model's steps spend in its own collectives, measured on one step in N.

A step's collectives (tensor parallel's all-sums, pipeline's send, receive and all-gather) run
inside MLX's lazy graph, evaluated with the rest of the step: MLX times no single op inside a
graph, so the step's wall time alone cannot tell compute from communication. On a sampled step
``CollectiveClock`` swaps the ``mx.distributed`` functions the model looks up at call time
(``all_sum``, ``all_gather``, ``send``, ``recv``, ``recv_like``) for wrappers that evaluate the
collective's inputs first (so the compute still pending is not counted), then time the
collective and the evaluation of its result. What they measure includes the wait for the
slowest rank, which is what a split costs. The price is a host sync around each collective,
on the sampled steps only; those syncs slightly inflate the sampled steps' own time.

Why this keeps the ranks paired: MLX pairs collectives by the order in which each rank runs
them, so an evaluation on one rank only, or a collective added on one rank only, pairs them
wrongly (wrong tokens, no error). Every rank owns a clock and steps in lockstep, so every rank
samples the same steps; the extra evaluations add no collective, and evaluating each
collective's inputs first runs the collectives still pending before it, so each rank still
runs the same collectives in the same order. Never make sampling depend on one rank's state.

The wrappers time calls from the thread running the sampled step only (the engine thread, the
only one that steps a split model); a call from any other thread goes straight through. The
model's forward must run eagerly (not under ``mx.compile``, where evaluating is refused), as
mlx-lm's batch generator runs it.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import mlx.core as mx

COLLECTIVES = ("all_sum", "all_gather", "send", "recv", "recv_like")


class CollectiveClock:
    """Times the model's collectives on steps 0, ``every``, 2 * ``every``... (see the module).

    ``sampled_steps``: steps timed; ``collective_seconds``: their time in collectives;
    ``step_seconds``: their whole time; ``collectives``: collective calls timed."""

    def __init__(self, every: int = 64) -> None:
        if every < 1:
            raise ValueError("every must be at least 1")
        self.every = every
        self.steps = 0  # steps seen, sampled or not
        self.sampled_steps = 0
        self.collective_seconds = 0.0
        self.step_seconds = 0.0
        self.collectives = 0
        self._owner: int | None = None  # the thread whose sampled step is running
        self._seconds = 0.0  # in collectives, this sampled step so far

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """Around one engine step, on every rank: times its collectives if it is sampled."""
        sampled = self.steps % self.every == 0
        self.steps += 1
        if not sampled or self._owner is not None:  # nested: the outer step times it
            yield
            return
        originals = {name: getattr(mx.distributed, name) for name in COLLECTIVES
                     if hasattr(mx.distributed, name)}
        self._owner = threading.get_ident()
        self._seconds = 0.0
        start = time.perf_counter()
        try:
            for name, original in originals.items():
                setattr(mx.distributed, name, self._timed(original))
            yield
        finally:
            for name, original in originals.items():
                setattr(mx.distributed, name, original)
            self.step_seconds += time.perf_counter() - start
            self.collective_seconds += self._seconds
            self.sampled_steps += 1
            self._owner = None

    def _timed(self, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != self._owner:
                return original(*args, **kwargs)
            mx.eval([a for a in (*args, *kwargs.values()) if isinstance(a, mx.array)])
            start = time.perf_counter()
            result = original(*args, **kwargs)
            mx.eval(result)
            self._seconds += time.perf_counter() - start
            self.collectives += 1
            return result

        return timed

"""Per-model inference statistics, as Triton's statistics extension reports them.

Every front-end records each generation request it submitted here (through
``ServerMetrics.observe_inference``), so ``/v2/models/stats`` counts the OpenAI port's requests
as well as the Triton port's. Durations are kept as Triton keeps them: a count and a total in
nanoseconds per phase. The object is shared across threads, so every update and snapshot
holds its lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

SUCCESS = "SUCCESS"
# Triton's failure reasons (the ``reason`` label of ``nv_inference_request_failure``).
REJECTED = "REJECTED"  # refused at admission: queue full, never fits the memory budget
CANCELED = "CANCELED"  # the client went away before the answer was complete
BACKEND = "BACKEND"  # the engine failed while generating
OTHER = "OTHER"  # anything else, e.g. the engine was stopping
FAILURE_REASONS = (REJECTED, CANCELED, BACKEND, OTHER)


@dataclass(frozen=True)
class InferenceTiming:
    """One request's phases in nanoseconds, derived from ``time.perf_counter()`` marks.

    - ``duration``: received to finished (the whole request as the server handled it);
    - ``compute_input``: received to submitted (validation, tokenization);
    - ``queue``: submitted to the first generated token. The engine does not report when a
      request got its batch slot, so this is waiting for a slot *plus* the prefill;
    - ``compute_infer``: first token to last token (the decode);
    - ``compute_output``: last token to finished (shaping and encoding the answer);
    - ``first_response``: received to the first response sent (the first event of a stream,
      else the whole answer).
    """

    duration: int
    compute_input: int = 0
    queue: int = 0
    compute_infer: int = 0
    compute_output: int = 0
    first_response: int | None = None

    @classmethod
    def from_marks(
        cls,
        *,
        received: float,
        finished: float,
        submitted: float | None = None,
        first_output: float | None = None,
        last_output: float | None = None,
        first_response: float | None = None,
    ) -> InferenceTiming:
        """Phases from ``perf_counter()`` marks; a missing mark leaves its phases at 0."""

        def ns(start: float | None, end: float | None) -> int:
            if start is None or end is None:
                return 0
            return max(0, int((end - start) * 1e9))

        start = submitted if submitted is not None else received
        end_of_decode = last_output if last_output is not None else finished
        return cls(
            duration=ns(received, finished),
            compute_input=ns(received, submitted),
            queue=ns(start, first_output),
            compute_infer=ns(first_output, end_of_decode),
            compute_output=ns(last_output, finished),
            first_response=ns(received, first_response if first_response is not None
                              else finished),
        )


@dataclass
class DurationStat:
    """Triton's ``$duration_stat``: how many times, and how long in total."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class ModelStats:
    """The aggregate statistics of one model version since the server started."""

    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    success: DurationStat = field(default_factory=DurationStat)
    fail: DurationStat = field(default_factory=DurationStat)
    queue: DurationStat = field(default_factory=DurationStat)
    compute_input: DurationStat = field(default_factory=DurationStat)
    compute_infer: DurationStat = field(default_factory=DurationStat)
    compute_output: DurationStat = field(default_factory=DurationStat)
    failures: dict[str, int] = field(default_factory=dict)

    def copy(self) -> ModelStats:
        return ModelStats(
            last_inference_ms=self.last_inference_ms,
            inference_count=self.inference_count,
            execution_count=self.execution_count,
            success=DurationStat(self.success.count, self.success.ns),
            fail=DurationStat(self.fail.count, self.fail.ns),
            queue=DurationStat(self.queue.count, self.queue.ns),
            compute_input=DurationStat(self.compute_input.count, self.compute_input.ns),
            compute_infer=DurationStat(self.compute_infer.count, self.compute_infer.ns),
            compute_output=DurationStat(self.compute_output.count, self.compute_output.ns),
            failures=dict(self.failures),
        )


class InferenceStats:
    """Thread-safe per-model statistics, keyed by model name (every model has version 1)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, ModelStats] = {}

    def record(
        self,
        model: str,
        timing: InferenceTiming,
        *,
        outcome: str = SUCCESS,
        inferences: int = 1,
    ) -> None:
        """Count one request: ``outcome`` is ``SUCCESS`` or one of ``FAILURE_REASONS``.

        A success counts ``inferences`` (the sequences generated: prompts x choices) and one
        execution, as Triton counts a batched request; a failure only its duration.
        """
        if outcome != SUCCESS and outcome not in FAILURE_REASONS:
            raise ValueError(f"unknown outcome {outcome!r}")
        now_ms = int(time.time() * 1000)
        with self._lock:
            stats = self._models.setdefault(model, ModelStats())
            stats.last_inference_ms = now_ms
            if outcome != SUCCESS:
                stats.fail.add(timing.duration)
                stats.failures[outcome] = stats.failures.get(outcome, 0) + 1
                return
            stats.inference_count += inferences
            stats.execution_count += 1
            stats.success.add(timing.duration)
            stats.queue.add(timing.queue)
            stats.compute_input.add(timing.compute_input)
            stats.compute_infer.add(timing.compute_infer)
            stats.compute_output.add(timing.compute_output)

    def snapshot(self, model: str) -> ModelStats:
        """A consistent copy of ``model``'s statistics (all zero before its first request)."""
        with self._lock:
            stats = self._models.get(model)
            return stats.copy() if stats is not None else ModelStats()

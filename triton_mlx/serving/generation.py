"""One request's generation while it runs: its engine streams, merged, and its accounting.

A request may hold several engine streams (several prompts, ``n`` choices each). Front-ends
iterate :meth:`Generation.deltas` for protocol-free :class:`ChoiceDelta` items, in the order
the engine produced them, and call :meth:`Generation.finish` once, in a ``finally``: it frees
the engine slots (a no-op once finished) and records the request's metrics and statistics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from triton_mlx.engine.stream import GenerationStream
from triton_mlx.engine.types import EngineError, GenerationOutput, TokenLogprob
from triton_mlx.observability.inference_stats import CANCELED, InferenceTiming
from triton_mlx.observability.server_metrics import ServerMetrics
from triton_mlx.serving.errors import engine_failed


@dataclass(frozen=True)
class ChoiceDelta:
    """What one engine step added to one choice, in no protocol's shape.

    ``text`` is safe to show (never a partial character or the start of a stop string);
    ``finish_reason`` is set on a choice's last delta only ("stop" or "length"); ``logprobs``
    covers the tokens since the choice's previous delta, when asked for. Parsed tool calls and
    reasoning text (issue 11) belong here too, so every front-end receives them the same way.
    """

    index: int
    text: str
    finish_reason: str | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    stop_string: str | None = None
    """The stop string that ended the choice, when one did (else None, also at an
    end-of-sequence token)."""


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Generation:
    """The engine streams of one request (``choices_per_prompt`` per prompt) and its marks."""

    model_name: str
    streams: list[GenerationStream]
    prompt_tokens: int
    choices_per_prompt: int = 1
    received: float = field(default_factory=time.perf_counter)
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    last_output_at: float | None = None
    completion_tokens: dict[int, int] = field(default_factory=dict)
    cached: dict[int, int] = field(default_factory=dict)
    token_gaps: list[float] = field(default_factory=list)
    """Seconds between consecutive tokens of each choice (an output that carries k held-back
    tokens counts as k gaps of a k-th of its wait each)."""
    _last_seen: dict[int, float] = field(default_factory=dict)
    _finished: bool = False

    @property
    def total_completion_tokens(self) -> int:
        return sum(self.completion_tokens.values())

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens served from the prefix cache, counted once per prompt."""
        return sum(v for i, v in self.cached.items() if i % self.choices_per_prompt == 0)

    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.total_completion_tokens, self.cached_tokens)

    def cancel(self) -> None:
        """Stop every stream still running; safe at any time, more than once."""
        for stream in self.streams:
            stream.cancel()

    async def deltas(self) -> AsyncIterator[ChoiceDelta]:
        """Every choice's deltas as they come. An engine failure raises ``RequestError``
        (500, ``engine_error``)."""
        try:
            async for index, output in self._outputs():
                yield ChoiceDelta(index, output.text, output.finish_reason, output.logprobs,
                                  output.stop_string)
        except EngineError as exc:
            raise engine_failed(str(exc)) from None

    async def _outputs(self) -> AsyncIterator[tuple[int, GenerationOutput]]:
        if len(self.streams) == 1:
            async for output in self.streams[0]:
                yield self._seen(0, output)
            return
        merged: asyncio.Queue = asyncio.Queue()

        async def pump(index: int, stream: GenerationStream) -> None:
            try:
                async for output in stream:
                    merged.put_nowait((index, output))
            except Exception as exc:  # handed to the consumer, which raises it
                merged.put_nowait((index, exc))
            finally:
                merged.put_nowait((index, None))

        tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(self.streams)]
        try:
            remaining = len(tasks)
            while remaining:
                index, item = await merged.get()
                if item is None:
                    remaining -= 1
                elif isinstance(item, Exception):
                    raise item
                else:
                    yield self._seen(index, item)
        finally:
            for task in tasks:
                task.cancel()

    def _seen(self, index: int, output: GenerationOutput) -> tuple[int, GenerationOutput]:
        now = time.perf_counter()
        self.last_output_at = now
        if self.first_token_at is None and output.completion_tokens:
            self.first_token_at = now
        new_tokens = output.completion_tokens - self.completion_tokens.get(index, 0)
        if new_tokens > 0:
            last = self._last_seen.get(index)
            if last is not None:
                self.token_gaps.extend([(now - last) / new_tokens] * new_tokens)
            self._last_seen[index] = now
        self.completion_tokens[index] = output.completion_tokens
        self.cached[index] = output.cached_tokens
        return index, output

    def finish(
        self,
        metrics: ServerMetrics,
        *,
        route: str,
        outcome: str = CANCELED,
        first_response: float | None = None,
        last_output: float | None = None,
    ) -> None:
        """Free the engine slots and record the request once: its generation metrics and
        Triton's inference statistics (both ports count every request)."""
        if self._finished:
            return
        self._finished = True
        self.cancel()
        now = time.perf_counter()
        first = self.first_token_at
        admitted = [s.admitted_at for s in self.streams if s.admitted_at is not None]
        metrics.observe_generation(
            model=self.model_name,
            route=route,
            duration=now - self.started,
            first_token_after=None if first is None else first - self.started,
            admitted_after=min(admitted) - self.started if admitted else None,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.total_completion_tokens,
            cached_tokens=self.cached_tokens,
            token_gaps=self.token_gaps,
        )
        timing = InferenceTiming.from_marks(
            received=self.received, submitted=self.started, first_output=first,
            last_output=last_output, first_response=first_response, finished=now,
        )
        metrics.observe_inference(self.model_name, timing, outcome=outcome,
                                  inferences=len(self.streams))

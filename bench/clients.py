"""Driving a server with the official OpenAI SDK: streaming chat completions, timed per chunk.

Each stream is timed on the client, as a user sees it: TTFT from sending the request to the
first chunk carrying text, TPOT as the time between the first and the last text chunk over the
tokens in between. The token count comes from the final ``usage`` chunk
(``stream_options.include_usage``); a server that sends none is counted in text chunks instead,
and the result says so.

One asyncio process cannot parse the ~20k SSE chunks/s of 256 streams, so from
``SPLIT_AT`` streams a case is split across client processes (``ClientPool``, one per
``--streams-per-client`` streams, at most the core count - 2): each opens its client, says it is
ready, and all start on one signal; their per-stream timings are merged. Every timestamp comes
from ``CLOCK``, one system-wide monotonic clock, so timings from different processes compare.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.workload import Messages

# perf_counter is CLOCK_MONOTONIC on Linux (one clock for every process); elsewhere monotonic.
CLOCK = (time.perf_counter
         if "CLOCK_MONOTONIC" in time.get_clock_info("perf_counter").implementation
         else time.monotonic)
SPLIT_AT = 64  # from this many streams a case is split across client processes


@dataclass
class StreamResult:
    """One streamed request, timed with ``CLOCK``."""

    started: float
    first: float  # first chunk with text
    last: float  # last chunk with text
    ended: float  # the stream closed
    chunks: int  # chunks with text
    tokens: int  # completion tokens: from usage when reported, else ``chunks``
    usage_reported: bool
    finish_reason: str | None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None

    @property
    def ttft(self) -> float:
        return self.first - self.started

    @property
    def tpot(self) -> float:
        return (self.last - self.first) / (self.tokens - 1) if self.tokens > 1 else math.nan

    @property
    def decode_tps(self) -> float:
        """Tokens after the first over their time: the stream's decode speed."""
        span = self.last - self.first
        return (self.tokens - 1) / span if self.tokens > 1 and span > 0 else math.nan


@dataclass
class CaseResult:
    """``concurrency`` streams sent at once to one server."""

    server: str
    concurrency: int
    max_tokens: int
    streams: list[StreamResult] = field(default_factory=list)
    elapsed: float = 0.0  # first request sent to last stream closed
    error: str | None = None  # "timed out after N s", or the first failure
    retried_after: str | None = None  # the error of a first attempt, when this is the retry
    failed: int = 0  # requests that raised, or had not finished at the timeout
    clients: int = 1  # client processes that sent the streams

    @property
    def ok(self) -> bool:
        return self.error is None and len(self.streams) == self.concurrency

    @property
    def output_tps(self) -> float:
        """Completion tokens of all streams over the case's wall time (prefill included)."""
        return sum(s.tokens for s in self.streams) / self.elapsed if self.elapsed else math.nan

    @property
    def decode_tps_sum(self) -> float:
        """Sum of the streams' decode rates: the server's decode throughput while they all
        decode, comparable with the raw engine's batch decode tok/s."""
        return sum(s.decode_tps for s in self.streams)

    def ttft(self, q: float) -> float:
        return percentile([s.ttft for s in self.streams], q)

    def tpot(self, q: float) -> float:
        return percentile([s.tpot for s in self.streams], q)

    @property
    def all_full_length(self) -> bool:
        """Every stream generated exactly max_tokens tokens (the EOS ban held)."""
        return all(s.tokens == self.max_tokens for s in self.streams)

    @property
    def usage_reported(self) -> bool:
        return all(s.usage_reported for s in self.streams)


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation between order statistics."""
    ordered = sorted(v for v in values if not math.isnan(v))
    if not ordered:
        return math.nan
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


async def stream_chat(
    client: Any, model: str, messages: Messages, max_tokens: int, logit_bias: dict[str, int]
) -> StreamResult:
    """Send one streaming chat completion (greedy, EOS banned) and time its chunks."""
    started = CLOCK()
    stamps: list[float] = []
    usage = None
    finish = None
    stream = await client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True}, logit_bias=logit_bias,
    )
    async for chunk in stream:
        if chunk.choices:
            choice = chunk.choices[0]
            if choice.delta and choice.delta.content:
                stamps.append(CLOCK())
            finish = choice.finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    ended = CLOCK()
    if not stamps:
        raise RuntimeError("the stream carried no text")
    details = getattr(usage, "prompt_tokens_details", None) if usage else None
    return StreamResult(
        started=started, first=stamps[0], last=stamps[-1], ended=ended, chunks=len(stamps),
        tokens=usage.completion_tokens if usage else len(stamps),
        usage_reported=usage is not None, finish_reason=finish,
        prompt_tokens=usage.prompt_tokens if usage else None,
        cached_tokens=getattr(details, "cached_tokens", None),
    )


@dataclass
class Part:
    """What one client (process) saw of a case: picklable, merged by ``merge``."""

    started: float  # CLOCK when its first request was sent
    streams: list[StreamResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # repr of each failed request
    unfinished: int = 0  # still running at the timeout (cancelled)


async def send_all(
    base_url: str, model: str, chats: list[Messages], max_tokens: int,
    logit_bias: dict[str, int], timeout: float, ready: Callable[[], None] | None = None,
) -> Part:
    """Send every chat at once from one event loop; ``ready`` is called (blocking) once the
    client exists, just before the requests go: the barrier of a split case."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="bench", timeout=timeout + 60, max_retries=0)
    if ready is not None:
        ready()
    part = Part(CLOCK())
    tasks = [asyncio.create_task(stream_chat(client, model, m, max_tokens, logit_bias))
             for m in chats]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        error = task.exception()
        if error is None:
            part.streams.append(task.result())
        else:
            cause = f" (cause: {error.__cause__!r})" if error.__cause__ else ""
            part.failures.append(f"{error!r}{cause}"[:400])
    part.unfinished = len(pending)
    await client.close()
    return part


def merge(server: str, concurrency: int, max_tokens: int, parts: list[Part],
          timeout: float) -> CaseResult:
    """One case from its clients' parts: streams in start order, wall time from the first
    request sent to the last stream closed, failures counted."""
    result = CaseResult(server, concurrency, max_tokens, clients=len(parts))
    result.streams = sorted((s for p in parts for s in p.streams), key=lambda s: s.started)
    if result.streams:
        result.elapsed = max(s.ended for s in result.streams) - min(p.started for p in parts)
    failures = [f for p in parts for f in p.failures]
    unfinished = sum(p.unfinished for p in parts)
    missing = concurrency - len(result.streams) - len(failures) - unfinished  # a lost client
    result.failed = len(failures) + unfinished + max(missing, 0)
    if unfinished:
        result.error = f"timed out after {timeout:.0f} s ({unfinished} streams unfinished)"
    elif failures:
        result.error = f"{len(failures)} streams failed: {failures[0]}"[:400]
    elif missing > 0:
        result.error = f"{missing} streams lost with their client process"
    return result


def client_processes(streams: int, per_process: int = 32, cap: int | None = None) -> int:
    """How many client processes send a case of ``streams``: one below ``SPLIT_AT``, else one
    per ``per_process`` streams, at most ``cap`` (default: the core count - 2, at least 1)."""
    if cap is None:
        cap = max(1, (os.cpu_count() or 1) - 2)
    if streams < SPLIT_AT:
        return 1
    return max(1, min(math.ceil(streams / per_process), cap))


def _worker(conn: Any) -> None:
    """A client process: per job, open a client, say ready, wait for go, send, report."""
    import openai  # noqa: F401  (imported before the first job, not while it is timed)

    while (job := conn.recv()) is not None:
        def ready() -> None:
            conn.send("ready")
            conn.recv()  # "go"

        try:
            part = asyncio.run(send_all(**job, ready=ready))
        except Exception as exc:  # the parent counts this client's streams as failed
            part = Part(CLOCK(), failures=[f"client process: {exc!r}"[:400]] * len(job["chats"]))
        conn.send(part)


class ClientPool:
    """``size`` client processes, started once and reused by every split case."""

    def __init__(self, size: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns = []
        self.processes = []
        for _ in range(size):
            parent, child = context.Pipe()
            process = context.Process(target=_worker, args=(child,), daemon=True)
            process.start()
            self.conns.append(parent)
            self.processes.append(process)

    @property
    def size(self) -> int:
        return len(self.processes)

    def run(self, server: str, base_url: str, model: str, chats: list[Messages],
            max_tokens: int, logit_bias: dict[str, int], timeout: float,
            processes: int) -> CaseResult:
        """Split ``chats`` over the first ``processes`` workers, start them together, merge."""
        used = self.conns[:max(1, min(processes, self.size))]
        shares = [chats[i::len(used)] for i in range(len(used))]
        for conn, share in zip(used, shares, strict=True):
            conn.send({"base_url": base_url, "model": model, "chats": share,
                       "max_tokens": max_tokens, "logit_bias": logit_bias, "timeout": timeout})
        deadline = CLOCK() + 120
        answered = [c for c in used if c.poll(max(0, deadline - CLOCK())) and c.recv() == "ready"]
        for conn in answered:
            conn.send("go")
        deadline = CLOCK() + timeout + 120
        delivered = [c for c in answered if c.poll(max(0, deadline - CLOCK()))]
        parts = [conn.recv() for conn in delivered]
        for conn in used:
            if conn not in delivered:  # in an unknown state: its late answer must not be
                self._kill(conn)  # read as the next case's; its streams count as failed
        return merge(server, len(chats), max_tokens, parts or [Part(CLOCK())], timeout)

    def _kill(self, conn: Any) -> None:
        index = self.conns.index(conn)
        self.processes[index].kill()
        self.processes[index].join()
        del self.conns[index], self.processes[index]

    def close(self) -> None:
        for conn, process in zip(self.conns, self.processes, strict=True):
            try:
                conn.send(None)
            except OSError:
                pass
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()


def run_case(
    server: str, base_url: str, model: str, chats: list[Messages], max_tokens: int,
    logit_bias: dict[str, int], timeout: float, pool: ClientPool | None = None,
    processes: int = 1,
) -> CaseResult:
    """Send every chat at once and wait for all (or the timeout); blocking. With a ``pool``
    and ``processes`` > 1 the chats are split across that many client processes."""
    if pool is not None and processes > 1:
        return pool.run(server, base_url, model, chats, max_tokens, logit_bias, timeout,
                        processes)
    part = asyncio.run(send_all(base_url, model, chats, max_tokens, logit_bias, timeout))
    return merge(server, len(chats), max_tokens, [part], timeout)

"""Driving a server with the official OpenAI SDK: streaming chat completions, timed per chunk.

Each stream is timed on the client, as a user sees it: TTFT from sending the request to the
first chunk carrying text, TPOT as the time between the first and the last text chunk over the
tokens in between. The token count comes from the final ``usage`` chunk
(``stream_options.include_usage``); a server that sends none is counted in text chunks instead,
and the result says so.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

from bench.workload import Messages


@dataclass
class StreamResult:
    """One streamed request, timed with ``time.perf_counter``."""

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
    started = time.perf_counter()
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
                stamps.append(time.perf_counter())
            finish = choice.finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    ended = time.perf_counter()
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


async def _run_case(
    server: str, base_url: str, model: str, chats: list[Messages], max_tokens: int,
    logit_bias: dict[str, int], timeout: float,
) -> CaseResult:
    from openai import AsyncOpenAI

    result = CaseResult(server, len(chats), max_tokens)
    client = AsyncOpenAI(base_url=base_url, api_key="bench", timeout=timeout + 60, max_retries=0)
    started = time.perf_counter()
    tasks = [asyncio.create_task(stream_chat(client, model, m, max_tokens, logit_bias))
             for m in chats]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    failures = [t.exception() for t in done if t.exception() is not None]
    result.streams = [t.result() for t in done if t.exception() is None]
    result.streams.sort(key=lambda s: s.started)
    if result.streams:
        result.elapsed = max(s.ended for s in result.streams) - started
    if pending:
        result.error = f"timed out after {timeout:.0f} s ({len(pending)} streams unfinished)"
    elif failures:
        first = failures[0]
        cause = f" (cause: {first.__cause__!r})" if first.__cause__ else ""
        result.error = f"{len(failures)} streams failed: {first!r}{cause}"[:400]
    await client.close()
    return result


def run_case(
    server: str, base_url: str, model: str, chats: list[Messages], max_tokens: int,
    logit_bias: dict[str, int], timeout: float,
) -> CaseResult:
    """Send every chat at once and wait for all (or the timeout); blocking."""
    return asyncio.run(
        _run_case(server, base_url, model, chats, max_tokens, logit_bias, timeout))

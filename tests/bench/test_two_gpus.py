"""The multi-rank benches' bookkeeping: reading both servers' streams, the split figures from
two metric readings, and rounds from several calls merged into one report."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest

from bench.ab_versions import _stream
from bench.distributed import split_figures
from bench.two_gpus import System, _merged

OURS = [b'data: {"choices":[{"delta":{"content":"Hi"}}]}',
        b'data: {"choices":[{"delta":{"content":" there"}}]}',
        b'data: {"choices":[],"usage":{"completion_tokens":2}}']
# mlx_lm.server: json.dumps with its default separators
PEER = [b'data: {"choices": [{"delta": {"role": "assistant", "content": "Hi"}}]}',
        b'data: {"choices": [{"delta": {"content": " there"}}], "usage": null}',
        b'data: {"choices": [], "usage": {"completion_tokens": 2}}']


def read_stream(lines: list[bytes]) -> tuple[float | None, float | None, int]:
    """``_stream`` against a loopback server that answers with ``lines`` as SSE events."""

    async def main() -> tuple[float | None, float | None, int]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
                         + b"".join(line + b"\n\n" for line in lines) + b"data: [DONE]\n\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await _stream(port, b"POST / HTTP/1.1\r\nHost: t\r\n\r\n")

    return asyncio.run(main())


@pytest.mark.parametrize("lines", [OURS, PEER], ids=["compact", "spaced"])
def test_both_servers_streams_give_their_content_times_and_token_count(lines):
    first, last, tokens = read_stream(lines)
    assert first is not None and last is not None and first <= last
    assert tokens == 2


def test_a_stream_without_content_or_usage_counts_nothing():
    first, last, tokens = read_stream([b'data: {"choices": [{"delta": {"role": "assistant"}}]}'])
    assert (first, last, tokens) == (None, None, 0)


def readings(**values: float) -> dict[str, float]:
    keys = ("exchange_s", "exchanges", "collective_s", "collective_steps", "sampled_step_s",
            "generated")
    return {key: values.get(key, 0.0) for key in keys}


def test_split_figures_are_per_sampled_step_and_per_exchange():
    before = readings(collective_s=1.0, collective_steps=2, sampled_step_s=4.0, exchange_s=0.5,
                      exchanges=10, generated=10)
    after = readings(collective_s=1.5, collective_steps=4, sampled_step_s=5.0, exchange_s=0.7,
                     exchanges=50, generated=90)
    figures = split_figures(before, after)
    assert figures["collective"] == pytest.approx(0.25)  # 0.5 s over 2 sampled steps
    assert figures["collective_share"] == pytest.approx(0.5)  # of those steps' 1.0 s
    assert figures["exchange"] == pytest.approx(0.005)
    assert figures["per_token"] == pytest.approx(0.5)


def test_no_sampled_step_between_readings_gives_no_collective_figure():
    same = readings(collective_s=1.0, collective_steps=2, exchange_s=0.5, exchanges=10)
    assert split_figures(same, same) == {}


def test_rounds_from_two_calls_merge_under_each_system(tmp_path: Path):
    def saved(name: str, outputs: list[float], texts: list[str] | None) -> Path:
        system = System("ours, 1 GPU", True, 1, [], texts=texts, ready_seconds=[30.0],
                        exit_codes=[0], rows={1: [{"output": v} for v in outputs]})
        path = tmp_path / name
        path.write_text(json.dumps([dataclasses.asdict(system)]))
        return path

    merged = _merged([saved("a.json", [100.0, 110.0], ["hi"]), saved("b.json", [120.0], None)])
    assert len(merged) == 1
    system = merged[0]
    assert [row["output"] for row in system.rows[1]] == [100.0, 110.0, 120.0]
    assert system.texts == ["hi"]  # the first call's greedy check
    assert system.ready_seconds == [30.0, 30.0] and system.exit_codes == [0, 0]

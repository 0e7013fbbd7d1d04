"""bench.server_timing reads our server's TTFT parts from its metrics, per case."""

from __future__ import annotations

import openai

from bench import server_timing
from tests.conftest import TINY


def test_mean_parts_of_one_case(tiny_server):
    before = server_timing.scrape(tiny_server.base_url)
    client = openai.OpenAI(base_url=tiny_server.base_url, api_key="x", max_retries=0)
    client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "Hi"}],
                                   max_tokens=2)
    parts = server_timing.mean_parts(before, server_timing.scrape(tiny_server.base_url))
    assert set(parts) == {"queue_ms", "prefill_ms", "server_ttft_ms"}
    assert parts["prefill_ms"] > 0
    assert abs(parts["queue_ms"] + parts["prefill_ms"] - parts["server_ttft_ms"]) < 1e-3


def test_no_request_between_scrapes_gives_no_means(tiny_server):
    first = server_timing.scrape(tiny_server.base_url)
    assert server_timing.mean_parts(first, server_timing.scrape(tiny_server.base_url)) == {}


def test_an_unreachable_server_reads_as_nothing():
    assert server_timing.scrape("http://127.0.0.1:9/v1", timeout=2) == {}

"""Anthropic's Messages API on the OpenAI port, with the tiny model, through the official
``anthropic`` SDK and over raw HTTP: answers, streams event by event, stop sequences,
count_tokens, errors in Anthropic's shape, and a client that leaves mid-stream."""

from __future__ import annotations

import asyncio
import json
import socket

import anthropic
import pytest

from tests.conftest import TINY, RunningServer, make_config
from tests.openai.http_client import request
from tests.waiting import wait_for
from triton_mlx.anthropic.messages import with_pings

HI = [{"role": "user", "content": "Hello"}]
KEY = "sk-ant-test-7781"
GREEDY = {"temperature": 0}  # the SDK sends sampling parameters as extra fields


@pytest.fixture(scope="module")
def client(tiny_server):
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{tiny_server.port}", api_key="x",
                               max_retries=0)


def test_a_message_has_text_blocks_a_stop_reason_and_usage(client):
    answer = client.messages.create(model=TINY, max_tokens=5, messages=HI, extra_body=GREEDY,
                                    system="Be brief.", metadata={"user_id": "u-1"})
    assert answer.type == "message" and answer.role == "assistant" and answer.model == TINY
    assert answer.id.startswith("msg_")
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert [b.type for b in answer.content] in (["text"], [])
    assert 0 < answer.usage.output_tokens <= 5
    count = client.messages.count_tokens(model=TINY, messages=HI, system="Be brief.")
    assert (answer.usage.input_tokens + answer.usage.cache_read_input_tokens
            == count.input_tokens)


def test_the_async_client_gets_the_same_greedy_answer(tiny_server, client):
    async def ask():
        async with anthropic.AsyncAnthropic(base_url=f"http://127.0.0.1:{tiny_server.port}",
                                            api_key="x", max_retries=0) as async_client:
            return await async_client.messages.create(model=TINY, max_tokens=6, messages=HI,
                                                      extra_body=GREEDY)

    answer = asyncio.run(ask())
    again = client.messages.create(model=TINY, max_tokens=6, messages=HI, extra_body=GREEDY)
    assert answer.content == again.content and answer.stop_reason == again.stop_reason


def test_a_repeated_prompt_is_read_from_the_prefix_cache(client):
    long = [{"role": "user", "content": "Tell me a story about a quokka. " * 8}]
    client.messages.create(model=TINY, max_tokens=1, messages=long,
                           system=[{"type": "text", "text": "You are kind.",
                                    "cache_control": {"type": "ephemeral"}}])
    answer = client.messages.create(model=TINY, max_tokens=1, messages=long,
                                    system=[{"type": "text", "text": "You are kind.",
                                             "cache_control": {"type": "ephemeral"}}])
    assert answer.usage.cache_read_input_tokens > 0


def test_stream_text_and_final_message_agree(client):
    with client.messages.stream(model=TINY, max_tokens=8, messages=HI, extra_body=GREEDY) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    plain = client.messages.create(model=TINY, max_tokens=8, messages=HI, extra_body=GREEDY)
    assert text == "".join(b.text for b in final.content) == "".join(
        b.text for b in plain.content)
    assert final.stop_reason == plain.stop_reason
    assert final.usage.output_tokens == plain.usage.output_tokens


def _events(port: int, body: dict, headers=None) -> list[tuple[str, dict]]:
    status, response_headers, text = request(port, "POST", "/v1/messages", body, headers)
    assert status == 200 and response_headers["content-type"].startswith("text/event-stream")
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        data = json.loads(lines["data"])
        assert data["type"] == lines["event"]
        events.append((lines["event"], data))
    return events


def test_raw_stream_events_come_in_anthropics_order(tiny_server):
    events = _events(tiny_server.port, {"model": TINY, "max_tokens": 4, "messages": HI,
                                        "stream": True, "temperature": 0})
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert names[-2:] == ["message_delta", "message_stop"]
    middle = names[2:-2]
    if middle:  # one text block: start, deltas, stop
        assert middle[0] == "content_block_start" and middle[-1] == "content_block_stop"
        assert set(middle[1:-1]) == {"content_block_delta"}
        assert events[2][1]["content_block"] == {"type": "text", "text": ""}
        assert all(d["delta"]["type"] == "text_delta" and d["index"] == 0
                   for _, d in events[3:-3])
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] in ("end_turn", "max_tokens")
    assert 0 < delta["usage"]["output_tokens"] <= 4


def test_a_matched_stop_sequence_is_named(client):
    plain = client.messages.create(model=TINY, max_tokens=12, messages=HI, extra_body=GREEDY)
    text = "".join(b.text for b in plain.content)
    assert len(text) >= 4, text
    stop = text[2:4]
    answer = client.messages.create(model=TINY, max_tokens=12, messages=HI, extra_body=GREEDY,
                                    stop_sequences=["\x00never", stop])
    assert answer.stop_reason == "stop_sequence" and answer.stop_sequence == stop
    assert "".join(b.text for b in answer.content) == text[:text.index(stop)]
    with client.messages.stream(model=TINY, max_tokens=12, messages=HI, extra_body=GREEDY,
                                stop_sequences=[stop]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == stop


@pytest.mark.parametrize("body, says", [
    ({"messages": HI}, "max_tokens"),
    ({"max_tokens": 0, "messages": HI}, "max_tokens"),
    ({"max_tokens": 5, "messages": []}, "messages"),
    ({"max_tokens": 5, "messages": HI, "temperature": 1.5}, "temperature"),
    ({"max_tokens": 5, "messages": HI, "frequency_penalty": 1}, "frequency_penalty"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "http://x/y.png"}}]}]}, "image"),
    ({"max_tokens": 5, "messages": HI, "thinking": {"type": "enabled",
                                                    "budget_tokens": 2048}}, "thinking"),
    ({"max_tokens": 5, "messages": HI, "output_config": {"effort": "low"}}, "effort"),
    ({"max_tokens": 5, "messages": HI, "tool_choice": {"type": "any"}}, "tool_choice"),
    ({"max_tokens": 5, "messages": HI, "tools": [{"type": "web_search_20250305",
                                                  "name": "web_search"}]}, "tools[0]"),
    ({"max_tokens": 5, "messages": HI, "metadata": {"session": "x"}}, "metadata"),
    ({"max_tokens": 5, "messages": HI, "tool_choice": {"type": {}}}, "tool_choice"),
    ({"max_tokens": 5, "messages": HI, "stop_sequences": [""]}, "stop_sequences"),
    ({"max_tokens": 5, "messages": HI, "service_tier": "auto"}, "service_tier"),
])
def test_bad_requests_are_400s_in_anthropics_shape(client, body, says):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.post("/v1/messages", body={"model": TINY, **body}, cast_to=object)
    assert caught.value.status_code == 400
    assert caught.value.body["type"] == "error"
    error = caught.value.body["error"]
    assert error["type"] == "invalid_request_error" and says in error["message"]


def test_an_accepted_no_op_thinking_and_cache_control(client):
    answer = client.messages.create(
        model=TINY, max_tokens=2, thinking={"type": "disabled"},
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}])
    assert answer.usage.output_tokens > 0


def test_an_unknown_model_is_a_404_not_found_error(client):
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="nope", max_tokens=5, messages=HI)
    assert caught.value.body == {"type": "error", "error": {
        "type": "not_found_error", "message": "the model 'nope' does not exist"}}
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="nope", messages=HI)


def test_count_tokens_counts_the_rendered_prompt(client):
    short = client.messages.count_tokens(model=TINY, messages=HI).input_tokens
    longer = client.messages.count_tokens(
        model=TINY, messages=HI, system="You are a helpful assistant.").input_tokens
    assert 0 < short < longer


@pytest.fixture(scope="module")
def keyed(tiny_repository):
    with RunningServer(make_config(tiny_repository, api_key=KEY)) as server:
        yield server


def test_the_key_by_x_api_key_or_bearer_and_a_wrong_one_is_a_401(keyed):
    base = f"http://127.0.0.1:{keyed.port}"
    answer = anthropic.Anthropic(base_url=base, api_key=KEY, max_retries=0).messages.create(
        model=TINY, max_tokens=2, messages=HI)
    assert answer.usage.output_tokens > 0
    bearer = anthropic.Anthropic(base_url=base, auth_token=KEY, max_retries=0)
    assert bearer.messages.count_tokens(model=TINY, messages=HI).input_tokens > 0
    with pytest.raises(anthropic.AuthenticationError) as caught:
        anthropic.Anthropic(base_url=base, api_key="wrong", max_retries=0).messages.create(
            model=TINY, max_tokens=2, messages=HI)
    assert caught.value.body == {"type": "error", "error": {
        "type": "authentication_error", "message": "invalid API key"}}
    status, _, body = request(keyed.port, "POST", "/v1/messages",
                              {"model": TINY, "max_tokens": 2, "messages": HI},
                              headers={"anthropic-version": "2023-06-01"})
    assert status == 401 and body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"


def test_a_full_queue_is_a_529_overloaded_error(tiny_repository, start_server):
    server = start_server(tiny_repository, max_concurrent_requests=1, max_queued_requests=0)
    socks = [_send(server.port, _long())]
    _read_events(socks[0], 3)  # it runs, and holds the only slot
    status, headers, body = request(server.port, "POST", "/v1/messages", _long())
    socks[0].close()
    assert status == 529 and headers["retry-after"] == "1"
    assert body["error"]["type"] == "overloaded_error"


def _long() -> dict:
    """A stream that runs all 400 tokens: greedy, since sampling can draw an early EOS."""
    return {"model": TINY, "max_tokens": 400, "messages": HI, "stream": True,
            "stop_sequences": ["\x00"], **GREEDY}


def _send(port: int, body: dict) -> socket.socket:
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                 b"\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
    return sock


def _read_events(sock: socket.socket, count: int) -> bytes:
    received = b""
    while received.count(b"event: content_block_delta") < count:
        chunk = sock.recv(4096)
        assert chunk, received
        received += chunk
    return received


def test_a_client_that_leaves_mid_stream_frees_the_engine(tiny_server):
    engine = tiny_server.engine()
    before = engine.stats().generated_tokens
    sock = _send(tiny_server.port, _long())
    _read_events(sock, 3)
    sock.close()
    wait_for(lambda: engine.stats().running == 0 and engine.stats().queued == 0)
    assert engine.stats().generated_tokens - before < 400
    status, _, text = request(tiny_server.port, "GET", "/v1/metrics")
    assert status == 200 and 'route="messages"' in text


def test_pings_fill_the_wait_for_a_slow_source():
    async def run():
        release = asyncio.Event()

        async def slow():
            await release.wait()
            yield "token"

        seen = []
        async for item in with_pings(slow(), 0.001):
            seen.append(item)
            if item is None:
                release.set()
        return seen

    seen = asyncio.run(run())
    assert seen[0] is None and seen[-1] == "token"


def test_the_stop_string_matcher_says_which_string_matched():
    from triton_mlx.engine.stop_strings import StopStringMatcher

    matcher = StopStringMatcher(["END", "xy"])
    assert matcher.feed("abc x") == ("abc ", False) and matcher.matched is None
    assert matcher.feed("y and END") == ("", True) and matcher.matched == "xy"
    earliest = StopStringMatcher(["xy", "END"])
    assert earliest.feed("a END xy") == ("a ", True) and earliest.matched == "END"


def test_reasoning_then_text_then_a_call_become_three_blocks_in_order():
    from triton_mlx.anthropic.shaping import Blocks
    from triton_mlx.serving.chat import ChatDelta
    from triton_mlx.serving.tool_calls.events import CallArguments, CallStart

    blocks = Blocks()
    events = blocks.feed(ChatDelta(0, reasoning="Let me think."))
    events += blocks.feed(ChatDelta(0, content="Calling."))
    events += blocks.feed(ChatDelta(0, calls=(CallStart(0, "toolu_1", "f"),
                                              CallArguments(0, '{"a": '))))
    events += blocks.feed(ChatDelta(0, calls=(CallArguments(0, "1}"),), finish_reason="stop"))
    events += blocks.close()
    assert [(e["type"], e.get("delta", {}).get("type")) for e in events] == [
        ("content_block_start", None), ("content_block_delta", "thinking_delta"),
        ("content_block_stop", None),
        ("content_block_start", None), ("content_block_delta", "text_delta"),
        ("content_block_stop", None),
        ("content_block_start", None), ("content_block_delta", "input_json_delta"),
        ("content_block_delta", "input_json_delta"), ("content_block_stop", None)]
    assert blocks.content == [
        {"type": "thinking", "thinking": "Let me think.", "signature": ""},
        {"type": "text", "text": "Calling."},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}]

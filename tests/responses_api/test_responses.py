"""``/v1/responses`` on the tiny model, through the official ``openai`` SDK and raw HTTP:
text, streams (every event, numbered), stored responses and their conversation, errors in
OpenAI's shape, the key, the metrics, and a client that leaves mid-stream."""

from __future__ import annotations

import json
import socket

import openai
import pytest

from tests.conftest import TINY, RunningServer, make_config
from tests.openai.http_client import request
from tests.waiting import wait_for


@pytest.fixture(scope="module")
def server(tiny_repository):
    with RunningServer(make_config(tiny_repository, responses_store_size=3)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def post(server: RunningServer, body: dict, path: str = "/v1/responses", **kwargs):
    return request(server.port, "POST", path, body, **kwargs)


def events_of(raw: str) -> list[tuple[str, dict]]:
    """(event name, data) of each server-sent event."""
    events = []
    for block in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_a_string_input_gets_a_completed_response(client):
    response = client.responses.create(model=TINY, input="Hello", max_output_tokens=40,
                                       instructions="Be brief.", temperature=0)
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status in ("completed", "incomplete") and response.model == TINY
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    assert response.output_text == response.output[0].content[0].text
    assert response.instructions == "Be brief." and response.store is True
    usage = response.usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_max_output_tokens_makes_an_incomplete_response(client):
    response = client.responses.create(model=TINY, input="Hi", max_output_tokens=5,
                                       temperature=0)
    assert response.status == "incomplete" and response.usage.output_tokens == 5
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete"


def test_the_sdk_stream_ends_with_the_final_response(client):
    with client.responses.stream(model=TINY, input=[{"role": "user", "content": [
            {"type": "input_text", "text": "Hi"}]}], max_output_tokens=8) as stream:
        events = list(stream)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    # A cut at max_output_tokens ends with response.incomplete, as OpenAI's streams do.
    assert events[-1].type in ("response.completed", "response.incomplete")
    assert events[-1].response.output_text == "".join(deltas) != ""


def test_the_raw_stream_event_by_event(server):
    status, headers, raw = post(server, {"model": TINY, "input": "Hi", "stream": True,
                                         "max_output_tokens": 6, "temperature": 0})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = events_of(raw)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert all(name == data["type"] for name, data in events)
    names = [name for name, _ in events]
    assert names[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    deltas = [data for name, data in events if name == "response.output_text.delta"]
    assert len(deltas) >= 1
    tail = names[-4:]
    assert tail[:3] == ["response.output_text.done", "response.content_part.done",
                        "response.output_item.done"]
    final = events[-1][1]["response"]
    assert tail[3] == f"response.{final['status']}"
    assert final["status"] == "incomplete" and final["usage"]["output_tokens"] == 6
    text = "".join(d["delta"] for d in deltas)
    assert final["output"][0]["content"][0]["text"] == text
    assert events[-4][1]["text"] == text
    created = events[0][1]["response"]
    assert created["id"] == final["id"] and created["status"] == "in_progress"
    assert all(d["item_id"] == final["output"][0]["id"] and d["output_index"] == 0
               for d in deltas)


def test_previous_response_id_continues_the_conversation(client, server):
    first = client.responses.create(model=TINY, input="My name is Ada.", max_output_tokens=3,
                                    instructions="FIRST-INSTRUCTIONS")
    second = client.responses.create(model=TINY, input="What is my name?",
                                     previous_response_id=first.id, max_output_tokens=3)
    assert second.previous_response_id == first.id and second.instructions is None
    alone = client.responses.create(model=TINY, input="What is my name?", max_output_tokens=3)
    # The earlier turns (without their instructions) are in the second prompt.
    assert second.usage.input_tokens > alone.usage.input_tokens
    assert second.usage.input_tokens < alone.usage.input_tokens + first.usage.input_tokens + \
        first.usage.output_tokens


def test_stored_responses_can_be_read_and_deleted(client):
    created = client.responses.create(model=TINY, input="Hello", max_output_tokens=3)
    again = client.responses.retrieve(created.id)
    assert again.id == created.id and again.output_text == created.output_text
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(created.id)


def test_store_false_is_not_kept_and_the_store_is_bounded(client):
    unstored = client.responses.create(model=TINY, input="Hi", max_output_tokens=2, store=False)
    assert unstored.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    ids = [client.responses.create(model=TINY, input="Hi", max_output_tokens=2).id
           for _ in range(4)]  # the store holds 3 here
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(ids[0])
    assert [client.responses.retrieve(i).id for i in ids[1:]] == ids[1:]


def test_an_unknown_id_is_a_404_in_openais_shape(server):
    status, _, body = post(server, {"model": TINY, "input": "Hi",
                                    "previous_response_id": "resp_nope"})
    assert status == 404 and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["param"] == "previous_response_id"
    assert body["error"]["code"] == "previous_response_not_found"
    for method in ("GET", "DELETE"):
        status, _, body = request(server.port, method, "/v1/responses/resp_nope")
        assert status == 404 and "resp_nope" in body["error"]["message"]


@pytest.mark.parametrize("extra, param", [
    ({"tools": [{"type": "web_search"}]}, "tools"),
    ({"background": True}, "background"),
    ({"include": ["message.output_text.logprobs"]}, "include"),
    ({"truncation": "auto"}, "truncation"),
    ({"reasoning": {"summary": "concise"}}, "reasoning.summary"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"reasoning": {"effort": "low"}}, "reasoning.effort"),  # the template does not read it
    ({"text": {"verbosity": "low"}}, "text.verbosity"),
    ({"temperature": 3}, "temperature"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"max_output_tokens": 100000}, "max_output_tokens"),
    ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "nope"}}}},
     "text.format"),
    ({"input": [{"type": "message", "role": "user", "content": [
        {"type": "input_image", "image_url": "http://x"}]}]}, "input"),
    ({"bogus": 1}, "bogus"),
    ({"tool_choice": "required"}, "tool_choice"),
])
def test_what_is_not_served_is_a_400_naming_it(server, extra, param):
    status, _, body = post(server, {"model": TINY, "input": "Hi", "max_output_tokens": 2,
                                    **extra})
    assert status == 400, body
    error = body["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error", error


def test_sdk_errors_and_unknown_model(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="nope", input="Hi")
    assert info.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=TINY, input=[])


def test_the_key_is_required(tiny_repository):
    with RunningServer(make_config(tiny_repository, api_key="sk-resp")) as keyed:
        for method, path in (("POST", "/v1/responses"), ("GET", "/v1/responses/resp_x"),
                             ("DELETE", "/v1/responses/resp_x")):
            status, headers, body = request(keyed.port, method, path, {})
            assert status == 401 and body["error"]["code"] == "invalid_api_key"
            assert headers["www-authenticate"].startswith("Bearer")
        good = openai.OpenAI(base_url=keyed.base_url, api_key="sk-resp", max_retries=0)
        assert good.responses.create(model=TINY, input="Hi", max_output_tokens=2).output
        bad = openai.OpenAI(base_url=keyed.base_url, api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.responses.create(model=TINY, input="Hi", max_output_tokens=2)


def test_the_route_is_in_the_metrics(client, server):
    client.responses.create(model=TINY, input="Hi", max_output_tokens=2)
    status, _, text = request(server.port, "GET", "/v1/metrics")
    assert status == 200
    assert f'triton_mlx_request_duration_seconds_count{{model="{TINY}",route="responses"}}' \
        in text


def test_leaving_mid_stream_frees_the_engine(server):
    engine = server.engine()
    before = engine.stats().generated_tokens
    payload = json.dumps({"model": TINY, "input": "Hello", "stream": True,
                          "max_output_tokens": 400, "temperature": 0}).encode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                 b"\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
    received = b""
    while received.count(b"response.output_text.delta") < 3:
        received += sock.recv(4096)
    sock.close()
    wait_for(lambda: engine.stats().running == 0 and engine.stats().queued == 0)
    assert engine.stats().generated_tokens - before < 400


def test_an_engine_failure_mid_stream_is_an_error_event_then_response_failed(
        tiny_repository, start_server):
    failing = start_server(tiny_repository)
    engine = failing.engine()
    payload = json.dumps({"model": TINY, "input": "Hello", "stream": True,
                          "max_output_tokens": 400, "temperature": 0}).encode()
    sock = socket.create_connection(("127.0.0.1", failing.port))
    sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                 b"\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
    received = b""
    while received.count(b"response.output_text.delta") < 3:
        received += sock.recv(4096)

    def fail(*_args):
        raise RuntimeError("simulated failure inside the engine step")

    engine._generator.next = fail  # the next step raises; the engine replaces its generator
    sock.settimeout(30)
    while not received.endswith(b"0\r\n\r\n"):  # the end of the chunked body
        chunk = sock.recv(4096)
        assert chunk, "connection closed before the stream ended"
        received += chunk
    sock.close()
    events = [json.loads(line[len(b"data: "):]) for line in received.split(b"\n")
              if line.startswith(b"data: ")]
    error, failed = events[-2], events[-1]
    assert error["type"] == "error" and "simulated" not in error["message"]
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed" and failed["response"]["error"]["message"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))

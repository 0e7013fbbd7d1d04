"""A request whose own code raises inside the engine fails alone: 500 (or an in-band error
event) to its client, a traceback in the log, and the requests sharing its batch finish with
the same text they get when run alone."""

from __future__ import annotations

import http.client
import json
import logging
import threading

import mlx.core as mx
import pytest

from tests.conftest import TINY
from tests.openai.http_client import request
from tests.waiting import wait_for
from triton_mlx.engine import sampling
from triton_mlx.engine.stop_strings import StopStringMatcher

NO_EOS = {"2": -100}
LONG = 300  # tokens of the healthy requests: still running when the faulty one fails
PROMPTS = ("The quick brown fox", "Hello world! How are")
FAIL_AT = 3  # the faulty request's code raises on its third call


class Injected(RuntimeError):
    """The failure the test plants in one request's own code."""


class Fault:
    """Plants a failure in one request's sampler, logits processors or stop-string matcher,
    recognised by a parameter no other request of the test uses."""

    def __init__(self, where: str, server, monkeypatch) -> None:
        self.where = where
        self.server = server
        self.running_when_raised: list[int] = []
        if where == "logits_processor":
            self.marker = {"frequency_penalty": 0.125}
            real = sampling.make_logits_processors
            monkeypatch.setattr(sampling, "make_logits_processors", lambda params: (
                [*real(params), self._raiser()] if params.frequency_penalty == 0.125
                else real(params)))
        elif where == "sampler":
            self.marker = {"temperature": 0.875, "seed": 5}  # seeded: a sampler of its own
            real_sampler = sampling.make_sampler
            monkeypatch.setattr(sampling, "make_sampler", lambda params, vocab: (
                self._raiser() if params.temperature == 0.875 else real_sampler(params, vocab)))
        else:
            self.marker = {"stop": ["zz-never-zz"]}
            fault = self

            class FailingMatcher(StopStringMatcher):
                def __init__(self, stop) -> None:
                    super().__init__(stop)
                    self._raise = fault._raiser() if "zz-never-zz" in stop else None

                def feed(self, text, may_stop=True):
                    if self._raise is not None:
                        self._raise(text)
                    return super().feed(text, may_stop)

            monkeypatch.setattr("triton_mlx.engine.engine.StopStringMatcher", FailingMatcher)

    def _raiser(self):
        calls = 0

        def fail(*args):
            nonlocal calls
            calls += 1
            if calls >= FAIL_AT:
                self.running_when_raised.append(self.server.engine().stats().running)
                raise Injected(f"planted failure in the {self.where}")
            if self.where == "logits_processor":
                return args[-1]  # the logits, unchanged
            return mx.argmax(args[-1], axis=-1) if self.where == "sampler" else None

        return fail


@pytest.fixture
def engine_log():
    """ERROR records of the engine logger, whatever other tests did to logging."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append
    logger = logging.getLogger("triton_mlx.engine")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def body(prompt: str, stream: bool, **extra) -> dict:
    return {"model": TINY, "prompt": prompt, "max_tokens": LONG, "temperature": 0,
            "logit_bias": NO_EOS, "stream": stream,
            **({"stream_options": {"include_usage": True}} if stream else {}), **extra}


def open_stream(port: int, payload: dict) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/v1/completions", body=json.dumps(payload),
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    return response


def next_event(response: http.client.HTTPResponse):
    """The next SSE data payload: a parsed object, or the string "[DONE]"."""
    while True:
        line = response.readline()
        assert line, "the stream ended without [DONE]"
        if line.startswith(b"data: "):
            data = line[len(b"data: "):].strip()
            return data.decode() if data == b"[DONE]" else json.loads(data)


def rest_of_stream(response: http.client.HTTPResponse) -> list:
    events = []
    while not events or events[-1] != "[DONE]":
        events.append(next_event(response))
    return events


@pytest.mark.parametrize("where", ["logits_processor", "sampler", "stop_strings"])
def test_a_failing_request_fails_alone_and_its_batch_goes_on(
    tiny_repository, start_server, monkeypatch, engine_log, where
):
    server = start_server(tiny_repository, max_concurrent_requests=5)  # all in one batch
    alone = {}
    for prompt in PROMPTS:
        status, _, answer = request(server.port, "POST", "/v1/completions", body(prompt, False))
        assert status == 200
        alone[prompt] = answer["choices"][0]["text"]
    fault = Fault(where, server, monkeypatch)

    healthy = {prompt: open_stream(server.port, body(prompt, True)) for prompt in PROMPTS}
    texts = {prompt: next_event(response)["choices"][0]["text"]  # under way in the batch
             for prompt, response in healthy.items()}
    faulty_plain: list = []
    plain = threading.Thread(target=lambda: faulty_plain.append(request(  # two choices
        server.port, "POST", "/v1/completions", body("Hello", False, n=2, **fault.marker))))
    plain.start()
    faulty_events = rest_of_stream(open_stream(server.port, body("Hello", True, **fault.marker)))
    plain.join(60)

    # The faulty requests: a 500 in OpenAI's error shape, or an error event before [DONE].
    (status, _, answer), = faulty_plain
    assert status == 500, answer
    assert answer["error"]["type"] == "server_error" and answer["error"]["code"] == "engine_error"
    assert "planted" not in answer["error"]["message"]  # internals stay in the log
    assert faulty_events[-1] == "[DONE]" and faulty_events[-2]["error"]["code"] == "engine_error"
    assert not any(c.get("finish_reason") for e in faulty_events[:-2] for c in e["choices"])
    # They failed while sharing the batch with both healthy requests. (The second choice of
    # the plain request may be cancelled by the 500 before its own code raises.)
    assert len(fault.running_when_raised) in (2, 3) and min(fault.running_when_raised) >= 3

    # The healthy requests finish, with the text they get when run alone.
    for prompt, response in healthy.items():
        events = rest_of_stream(response)
        texts[prompt] += "".join(c["text"] for e in events[:-1] for c in e["choices"])
        finish = [c["finish_reason"] for e in events[:-1] for c in e["choices"]]
        assert finish[-1] == "length" and events[-2]["usage"]["completion_tokens"] == LONG
        assert texts[prompt] == alone[prompt]

    # Each failure is logged at ERROR with its traceback.
    planted = [r for r in engine_log if r.exc_info and isinstance(r.exc_info[1], Injected)]
    assert len(planted) == len(fault.running_when_raised)
    assert all(r.exc_info[2] is not None for r in planted)

    # Nothing leaked, and the engine thread serves on.
    engine = server.engine()
    wait_for(lambda: engine.stats().running == 0 and engine.stats().queued == 0)
    assert engine.stats().kv_reserved_bytes == 0
    status, _, answer = request(server.port, "POST", "/v1/completions", body("Hello", False))
    assert status == 200 and answer["usage"]["completion_tokens"] == LONG

"""SSE framing tests, checked against a minimal parser of the event stream format."""

from __future__ import annotations

import json

import pytest

from triton_mlx.http import sse_comment, sse_event, sse_json


def parse(stream: bytes) -> list[dict[str, str]]:
    """Dispatch events the way a browser's EventSource does (simplified: no retry)."""
    events, fields, data = [], {}, []
    for line in stream.decode("utf-8").split("\n"):
        if line == "":
            if data:
                events.append({**fields, "data": "\n".join(data)})
            fields, data = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        else:
            fields[name] = value
    return events


def test_single_line_event():
    assert sse_event('{"a":1}') == b'data: {"a":1}\n\n'


def test_event_and_id_fields():
    assert sse_event("x", event="delta", id="7") == b"event: delta\nid: 7\ndata: x\n\n"
    assert parse(sse_event("x", event="delta", id="7")) == [
        {"event": "delta", "id": "7", "data": "x"}
    ]


@pytest.mark.parametrize(
    "data",
    ["line1\nline2", "a\r\nb\rc", "trailing\n", "\nleading", "", " spaced ", "colon: inside"],
)
def test_multiline_data_round_trips(data):
    framed = sse_event(data)
    assert framed.endswith(b"\n\n")
    expected = data.replace("\r\n", "\n").replace("\r", "\n")
    assert parse(framed) == [{"data": expected}]


def test_bytes_data_and_unicode():
    assert sse_event("héllo ✓".encode()) == "data: héllo ✓\n\n".encode()
    with pytest.raises(UnicodeDecodeError):
        sse_event(b"\xff")


@pytest.mark.parametrize("kwargs", [{"event": "a\nb"}, {"id": "1\r2"}, {"id": "a\0b"}])
def test_fields_must_be_single_line(kwargs):
    with pytest.raises(ValueError):
        sse_event("x", **kwargs)


def test_comments_are_ignored_by_parsers():
    assert sse_comment("ping") == b": ping\n\n"
    assert sse_comment() == b":\n\n"
    assert sse_comment("a\nb") == b": a\n: b\n\n"
    stream = sse_comment("keep-alive") + sse_event("1") + sse_comment("x\ny") + sse_event("2")
    assert parse(stream) == [{"data": "1"}, {"data": "2"}]


def test_sse_json_is_one_data_line_of_compact_json_whatever_the_strings_hold():
    obj = {"text": "two\nlines\r\nand a\rreturn", "word": "café \u2028 😀", "n": [1, 2.5, None]}
    block = sse_json(obj)
    assert block.endswith(b"\n\n") and block.count(b"\n") == 2  # one line, then the blank one
    line = block.decode("utf-8")[: -2]
    assert line.startswith("data: ")
    assert json.loads(line[len("data: "):]) == obj
    assert "café" in line and ", " not in line  # as it is, and compact


def test_sse_json_with_an_event_name():
    block = sse_json({"type": "ping"}, event="ping")
    assert block == b'event: ping\ndata: {"type":"ping"}\n\n'

"""Properties of the SSE framing, checked with an independent event-stream parser.

The parser below follows the WHATWG HTML "event stream" interpretation rules (incremental UTF-8
decoding, CRLF / LF / CR line ends, a CR split from its LF across chunks, field parsing, the
dispatch on a blank line) and receives the stream in arbitrary chunks, as a client would.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from triton_mlx.http import sse_comment, sse_event


@dataclass(frozen=True)
class Event:
    type: str
    data: str
    last_event_id: str


class EventStreamParser:
    """A client-side parser (WHATWG HTML 9.2.6), fed byte chunks."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._line = ""
        self._after_cr = False
        self._first = True
        self._data = ""
        self._type = ""
        self._last_id = ""
        self.events: list[Event] = []

    def feed(self, chunk: bytes) -> None:
        self._chars(self._decoder.decode(chunk))

    def close(self) -> None:
        self._chars(self._decoder.decode(b"", final=True))  # an unfinished line is dropped

    def _chars(self, text: str) -> None:
        if self._first and text:
            self._first = False
            text = text.removeprefix("\ufeff")
        for ch in text:
            if self._after_cr:
                self._after_cr = False
                if ch == "\n":  # the LF of a CRLF that arrived in two chunks
                    continue
            if ch in "\r\n":
                self._after_cr = ch == "\r"
                line, self._line = self._line, ""
                self._process(line)
            else:
                self._line += ch

    def _process(self, line: str) -> None:
        if line == "":
            self._dispatch()
            return
        if line.startswith(":"):
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data += value + "\n"
        elif name == "event":
            self._type = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        # "retry" and unknown fields are ignored

    def _dispatch(self) -> None:
        if self._data == "":
            self._type = ""
            return
        data = self._data.removesuffix("\n")
        self.events.append(Event(self._type or "message", data, self._last_id))
        self._data = ""
        self._type = ""


def parse(stream: bytes, cuts: list[int] = ()) -> list[Event]:
    """Parse ``stream`` delivered in pieces split at the positions ``cuts``."""
    parser = EventStreamParser()
    start = 0
    for cut in sorted(c % (len(stream) + 1) for c in cuts):
        parser.feed(stream[start:cut])
        start = max(start, cut)
    parser.feed(stream[start:])
    parser.close()
    return parser.events


def normalized(text: str) -> str:
    """What a client receives for a payload: every line end becomes LF."""
    return re.sub(r"\r\n|\r|\n", "\n", text)


# Any text, biased towards what could break framing: line ends of every kind, Unicode's other
# line separators (not line ends in SSE), colons, spaces, NUL, a BOM, multi-byte characters.
SPECIAL = st.sampled_from(["\n", "\r", "\r\n", "\n\n", "\r\r", ":", " ", "data: x", "\0",
                           "\ufeff", "\u2028", "\x85", "\x0b", "é", "中", "🚀"])
payloads = st.lists(st.one_of(st.text(max_size=8), SPECIAL), max_size=8).map("".join)
single_line = payloads.map(lambda t: re.sub(r"[\r\n]", "", t))
cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=6)


@given(payloads, cuts)
def test_any_payload_parses_back_to_itself_in_any_chunking(text, cut_at):
    stream = sse_event(text)
    assert parse(stream, cut_at) == [Event("message", normalized(text), "")]


@given(payloads)
def test_an_event_is_one_block_that_payload_cannot_end_early(text):
    """Only the block's last line is blank, and every line is a field: nothing in the payload
    can dispatch an event early or start a field of its own."""
    stream = sse_event(text)
    assert b"\r" not in stream
    assert stream.endswith(b"\n\n")
    lines = stream.decode("utf-8").split("\n")[:-2]
    assert all(line.startswith("data: ") for line in lines)
    assert len(lines) == len(normalized(text).split("\n"))


@given(st.lists(st.tuples(payloads, st.one_of(st.none(), single_line),
                          st.one_of(st.none(), single_line.map(lambda t: t.replace("\0", ""))),
                          st.booleans()), max_size=5), cuts)
def test_a_stream_of_events_and_comments_parses_back_in_order(items, cut_at):
    stream = b""
    expected: list[Event] = []
    last_id = ""
    for data, event, event_id, comment_before in items:
        if comment_before:
            stream += sse_comment(data)
        stream += sse_event(data, event=event, id=event_id)
        last_id = last_id if event_id is None else event_id
        expected.append(Event(event or "message", normalized(data), last_id))
    assert parse(stream, cut_at) == expected


@given(payloads)
def test_bytes_payload_frames_like_its_text(text):
    assert sse_event(text.encode("utf-8")) == sse_event(text)


@given(payloads)
def test_comments_never_dispatch_an_event(text):
    assert parse(sse_comment(text)) == []


@given(payloads, st.sampled_from(["event", "id"]))
def test_event_and_id_must_be_single_lines(text, field):
    kwargs = {field: text}
    if re.search(r"[\r\n]", text) or (field == "id" and "\0" in text):
        with pytest.raises(ValueError):
            sse_event("x", **kwargs)
    else:
        events = parse(sse_event("x", **kwargs))
        assert len(events) == 1
        if field == "event":
            assert events[0].type == (text or "message")
        else:
            assert events[0].last_event_id == text

"""Server-Sent Events framing (WHATWG HTML, "server-sent events", event stream format).

Each function returns one complete, self-delimiting block of bytes. Yield one block per
:class:`~triton_mlx.http.messages.StreamingResponse` item: the transport flushes every item
on its own, so each event reaches the client as soon as it is produced.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["sse_comment", "sse_event", "sse_json"]

# The event stream format accepts CRLF, lone LF and lone CR as line ends; a data payload
# must be split on all three or a stray CR would end a line early on the client side.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def sse_event(data: str | bytes, event: str | None = None, id: str | None = None) -> bytes:
    """Frame one event: optional ``event:`` and ``id:`` fields, then ``data:`` lines.

    Multi-line ``data`` becomes one ``data:`` line per line, which the client joins back
    with ``\\n``; the block ends with the blank line that dispatches the event. ``bytes``
    data must be UTF-8 (the format's only encoding). ``event`` and ``id`` must be single
    lines (``ValueError`` otherwise), and ``id`` must not contain NUL, which clients ignore.
    """
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    if event is None and id is None and "\n" not in text and "\r" not in text:
        return f"data: {text}\n\n".encode()  # one line: every streamed token's case
    out: list[str] = []
    if event is not None:
        _check_single_line("event", event)
        out.append(f"event: {event}\n")
    if id is not None:
        _check_single_line("id", id)
        if "\0" in id:
            raise ValueError("SSE id must not contain NUL")
        out.append(f"id: {id}\n")
    out.extend(f"data: {line}\n" for line in _LINE_BREAK.split(text))
    out.append("\n")
    return "".join(out).encode("utf-8")


# Compact JSON, as every front-end streams it; one encoder, not one per event.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def sse_json(obj: Any, event: str | None = None) -> bytes:
    """Frame ``obj`` as one event of compact JSON (non-ASCII characters as they are). JSON text
    holds no raw line break (strings escape them), so it is a single ``data:`` line."""
    return sse_event(_JSON.encode(obj), event=event)


def sse_comment(text: str = "") -> bytes:
    """Frame a comment (``: text``), e.g. a keep-alive ping that proxies and clients ignore.

    Multi-line text gives one comment line per line; a blank line follows, which clients
    treat as a no-op since no data is pending.
    """
    lines = _LINE_BREAK.split(text)
    return ("".join(f": {line}\n" if line else ":\n" for line in lines) + "\n").encode("utf-8")


def _check_single_line(name: str, value: str) -> None:
    if _LINE_BREAK.search(value):
        raise ValueError(f"SSE {name} must be a single line: {value!r}")

"""Request and response objects exchanged between the transport and handlers.

These are plain data: the transport (``server.py``) builds a :class:`Request` once the
whole request head and body have arrived, and turns what the handler returns (a
:class:`Response` or a :class:`StreamingResponse`) into bytes on the wire. Nothing here does
I/O, so handlers and middleware can be unit-tested without sockets.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field

__all__ = [
    "BodyDecodeError",
    "Headers",
    "Request",
    "Response",
    "StreamingResponse",
    "json_response",
    "text_response",
]


class BodyDecodeError(ValueError):
    """The request body could not be decoded (bad UTF-8, bad JSON, nesting too deep).

    The message is safe to show to the client: it describes the input, not the server.
    """


class Headers:
    """Immutable, case-insensitive multi-dict of request header fields.

    Built from h11's ``[(name, value), ...]`` byte pairs. Names are lower-cased and values
    decoded as latin-1, which maps every byte to one character, so nothing is lost and
    decoding never fails (RFC 9110 treats non-ASCII field bytes as opaque).
    """

    __slots__ = ("_items", "_index")

    def __init__(self, raw: Iterable[tuple[bytes | str, bytes | str]] = ()) -> None:
        items: list[tuple[str, str]] = []
        index: dict[str, list[str]] = {}
        for name, value in raw:
            n = (name.decode("latin-1") if isinstance(name, bytes) else name).lower()
            v = value.decode("latin-1") if isinstance(value, bytes) else value
            items.append((n, v))
            index.setdefault(n, []).append(v)
        self._items: tuple[tuple[str, str], ...] = tuple(items)
        self._index = index

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return the field's value, or ``default`` if absent.

        A field sent on several lines is combined with ", " as RFC 9110 section 5.3
        prescribes, rather than silently picking one line: for a duplicated
        ``Authorization`` that yields a value that fails to match instead of whichever
        line happened to come first. Use :meth:`get_all` to see the lines separately.
        """
        values = self._index.get(name.lower())
        if not values:
            return default
        return values[0] if len(values) == 1 else ", ".join(values)

    def get_all(self, name: str) -> list[str]:
        """Return every value sent for ``name``, in order (empty list if absent)."""
        return list(self._index.get(name.lower(), ()))

    def items(self) -> list[tuple[str, str]]:
        """Return all ``(lower-cased name, value)`` pairs in the order received."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._items == other._items

    __hash__ = None  # type: ignore[assignment]  # equality without hashing, like dict

    def __repr__(self) -> str:
        return f"Headers({list(self._items)!r})"


@dataclass
class Request:
    """One fully received HTTP request.

    The body is read completely (bounded by ``HTTPLimits.max_body_bytes``) before the handler
    runs, so handlers never deal with partial input or slow uploads.
    """

    method: str
    """Upper-case method as sent, e.g. ``"GET"``."""
    path: str
    """Percent-decoded path without the query string; what routing matches on."""
    raw_path: str
    """The request target before ``?``, exactly as sent (still percent-encoded)."""
    query: dict[str, list[str]]
    """Decoded query parameters; blank values are kept."""
    headers: Headers
    body: bytes
    request_id: str
    """The client's valid ``X-Request-ID`` or a generated one; echoed in the response."""
    client: tuple[str, int] | None
    """Peer ``(host, port)``, or None when the transport cannot tell."""
    http_version: str
    """``"1.1"`` or ``"1.0"``."""
    path_params: dict[str, str] = field(default_factory=dict)
    """Values captured by the route pattern; filled in by the router."""
    log_fields: dict[str, object] = field(default_factory=dict)
    """Extra fields handlers add (model, token counts...) for the access log line."""
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    """Set as soon as the client's connection closes while the request is being handled.

    The transport also cancels the handler at that moment; the event lets code that is
    not the handler task itself (e.g. a batch scheduler) notice and drop the work.
    """

    def json(self) -> object:
        """Parse the body as UTF-8 JSON.

        Raises :class:`BodyDecodeError` (a ``ValueError``) with a client-presentable
        message on an empty body, invalid UTF-8, invalid JSON, absurd nesting or a string
        that is not Unicode (a lone surrogate escape).
        """
        if not self.body:
            raise BodyDecodeError("request body is empty; expected JSON")
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BodyDecodeError(
                f"request body is not valid UTF-8 (invalid byte at offset {exc.start})"
            ) from None
        try:
            return loads_client_json(text)
        except json.JSONDecodeError as exc:
            raise BodyDecodeError(
                f"request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            ) from None
        except ClientJSONError as exc:
            raise BodyDecodeError(f"request body is not valid JSON: {exc}") from None


class ClientJSONError(ValueError):
    """JSON that ``json`` parses or chokes on in ways no client should cause a 500 with."""


def loads_client_json(text: str) -> object:
    """``json.loads`` for what clients send, shared by every front-end.

    ``json.JSONDecodeError`` passes through (callers word it their way); absurd nesting (the
    C scanner recurses per level), an integer beyond ``sys.get_int_max_str_digits()`` and a
    string with a lone surrogate escape raise :class:`ClientJSONError` saying which.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise ClientJSONError("nested too deeply") from None
    except ValueError:
        raise ClientJSONError("a number has too many digits") from None
    surrogate = lone_surrogate(text, value)
    if surrogate is not None:
        raise ClientJSONError(surrogate)
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def lone_surrogate(text: str, value: object) -> str | None:
    """Why ``value`` (parsed from the JSON ``text``) holds a string that is not Unicode, or None.

    JSON's ``\\ud800`` escapes can encode a UTF-16 surrogate with no partner, which Python
    keeps as a lone surrogate: such a string cannot be encoded as UTF-8, so tokenizers refuse
    it and echoing it in a response fails. Only a text with a surrogate escape is walked.
    """
    if _SURROGATE_ESCAPE.search(text) is None:
        return None
    stack = [value]
    while stack:  # iterative: the value may be nested as deep as json allows
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                code = ord(item[exc.start])
                return f"\\u{code:04x} is a lone UTF-16 surrogate, not a character"
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
    return None


@dataclass
class Response:
    """A complete response; the transport adds ``Content-Length`` and its own headers.

    Framing headers (``Content-Length``, ``Transfer-Encoding``) and ``X-Request-ID`` set by
    the handler are replaced by the transport's, since only it knows the true framing.
    ``content_type``, when set, becomes ``Content-Type`` unless ``headers`` has one.
    """

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str | None = None


@dataclass
class StreamingResponse:
    """A response whose body is produced incrementally.

    Each item of ``body`` is written and flushed on its own (one chunk of chunked transfer
    encoding on HTTP/1.1; raw bytes followed by connection close on HTTP/1.0), so one SSE
    event per item reaches the client without buffering delay.

    The status and headers are sent as soon as the handler returns this object, so
    validate the request *before* returning it: once the stream has started, a failure
    can only be reported in-band. If the client disconnects, the task iterating ``body``
    is cancelled and ``body.aclose()`` is awaited, so an async generator's ``finally``
    runs promptly.
    """

    body: AsyncIterator[bytes]
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "text/event-stream"


def json_response(
    obj: object, status: int = 200, headers: list[tuple[str, str]] | None = None
) -> Response:
    """Serialize ``obj`` as compact UTF-8 JSON with ``Content-Type: application/json``.

    NaN and infinities are rejected (``ValueError``): they are not JSON and strict clients
    fail on them, so producing them is a bug better caught at the source.
    """
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return Response(
        status=status,
        body=body.encode("utf-8"),
        headers=list(headers or ()),
        content_type="application/json",
    )


def text_response(
    text: str,
    status: int = 200,
    content_type: str = "text/plain; charset=utf-8",
    headers: list[tuple[str, str]] | None = None,
) -> Response:
    """Encode ``text`` as UTF-8 into a :class:`Response`."""
    return Response(
        status=status,
        body=text.encode("utf-8"),
        headers=list(headers or ()),
        content_type=content_type,
    )

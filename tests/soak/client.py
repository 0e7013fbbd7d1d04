"""A raw asyncio HTTP/1.1 client for the soak test: it can walk away at any point of an
exchange (half-way through its body, before the answer, after k SSE events), which no
ordinary client library lets a test do on purpose."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    events: list = field(default_factory=list)
    """SSE data payloads, parsed (``"[DONE]"`` kept as a string)."""


def request_bytes(path: str, payload: dict, close: bool) -> tuple[bytes, bytes]:
    """The head and the body of a JSON POST."""
    body = json.dumps(payload).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "")
            + "\r\n").encode()
    return head, body


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def body_pieces(reader: asyncio.StreamReader, headers: dict[str, str]):
    """The body as it arrives: chunk by chunk, or all at once with a Content-Length."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]
    elif "content-length" in headers:
        yield await reader.readexactly(int(headers["content-length"]))
    else:
        yield await reader.read()


async def sse_events(reader: asyncio.StreamReader, headers: dict[str, str], limit: int | None):
    """Parsed SSE data payloads, stopping after ``limit`` of them when set."""
    buffer = b""
    count = 0
    async for piece in body_pieces(reader, headers):
        buffer += piece
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if line.startswith(b"data: "):
                    data = line[len(b"data: "):]
                    yield data.decode() if data == b"[DONE]" else json.loads(data)
                    count += 1
                    if limit is not None and count >= limit:
                        return
    if buffer.strip():
        raise ValueError(f"the stream ended inside an event: {buffer[:200]!r}")


async def exchange(
    port: int, path: str, payload: dict, *, stream: bool, close: bool = False,
    leave: str | None = None, leave_after_events: int = 1, leave_delay: float = 0.0,
) -> Answer | None:
    """One request on a new connection. ``leave`` walks away instead of finishing:
    "mid_body" (half the body sent), "before_answer" (after ``leave_delay`` s), "mid_stream"
    (after ``leave_after_events`` SSE events); then None is returned."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head, body = request_bytes(path, payload, close)
        if leave == "mid_body":
            writer.write(head + body[: len(body) // 2])
            await writer.drain()
            return None
        writer.write(head + body)
        await writer.drain()
        if leave == "before_answer":
            await asyncio.sleep(leave_delay)
            return None
        status, headers = await read_head(reader)
        answer = Answer(status, headers)
        if stream and status == 200:
            limit = leave_after_events if leave == "mid_stream" else None
            answer.events = [e async for e in sse_events(reader, headers, limit)]
            if leave == "mid_stream":
                return None
        else:
            answer.body = b"".join([p async for p in body_pieces(reader, headers)])
        return answer
    finally:
        if leave:
            writer.transport.abort()  # gone at once, as a crashed client would be
        else:
            writer.close()

"""Request bodies compressed with ``Content-Encoding`` (tritonclient's optional gzip/deflate)."""

from __future__ import annotations

import zlib

from triton_mlx.triton.errors import invalid_arg, unsupported

# zlib's wbits: zlib-wrapped (HTTP "deflate") and gzip.
_WBITS = {"deflate": zlib.MAX_WBITS, "gzip": zlib.MAX_WBITS | 16}


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body as sent before compression, at most ``limit`` bytes (no zip bombs)."""
    name = (encoding or "identity").strip().lower()
    if name in ("", "identity"):
        return body
    if name not in _WBITS:
        raise unsupported(
            "Unsupported compression type", headers=[("Accept-Encoding", "gzip, deflate")]
        )
    inflater = zlib.decompressobj(_WBITS[name])
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise invalid_arg(f"failed to decompress the request body ({name}): {exc}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise invalid_arg(f"the decompressed request body exceeds the limit of {limit} bytes")
    return data

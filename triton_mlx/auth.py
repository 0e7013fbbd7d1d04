"""Bearer-token authentication, as router middleware shared by every port."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Collection

from triton_mlx.http import Handler, Middleware, Request, Response, StreamingResponse


def bearer_auth(
    api_key: str,
    *,
    exempt_paths: Collection[str],
    unauthorized: Callable[[str], Response],
) -> Middleware:
    """Refuse every request without ``Authorization: Bearer <api_key>``, except exempt paths.

    The comparison is constant-time; the key is never logged. Middleware runs before routing,
    so unknown paths are refused too and cannot reveal which routes exist.
    """
    expected = api_key.encode()

    async def middleware(request: Request, call_next: Handler) -> Response | StreamingResponse:
        if request.path in exempt_paths:
            return await call_next(request)
        header = request.headers.get("authorization") or ""
        scheme, _, token = header.partition(" ")
        if not header:
            return unauthorized("missing API key: send the header 'Authorization: Bearer KEY'")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            return unauthorized("invalid API key")
        return await call_next(request)

    return middleware

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
    key_header: str | None = None,
) -> Middleware:
    """Refuse every request without ``Authorization: Bearer <api_key>``, except exempt paths.

    ``key_header`` (e.g. ``x-api-key``, where Anthropic's clients send the key) is a header
    that may carry the key itself instead; it is checked only when present.

    The comparison is constant-time; the key is never logged. Middleware runs before routing,
    so unknown paths are refused too and cannot reveal which routes exist. Exempt paths are
    compared exactly with the decoded path that routing matches, so no spelling of another
    route (``/v1/health/ready/../../models``, ``%2f``...) is exempt. A 401 carries the
    ``WWW-Authenticate`` challenge that RFC 9110 requires (RFC 6750's Bearer form).
    """
    expected = api_key.encode()

    async def middleware(request: Request, call_next: Handler) -> Response | StreamingResponse:
        if request.path in exempt_paths:
            return await call_next(request)
        if key_header is not None and (value := request.headers.get(key_header)) is not None:
            if hmac.compare_digest(value.strip().encode(), expected):
                return await call_next(request)
            return _challenge(unauthorized("invalid API key"), 'Bearer error="invalid_token"')
        header = request.headers.get("authorization") or ""
        scheme, _, token = header.partition(" ")
        if not header:
            return _challenge(
                unauthorized("missing API key: send the header 'Authorization: Bearer KEY'"),
                "Bearer",
            )
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            return _challenge(unauthorized("invalid API key"), 'Bearer error="invalid_token"')
        return await call_next(request)

    return middleware


def _challenge(response: Response, challenge: str) -> Response:
    response.headers = [*response.headers, ("WWW-Authenticate", challenge)]
    return response

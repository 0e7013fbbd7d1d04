"""Reading a request body as JSON, with the Content-Type rule every JSON front-end shares.

A missing Content-Type is taken as JSON (hand-written clients often omit it); a JSON media
type (application/json, text/json, */*+json) is accepted whatever its parameters (charset=...)
and case; anything else (text/plain, the form encoding that ``curl -d`` sends by default,
application/x-ndjson...) is a 415 that names it.
"""

from __future__ import annotations

from triton_mlx.http import BodyDecodeError, Request
from triton_mlx.serving.errors import RequestError


def json_body(request: Request) -> object:
    content_type = (request.headers.get("content-type") or "application/json").lower()
    subtype = content_type.split(";", 1)[0].strip().partition("/")[2]
    if subtype != "json" and not subtype.endswith("+json"):
        raise RequestError(
            415 if request.body else 400,
            f"unsupported Content-Type {content_type!r}: send application/json",
        )
    try:
        return request.json()
    except BodyDecodeError as exc:
        raise RequestError(400, f"the request body is not valid JSON: {exc}") from None


def json_object(request: Request) -> dict:
    """The body, which must be a JSON object."""
    data = json_body(request)
    if not isinstance(data, dict):
        raise RequestError(400, "the request body must be a JSON object")
    return data

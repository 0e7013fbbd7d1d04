"""Router unit tests: no sockets, just matching and the middleware chain."""

from __future__ import annotations

import asyncio
import json

import pytest

from triton_mlx.http import Headers, Request, Response, Router, json_response, text_response


def formatter(status: int, message: str) -> Response:
    return json_response({"error": message}, status=status)


def make_request(method: str, path: str) -> Request:
    return Request(method, path, path, {}, Headers(), b"", "rid", None, "1.1")


async def ok(request: Request) -> Response:
    return text_response("ok")


async def other(request: Request) -> Response:
    return text_response("other")


def test_static_and_parameter_routes():
    r = Router(formatter)
    r.add("GET", "/v1/models", ok)
    r.add("GET", "/v1/models/{model_id:path}", other)
    r.add("POST", "/v2/models/{name}/versions/{version}/infer", ok)
    assert r.match("GET", "/v1/models") == (ok, {})
    assert r.match("GET", "/v1/models/org/name") == (other, {"model_id": "org/name"})
    assert r.match("POST", "/v2/models/m/versions/3/infer") == (ok, {"name": "m", "version": "3"})


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/",
        "/v1/models//",
        "/v1//models",
        "/v1/models/..",
        "/V1/models",
        "/v1/modelsx",
        "",
    ],
)
def test_no_normalisation_unknown_paths_are_404(path):
    r = Router(formatter)
    r.add("GET", "/v1/models", ok)
    r.add("GET", "/v1/models/{model_id}", other)
    if path == "/v1/models/..":  # ".." is just a segment value; nothing is resolved
        assert r.match("GET", path) == (other, {"model_id": ".."})
        return
    result = r.match("GET", path)
    assert isinstance(result, Response) and result.status == 404
    assert json.loads(result.body)["error"].startswith("no route for GET")


def test_segment_parameter_does_not_match_empty_or_slashes():
    r = Router(formatter)
    r.add("GET", "/m/{name}/ready", ok)
    for path in ("/m//ready", "/m/a/b/ready"):
        assert isinstance(r.match("GET", path), Response)


def test_405_with_allow_header_and_head_from_get():
    r = Router(formatter)
    r.add("GET", "/x", ok)
    r.add(["post", "PUT"], "/x", other)
    r.add("DELETE", "/y/{id}", ok)
    assert r.match("HEAD", "/x") == (ok, {})
    assert r.match("post", "/x") == (other, {})
    result = r.match("PATCH", "/x")
    assert isinstance(result, Response) and result.status == 405
    assert ("Allow", "GET, HEAD, POST, PUT") in result.headers
    result = r.match("GET", "/y/1")
    assert ("Allow", "DELETE") in result.headers
    assert json.loads(result.body)["error"] == "method GET is not allowed for /y/1"


def test_first_matching_route_wins():
    r = Router(formatter)
    r.add("GET", "/models/special", other)
    r.add("GET", "/models/{name}", ok)
    assert r.match("GET", "/models/special")[0] is other
    assert r.match("GET", "/models/plain") == (ok, {"name": "plain"})


@pytest.mark.parametrize(
    "pattern",
    ["no-slash", "/a/{", "/a/{b", "/a/}", "/a/{b:int}", "/a/{b}/{b}", "/a/{1x}"],
)
def test_bad_patterns_rejected(pattern):
    with pytest.raises(ValueError):
        Router(formatter).add("GET", pattern, ok)


def test_duplicate_route_rejected():
    r = Router(formatter)
    r.add(["GET", "POST"], "/a", ok)
    with pytest.raises(ValueError, match="already registered"):
        r.add("post", "/a", other)
    r.add("PUT", "/a", other)  # a different method on the same pattern is fine


def test_regex_metacharacters_in_pattern_are_literal():
    r = Router(formatter)
    r.add("GET", "/a.b/(c)+", ok)
    assert r.match("GET", "/a.b/(c)+") == (ok, {})
    assert isinstance(r.match("GET", "/aXb/(c)+"), Response)


def test_middleware_order_and_unknown_paths():
    calls: list[str] = []

    def mw(name: str):
        async def middleware(request, call_next):
            calls.append(f"{name}>{request.path}")
            response = await call_next(request)
            calls.append(f"<{name}")
            return response

        return middleware

    r = Router(formatter)
    r.add("GET", "/p/{x}", ok)
    r.add_middleware(mw("a"))
    r.add_middleware(mw("b"))

    response = asyncio.run(r(make_request("GET", "/p/1")))
    assert response.body == b"ok"
    assert calls == ["a>/p/1", "b>/p/1", "<b", "<a"]
    calls.clear()
    response = asyncio.run(r(make_request("GET", "/unknown")))
    assert response.status == 404
    assert calls == ["a>/unknown", "b>/unknown", "<b", "<a"]


def test_dispatch_sets_path_params_and_middleware_can_short_circuit():
    seen = {}

    async def handler(request):
        seen.update(request.path_params)
        return text_response("ok")

    async def deny(request, call_next):
        if request.headers.get("authorization") is None:
            return formatter(401, "unauthorized")
        return await call_next(request)

    r = Router(formatter)
    r.add("GET", "/m/{name}", handler)
    assert asyncio.run(r(make_request("GET", "/m/x"))).status == 200
    assert seen == {"name": "x"}
    r.add_middleware(deny)  # added after a first call: the chain is rebuilt
    assert asyncio.run(r(make_request("GET", "/m/y"))).status == 401
    assert asyncio.run(r(make_request("GET", "/nope"))).status == 401
    assert seen == {"name": "x"}


def test_error_formatter_is_a_public_attribute():
    r = Router(formatter)
    assert r.error_formatter is formatter

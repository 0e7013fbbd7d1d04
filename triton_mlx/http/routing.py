"""Method + path routing and middleware.

A :class:`Router` is the application the transport calls: ``await router(request)``.
Middleware runs *before* routing, around a handler that performs the route lookup, so a
middleware (authentication, typically) sees every request, including ones for unknown
paths. That way a 404 versus 401 difference cannot reveal which routes exist, and path
tricks (``//``, ``..``, encoded slashes) cannot slip past authentication: whatever the
path, middleware has already run. Paths are matched literally against the percent-decoded
path; nothing is normalised, so a trailing slash or ``..`` is simply another (unknown) path.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from .messages import Request, Response, StreamingResponse

__all__ = ["ErrorFormatter", "Handler", "Middleware", "Router"]

Handler = Callable[[Request], Awaitable[Response | StreamingResponse]]
"""An endpoint: takes the request, returns the response."""

ErrorFormatter = Callable[[int, str], Response]
"""``(status, message) -> Response`` in the front-end's error shape.

The router uses it for 404/405 and the transport for the errors it generates itself
(400, 408, 413, 431, 500, 503), so every error a client sees has the same shape.
"""

Middleware = Callable[[Request, Handler], Awaitable[Response | StreamingResponse]]
"""``(request, call_next) -> response``; call ``await call_next(request)`` to continue."""

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_]+))?\}")
_CONVERTERS = {
    None: "[^/]+",  # one non-empty segment
    "path": ".+",  # the non-empty rest, slashes included (model ids like "org/name")
}


@dataclass(frozen=True)
class _Route:
    pattern: str
    regex: re.Pattern[str]
    methods: frozenset[str]
    handler: Handler


def _compile(pattern: str) -> re.Pattern[str]:
    """Turn ``/v1/models/{model_id:path}`` into an anchored regex with named groups."""
    if not pattern.startswith("/"):
        raise ValueError(f"route pattern must start with '/': {pattern!r}")
    parts: list[str] = []
    literals: list[str] = []
    names: set[str] = set()
    pos = 0
    for m in _PARAM.finditer(pattern):
        name, conv = m.group(1), m.group(2)
        if conv not in _CONVERTERS:
            raise ValueError(f"unknown converter {conv!r} in route pattern {pattern!r}")
        if name in names:
            raise ValueError(f"duplicate parameter {name!r} in route pattern {pattern!r}")
        names.add(name)
        literals.append(pattern[pos : m.start()])
        parts.append(re.escape(literals[-1]))
        parts.append(f"(?P<{name}>{_CONVERTERS[conv]})")
        pos = m.end()
    literals.append(pattern[pos:])
    if any("{" in lit or "}" in lit for lit in literals):
        raise ValueError(f"malformed parameter in route pattern {pattern!r}")
    parts.append(re.escape(literals[-1]))
    return re.compile("".join(parts))


class Router:
    """Maps ``(method, path)`` to handlers and runs middleware around every request."""

    def __init__(self, error_formatter: ErrorFormatter) -> None:
        self.error_formatter: ErrorFormatter = error_formatter
        self._routes: list[_Route] = []
        self._middleware: list[Middleware] = []
        self._chain: Handler | None = None

    def add(self, methods: str | Sequence[str], pattern: str, handler: Handler) -> None:
        """Register ``handler`` for ``methods`` (one name or several) on ``pattern``.

        ``{name}`` captures one path segment, ``{name:path}`` the rest of the path including
        slashes. Routes are tried in the order added. ``HEAD`` is served by a ``GET`` route
        unless one is registered for it explicitly; the transport drops the body.
        """
        names = [methods] if isinstance(methods, str) else list(methods)
        if not names:
            raise ValueError("at least one method is required")
        wanted = frozenset(m.upper() for m in names)
        for route in self._routes:
            if route.pattern == pattern and route.methods & wanted:
                dup = ", ".join(sorted(route.methods & wanted))
                raise ValueError(f"route {dup} {pattern} is already registered")
        self._routes.append(_Route(pattern, _compile(pattern), wanted, handler))

    def routes(self) -> list[tuple[frozenset[str], str]]:
        """Every registered ``(methods, pattern)``, in order: lets tests and tools cover each
        route (authentication, documentation) without keeping a list of their own."""
        return [(route.methods, route.pattern) for route in self._routes]

    def add_middleware(self, middleware: Middleware) -> None:
        """Wrap every request; the first middleware added is the outermost."""
        self._middleware.append(middleware)
        self._chain = None

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | Response:
        """Find the handler for ``method`` and ``path``.

        Returns ``(handler, path_params)``, or an error :class:`Response`: 404 when no
        pattern matches the path, 405 with an ``Allow`` header when some pattern matches
        but not for this method.
        """
        method = method.upper()
        allowed: set[str] = set()
        for route in self._routes:
            m = route.regex.fullmatch(path)
            if m is None:
                continue
            if method in route.methods or (method == "HEAD" and "GET" in route.methods):
                return route.handler, m.groupdict()
            allowed |= route.methods
        if not allowed:
            return self.error_formatter(404, f"no route for {method} {path}")
        if "GET" in allowed:
            allowed.add("HEAD")
        response = self.error_formatter(405, f"method {method} is not allowed for {path}")
        response.headers = [*response.headers, ("Allow", ", ".join(sorted(allowed)))]
        return response

    async def __call__(self, request: Request) -> Response | StreamingResponse:
        """Run the middleware chain, then route and call the handler."""
        if self._chain is None:
            chain: Handler = self._dispatch
            for middleware in reversed(self._middleware):
                chain = _wrap(middleware, chain)
            self._chain = chain
        return await self._chain(request)

    async def _dispatch(self, request: Request) -> Response | StreamingResponse:
        found = self.match(request.method, request.path)
        if isinstance(found, Response):
            return found
        handler, params = found
        request.path_params = params
        return await handler(request)


def _wrap(middleware: Middleware, call_next: Handler) -> Handler:
    async def handler(request: Request) -> Response | StreamingResponse:
        return await middleware(request, call_next)

    return handler

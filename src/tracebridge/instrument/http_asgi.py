"""Light server spans for ASGI applications: Starlette and FastAPI apps in any server, and any
ASGI app uvicorn loads (``tracebridge.instrument.asgi_servers``).

One ASGI middleware, outermost, so it sees the final status — the 500 a framework's error
middleware sent, and the exception it re-raised.  The route template (``/stock/{sku}``) is read
from the scope after the app ran: Starlette's router records the matched route in it
(``scope["route"]``), where upstream searches the route table again per request.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from tracebridge.instrument.http_spans import (
    HttpOptions,
    ServerSpan,
    context_fields,
    default_port,
    request_attributes,
    response_headers,
    split_host,
    suppressed,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _host_port(scope: Scope, host_header: str | None) -> tuple[str | None, int | None]:
    """``server.address``/``server.port``: from the Host header (what the client asked for),
    else the listening socket."""
    if host_header:
        return split_host(host_header, default_port(scope.get("scheme") or "http"))
    server = scope.get("server")
    if server:
        return str(server[0]), server[1]
    return None, None


# In the scope of a request that has its server span: a mounted app, or a second wrapper,
# makes no second one.
TRACED_KEY = "tracebridge.http.traced"
# FastAPI's own telemetry steps aside for a request whose scope holds this key (as it does for
# upstream's middleware): one server span per request, not two.
FASTAPI_TELEMETRY_KEY = "fastapi.telemetry"


class TracedASGI:
    """ASGI middleware: one light server span per HTTP request; other scopes pass through."""

    _is_instrumented_by_opentelemetry = True  # upstream's marker: never traced twice

    def __init__(self, app: ASGIApp, options: HttpOptions | None = None) -> None:
        self.app = app
        self.options = options or HttpOptions.from_env("ASGI", "SERVER")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await traced_call(self.options, self.app, scope, receive, send)


async def traced_call(options: HttpOptions, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run one ASGI call; an HTTP request runs under a server span."""
    if scope.get("type") != "http" or TRACED_KEY in scope or suppressed():
        await app(scope, receive, send)
        return
    scope[TRACED_KEY] = True
    scope.setdefault(FASTAPI_TELEMETRY_KEY, None)
    scheme = scope.get("scheme") or "http"
    path = scope.get("path") or "/"
    root_path = scope.get("root_path") or ""
    raw_query = scope.get("query_string") or b""
    query = raw_query.decode("latin-1") if raw_query else ""
    fields = context_fields()
    found: dict[str, str] = {}
    host_header: str | None = None
    user_agent: str | None = None
    capture = options.request_headers
    captured: list[tuple[str, str]] = []
    for raw_name, raw_value in scope.get("headers") or ():
        name = raw_name.decode("latin-1").lower()
        if name == "host":
            host_header = raw_value.decode("latin-1")
        elif name == "user-agent":
            user_agent = raw_value.decode("latin-1")
        elif name in fields:
            value = raw_value.decode("latin-1")
            found[name] = f"{found[name]},{value}" if name in found else value
        if capture is not None:
            captured.append((name, raw_value.decode("latin-1")))
    host, port = _host_port(scope, host_header)
    if options.request_excluded(scheme, host_header or host, path, query):
        await app(scope, receive, send)
        return
    client = scope.get("client")
    attributes = request_attributes(
        scheme,
        path,
        query,
        host,
        port,
        (str(client[0]), client[1]) if client else None,
        scope.get("http_version"),
        user_agent,
    )
    if captured:
        attributes.update(options.captured(captured, capture, response=False))
    server = ServerSpan.start(scope.get("method") or "GET", found, attributes)
    status: int | None = None
    response_attributes: dict[str, Any] = {}

    async def traced_send(message: Message) -> None:
        nonlocal status
        if message.get("type") == "http.response.start":
            status = message.get("status")
            added: list[tuple[bytes, bytes]] = []
            response_headers(
                lambda name, value: added.append((name.encode("latin-1"), value.encode("latin-1")))
            )
            if options.response_headers is not None and server.recording:
                sent = [
                    (n.decode("latin-1").lower(), v.decode("latin-1"))
                    for n, v in message.get("headers") or ()
                ]
                response_attributes.update(options.captured(sent, options.response_headers, response=True))
            if added:
                message = {**message, "headers": [*(message.get("headers") or ()), *added]}
        await send(message)

    try:
        await app(scope, receive, traced_send)
    except BaseException as error:
        server.finish(status, error, _route(scope, root_path), response_attributes)
        raise
    server.finish(status, None, _route(scope, root_path), response_attributes)


def _route(scope: Scope, root_path: str) -> str | None:
    """The matched route's template, from what the routers left in the scope: the route
    (``scope["route"]``), FastAPI's effective path for a route of an included router (whose own
    ``path`` lacks the router's prefix), and the mounts passed through (each extends
    ``root_path``)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    fastapi_scope = scope.get("fastapi")
    if isinstance(fastapi_scope, dict):
        effective = getattr(fastapi_scope.get("effective_route_context"), "path_format", None)
        if isinstance(effective, str) and effective:
            path = effective
    mounted = scope.get("root_path") or ""
    if mounted != root_path and mounted.startswith(root_path):
        path = mounted[len(root_path) :] + path
    return path or None


# (class, its own __call__) for each class whose __call__ we replaced.
_REPLACED: list[tuple[type, Any]] = []


def starlette_traced() -> bool:
    """Whether every Starlette (and so FastAPI) app is traced by :class:`StarletteInstrumentor`."""
    return bool(_REPLACED)


def _traced_class_call(cls: type, options: HttpOptions) -> None:
    """Replace ``cls.__call__`` by a coroutine function (not a wrapt wrapper: servers inspect
    ``__call__`` to tell ASGI 3 from ASGI 2) that runs the original under a server span."""
    original = cls.__dict__["__call__"]

    async def __call__(self: Any, scope: Scope, receive: Receive, send: Send) -> None:
        if getattr(self, "_is_instrumented_by_opentelemetry", False):
            await original(self, scope, receive, send)  # upstream's instrument_app traces it
            return

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await original(self, scope, receive, send)

        await traced_call(options, app, scope, receive, send)

    __call__.__wrapped__ = original  # type: ignore[attr-defined]
    cls.__call__ = __call__  # type: ignore[method-assign]
    _REPLACED.append((cls, original))


def trace_fastapi() -> bool:
    """Trace FastAPI's own ``__call__`` too (it overrides Starlette's, with its own telemetry),
    once FastAPI is imported — never importing it.  ``import fastapi`` imports Starlette first,
    so Starlette's instrumentation runs before the ``FastAPI`` class exists; ``instrument()``
    therefore also runs this right after FastAPI's own import.  Idempotent."""
    fastapi = sys.modules.get("fastapi")
    cls = getattr(fastapi, "FastAPI", None)
    if not _REPLACED or not isinstance(cls, type) or "__call__" not in cls.__dict__:
        return False
    if any(replaced is cls for replaced, _original in _REPLACED):
        return True
    _traced_class_call(cls, HttpOptions.from_env("FASTAPI", "SERVER"))
    return True


class StarletteInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Traces every Starlette and FastAPI application, whichever server runs it: the app's
    ``__call__`` runs each HTTP request under a light server span, outside everything the app
    does — FastAPI's own telemetry included, which then steps aside."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("starlette >= 0.30",)

    def _instrument(self, **kwargs: Any) -> None:
        from starlette.applications import Starlette

        _traced_class_call(Starlette, HttpOptions.from_env("STARLETTE", "SERVER"))
        trace_fastapi()

    def _uninstrument(self, **kwargs: Any) -> None:
        while _REPLACED:
            cls, original = _REPLACED.pop()
            cls.__call__ = original  # type: ignore[method-assign]

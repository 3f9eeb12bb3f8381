"""HTTP additions to the upstream instrumentations: the edge's inbound-context policy, and the
hooks that carry business keys back from responses.

At a system's edge, a ``traceparent`` from the internet is an untrusted claim: it would let any
client graft our spans onto its trace, or pick our sampling decision.  With
``TRACEBRIDGE_INBOUND_CONTEXT=drop`` every instrumented HTTP server — ASGI, WSGI, aiohttp —
ignores ``traceparent``, ``tracestate`` and ``baggage`` from callers, and the edge starts the
trace.  Services inside keep ``trust``.
"""

from __future__ import annotations

import importlib
from functools import partial
from typing import Any

from wrapt import wrap_function_wrapper

from tracebridge.business_keys import adopt_from_response
from tracebridge.config import InboundContext
from tracebridge.instrument import lazy

_CONTEXT_HEADERS = frozenset(
    {
        b"traceparent",
        b"tracestate",
        b"baggage",
        b"b3",
        b"x-b3-traceid",
        b"x-b3-spanid",
        b"x-b3-sampled",
        b"x-b3-parentspanid",
        b"x-b3-flags",
        b"uber-trace-id",
    }
)
# The same fields as the getters of the WSGI (Flask, Django) and aiohttp servers name them.
_CONTEXT_KEYS = frozenset(name.decode() for name in _CONTEXT_HEADERS)
# (module, "Class.method", wrapper) for every server stack: ASGI strips the headers from the
# scope; ASGI, WSGI and aiohttp read them through one getter class each, which answers "absent".
_installed: list[tuple[str, str]] = []
# Read by our own light server spans (tracebridge.instrument.http_spans) on every request.
_policy = InboundContext.TRUST


def drops_inbound_context() -> bool:
    """Whether servers ignore callers' context headers (``TRACEBRIDGE_INBOUND_CONTEXT=drop``)."""
    return _policy is InboundContext.DROP


def _without_context(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    scope, *rest = args
    if scope.get("type") in ("http", "websocket"):
        headers = scope.get("headers") or []
        kept = [(name, value) for name, value in headers if name.lower() not in _CONTEXT_HEADERS]
        if len(kept) != len(headers):
            scope = {**scope, "headers": kept}
    return wrapped(scope, *rest, **kwargs)


def _context_key_absent(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    key = args[1] if len(args) > 1 else kwargs.get("key")
    if isinstance(key, str) and key.lower() in _CONTEXT_KEYS:
        return None
    return wrapped(*args, **kwargs)


_INBOUND_WRAPPERS: tuple[tuple[str, str, Any], ...] = (
    ("opentelemetry.instrumentation.asgi", "OpenTelemetryMiddleware.__call__", _without_context),
    # Django under ASGI extracts through the ASGI getter without the middleware above.
    ("opentelemetry.instrumentation.asgi", "ASGIGetter.get", _context_key_absent),
    ("opentelemetry.instrumentation.wsgi", "WSGIGetter.get", _context_key_absent),
    ("opentelemetry.instrumentation.aiohttp_server", "AiohttpGetter.get", _context_key_absent),
)


def install_inbound_policy(policy: InboundContext) -> None:
    """Apply ``policy`` to every HTTP server stack whose upstream instrumentation is installed
    — ASGI (FastAPI, Starlette), WSGI (Flask, Django), aiohttp — and to our own (idempotent).

    Each upstream module is wrapped as it is first imported, never imported here: importing
    the aiohttp server instrumentation imports aiohttp, whose own instrumentation would then
    run inside that import (and find the server instrumentation half-initialised)."""
    global _policy
    _policy = policy
    armed = any(key.startswith("inbound ") for key in lazy.armed())
    if policy is InboundContext.TRUST or _installed or armed:
        return
    for module, name, wrapper in _INBOUND_WRAPPERS:
        if lazy.is_installed(module):
            wrap = partial(_wrap_inbound, module, name, wrapper)
            lazy.when_imported((module,), f"inbound {module} {name}", wrap)


def _wrap_inbound(module: str, name: str, wrapper: Any) -> bool:
    wrap_function_wrapper(module, name, wrapper)
    _installed.append((module, name))
    return True


def uninstall_inbound_policy() -> None:
    from opentelemetry.instrumentation.utils import unwrap

    global _policy
    _policy = InboundContext.TRUST
    while _installed:
        module, name = _installed.pop()
        owner, method = name.split(".")
        unwrap(getattr(importlib.import_module(module), owner), method)


def response_hook(span: Any, request: Any, response: Any) -> None:
    """httpx (sync): business keys the server sent back join the caller's spans."""
    adopt_from_response(span, getattr(response, "headers", None))


async def async_response_hook(span: Any, request: Any, response: Any) -> None:
    """httpx (async): as :func:`response_hook`."""
    adopt_from_response(span, getattr(response, "headers", None))


def aiohttp_response_hook(span: Any, params: Any) -> None:
    """aiohttp client: as :func:`response_hook` (it hands over the request's end parameters)."""
    adopt_from_response(span, getattr(getattr(params, "response", None), "headers", None))


_response_hooks: list[tuple[str, str]] = []


def _aiohttp_middleware_with_business_keys(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The aiohttp server instrumentation has no response-propagator hook (ASGI, Flask and
    Django have one): give its middleware one, so business keys learned while handling a
    request go back in a ``baggage`` response header there too."""
    from aiohttp import web
    from opentelemetry.instrumentation.propagators import get_global_response_propagator

    traced = wrapped(*args, **kwargs)

    @web.middleware
    async def middleware(request: Any, handler: Any) -> Any:
        async def handle(request: Any) -> Any:
            response = await handler(request)
            propagator = get_global_response_propagator()  # type: ignore[no-untyped-call]
            if propagator is not None:
                propagator.inject(response.headers)  # while the server span is current
            return response

        return await traced(request, handle)

    return middleware


_AIOHTTP_SERVER = "opentelemetry.instrumentation.aiohttp_server"
_AIOHTTP_HOOK = "aiohttp-server business keys"


def install_response_hooks() -> None:
    """Hooks the upstream instrumentations don't offer, put in as each one's module is first
    imported (importing it now would import aiohttp); idempotent."""
    if _response_hooks or _AIOHTTP_HOOK in lazy.armed():
        return
    lazy.when_imported((_AIOHTTP_SERVER,), _AIOHTTP_HOOK, _wrap_aiohttp_middleware)


def _wrap_aiohttp_middleware() -> bool:
    wrap_function_wrapper(
        _AIOHTTP_SERVER, "create_aiohttp_middleware", _aiohttp_middleware_with_business_keys
    )
    _response_hooks.append((_AIOHTTP_SERVER, "create_aiohttp_middleware"))
    return True


def uninstall_response_hooks() -> None:
    from opentelemetry.instrumentation.utils import unwrap

    while _response_hooks:
        module, name = _response_hooks.pop()
        unwrap(importlib.import_module(module), name)

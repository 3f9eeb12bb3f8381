"""HTTP additions to the upstream instrumentations: the edge's inbound-context policy, and the
hooks that carry business keys back from responses.

At a system's edge, a ``traceparent`` from the internet is an untrusted claim: it would let any
client graft our spans onto its trace, or pick our sampling decision.  With
``TRACEBRIDGE_INBOUND_CONTEXT=drop`` the ASGI server ignores ``traceparent``, ``tracestate`` and
``baggage`` from callers, and the edge starts the trace.  Services inside keep ``trust``.
"""

from __future__ import annotations

from typing import Any

from wrapt import wrap_function_wrapper

from tracebridge.business_keys import adopt_from_response
from tracebridge.config import InboundContext

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
_policy_installed = False


def _without_context(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    scope, *rest = args
    if scope.get("type") in ("http", "websocket"):
        headers = scope.get("headers") or []
        kept = [(name, value) for name, value in headers if name.lower() not in _CONTEXT_HEADERS]
        if len(kept) != len(headers):
            scope = {**scope, "headers": kept}
    return wrapped(scope, *rest, **kwargs)


def install_inbound_policy(policy: InboundContext) -> None:
    """Apply ``policy`` to every ASGI server the upstream instrumentation wraps (idempotent)."""
    global _policy_installed
    if policy is InboundContext.TRUST or _policy_installed:
        return
    wrap_function_wrapper(
        "opentelemetry.instrumentation.asgi", "OpenTelemetryMiddleware.__call__", _without_context
    )
    _policy_installed = True


def uninstall_inbound_policy() -> None:
    global _policy_installed
    if not _policy_installed:
        return
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.instrumentation.utils import unwrap

    unwrap(OpenTelemetryMiddleware, "__call__")
    _policy_installed = False


def response_hook(span: Any, request: Any, response: Any) -> None:
    """httpx (sync): business keys the server sent back join the caller's spans."""
    adopt_from_response(span, getattr(response, "headers", None))


async def async_response_hook(span: Any, request: Any, response: Any) -> None:
    """httpx (async): as :func:`response_hook`."""
    adopt_from_response(span, getattr(response, "headers", None))

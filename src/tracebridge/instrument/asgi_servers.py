"""Server spans for any ASGI application uvicorn serves — not only FastAPI's.

The upstream instrumentations trace ASGI apps framework by framework (FastAPI, Starlette), by
replacing the framework's class.  A plain ASGI callable, or a framework nobody instruments,
gets no server span — and no inbound-context policy, so an edge built that way trusts whatever
``traceparent`` the internet sends.  Wrapping the application where the server loads it covers
them all: uvicorn's ``Config.load`` puts OpenTelemetry's ASGI middleware around the app, unless
the app is already traced (an instrumented FastAPI or Starlette app, or one the user wrapped
in the middleware themselves), so a request never gets two server spans.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

# uvicorn's own wrappers around the application (all keep it in ``.app``).
_MAX_DEPTH = 16


def already_traced(app: Any) -> bool:
    """Whether ``app`` — or anything it wraps — is traced by an OpenTelemetry ASGI middleware,
    ours, or (a Starlette or FastAPI app) by our Starlette instrumentation."""
    from tracebridge.instrument.http_asgi import starlette_traced

    middleware: tuple[type, ...] = ()
    try:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        middleware = (OpenTelemetryMiddleware,)
    except ImportError:
        pass
    current = app
    for _ in range(_MAX_DEPTH):
        if current is None:
            return False
        if isinstance(current, middleware) or getattr(current, "_is_instrumented_by_opentelemetry", False):
            return True
        if starlette_traced() and _is_starlette(current):
            return True
        current = getattr(current, "app", None)
    return False


def _is_starlette(app: Any) -> bool:
    try:
        from starlette.applications import Starlette
    except ImportError:
        return False
    return isinstance(app, Starlette)


class UvicornInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Wraps every application uvicorn loads in our light ASGI middleware (``light=True``, what
    ``instrument()`` passes by default) or OpenTelemetry's.

    Other keyword arguments to ``instrument()`` go to OpenTelemetry's middleware
    (``exclude_spans``, ``server_request_hook``, …)."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("uvicorn >= 0.20",)

    def _instrument(self, **kwargs: Any) -> None:
        light = bool(kwargs.get("light", False))
        options = {
            key: value
            for key, value in kwargs.items()
            if key not in ("tracer_provider", "skip_dep_check", "light")
        }
        options["tracer_provider"] = kwargs.get("tracer_provider")
        if not light:
            options.setdefault("exclude_spans", ["receive", "send"])

        def load(wrapped: Any, config: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
            result = wrapped(*args, **kw)
            app = getattr(config, "loaded_app", None)
            if app is not None and not already_traced(app):
                if light:
                    from tracebridge.instrument.http_asgi import TracedASGI

                    config.loaded_app = TracedASGI(app)
                else:
                    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

                    config.loaded_app = OpenTelemetryMiddleware(app, **options)
            return result

        wrap_function_wrapper("uvicorn.config", "Config.load", load)

    def _uninstrument(self, **kwargs: Any) -> None:
        import uvicorn.config

        unwrap(uvicorn.config.Config, "load")

"""``@traced``: a span around a function, for the few methods worth their own span."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, overload

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from tracebridge.messaging.spans import mark_failed
from tracebridge.version import SCHEMA_URL, __version__

F = TypeVar("F", bound=Callable[..., Any])
_tracer = trace.get_tracer("tracebridge.traced", __version__, schema_url=SCHEMA_URL)


@overload
def traced(function: F) -> F: ...
@overload
def traced(
    *, name: str | None = None, kind: SpanKind = SpanKind.INTERNAL, attributes: dict[str, Any] | None = None
) -> Callable[[F], F]: ...


def traced(
    function: F | None = None,
    *,
    name: str | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: dict[str, Any] | None = None,
) -> F | Callable[[F], F]:
    """Wrap a sync or async function in a span named after it (``Class.method``).

    Exceptions are recorded on the span (status ERROR, ``error.type``) and re-raised unchanged.
    Use as ``@traced`` or ``@traced(name="reserve stock", attributes={...})``.
    """

    def decorate(func: F) -> F:
        span_name = name or func.__qualname__
        static = {"code.function.name": f"{func.__module__}.{func.__qualname__}", **(attributes or {})}

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with _tracer.start_as_current_span(
                    span_name,
                    kind=kind,
                    attributes=static,
                    record_exception=False,
                    set_status_on_exception=False,
                ) as span:
                    try:
                        return await func(*args, **kwargs)
                    except BaseException as error:
                        mark_failed(span, error)
                        raise

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _tracer.start_as_current_span(
                span_name, kind=kind, attributes=static, record_exception=False, set_status_on_exception=False
            ) as span:
                try:
                    return func(*args, **kwargs)
                except BaseException as error:
                    mark_failed(span, error)
                    raise

        return wrapper  # type: ignore[return-value]

    if function is not None:
        return decorate(function)
    return decorate

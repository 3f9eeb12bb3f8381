"""strawberry GraphQL: add strawberry's own OpenTelemetry extension to every Schema.

strawberry traces only schemas built with its extension in ``extensions=[...]`` — tracing code
in business logic.  We add it when a ``Schema`` is created.  Its default records every
resolver argument as ``graphql.param.*``, which puts card numbers and e-mail addresses into
traces, so argument values are dropped unless named in ``allowed_arguments``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper


class StrawberryInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Adds ``OpenTelemetryExtension`` to each ``strawberry.Schema`` created after ``instrument()``.

    ``instrument(allowed_arguments={"id", "sku"})`` keeps those resolver arguments as
    attributes; every other argument value is left out.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("strawberry-graphql >= 0.230",)

    def _instrument(self, **kwargs: Any) -> None:
        import strawberry
        from strawberry.extensions.tracing.opentelemetry import OpenTelemetryExtension

        allowed = frozenset(kwargs.get("allowed_arguments", ()))
        tracer_provider = kwargs.get("tracer_provider")

        def keep_allowed(arguments: dict[str, Any], info: Any) -> dict[str, Any]:
            return {name: value for name, value in arguments.items() if name in allowed}

        def extension() -> Any:
            return OpenTelemetryExtension(arg_filter=keep_allowed, tracer_provider=tracer_provider)

        extension._tracebridge = True  # type: ignore[attr-defined]

        def with_extension(wrapped: Any, instance: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
            extensions = list(kw.pop("extensions", ()) or ())
            already = any(
                (isinstance(e, type) and issubclass(e, OpenTelemetryExtension))
                or getattr(e, "_tracebridge", False)
                for e in extensions
            )
            if not already:
                extensions.append(extension)
            return wrapped(*args, extensions=extensions, **kw)

        wrap_function_wrapper(strawberry.Schema, "__init__", with_extension)

    def _uninstrument(self, **kwargs: Any) -> None:
        import strawberry

        unwrap(strawberry.Schema, "__init__")

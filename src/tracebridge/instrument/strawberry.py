"""strawberry GraphQL: add strawberry's own OpenTelemetry extension to every Schema.

strawberry traces only schemas built with its extension in ``extensions=[...]`` — tracing code
in business logic.  We add it when a ``Schema`` is created.  Left as it is, the extension
writes card numbers and e-mail addresses into traces twice: every resolver argument as
``graphql.param.*``, and the whole document, literals included, as ``query``.  So argument
values are dropped unless named in ``allowed_arguments``, and the document is recorded with
its string and number literals replaced by ``?`` (variables are never recorded).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Generator
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

_LITERALS = re.compile(r'"""[\s\S]*?"""|"(?:\\.|[^"\\])*"|(?<![\w$])-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?')


def redact_document(document: str) -> str:
    """A GraphQL document with every string and number literal replaced by ``?``."""
    return _LITERALS.sub("?", document)


def _redacting_extension() -> type:
    """strawberry's extension, with the recorded document redacted (built lazily: strawberry is
    an optional dependency)."""
    from strawberry.extensions.base_extension import LifecycleStep
    from strawberry.extensions.tracing.opentelemetry import OpenTelemetryExtension

    class RedactingOpenTelemetryExtension(OpenTelemetryExtension):
        def on_operation(self) -> Generator[None, None, None]:
            upstream = super().on_operation()
            next(upstream)  # the operation span now exists, with the raw document on it
            span = self._span_holder.get(LifecycleStep.OPERATION)
            if span is not None and self.execution_context.query:
                span.set_attribute("query", redact_document(self.execution_context.query))
            try:
                yield
            finally:
                next(upstream, None)

    return RedactingOpenTelemetryExtension


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

        extension_class = _redacting_extension()
        allowed = frozenset(kwargs.get("allowed_arguments", ()))
        tracer_provider = kwargs.get("tracer_provider")

        def keep_allowed(arguments: dict[str, Any], info: Any) -> dict[str, Any]:
            return {name: value for name, value in arguments.items() if name in allowed}

        def extension() -> Any:
            return extension_class(arg_filter=keep_allowed, tracer_provider=tracer_provider)

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

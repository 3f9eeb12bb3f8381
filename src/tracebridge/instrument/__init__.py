"""``instrument()``: turn on every instrumentation whose library is installed.

Ours (aiokafka, strawberry) and the upstream OpenTelemetry ones (FastAPI/ASGI, httpx), so a
service gets one trace across HTTP, GraphQL and Kafka from two lines — or none, under
``tracebridge run``.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from tracebridge.config import Settings
from tracebridge.instrument import http_policy, log_events

logger = logging.getLogger("tracebridge")

# name -> (module that must import, "module:Instrumentor class")
INSTRUMENTATIONS: dict[str, tuple[str, str]] = {
    "aiokafka": ("aiokafka", "tracebridge.messaging.kafka.aiokafka:AIOKafkaInstrumentor"),
    "httpx": ("httpx", "opentelemetry.instrumentation.httpx:HTTPXClientInstrumentor"),
    "fastapi": ("fastapi", "opentelemetry.instrumentation.fastapi:FastAPIInstrumentor"),
    "strawberry": ("strawberry", "tracebridge.instrument.strawberry:StrawberryInstrumentor"),
    "logging": (
        "opentelemetry.instrumentation.logging",
        "opentelemetry.instrumentation.logging:LoggingInstrumentor",
    ),
}

# Defaults we pass to upstream instrumentors: the ASGI per-message "http send"/"http receive"
# spans triple the span count of every request and answer no question we ask.
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "fastapi": {"exclude_spans": ["receive", "send"]},
    # Trace and span ids on every log record (``%(otelTraceID)s``), without touching the
    # application's own log format — and without the upstream default of putting an OTel
    # logs-bridge handler on the root logger, which would also silence Python's last-resort
    # stderr output (a program with no logging set up would stop showing its warnings).
    "logging": {
        "inject_trace_context": True,
        "log_hook": log_events.hook,
        "enable_log_auto_instrumentation": False,
    },
    # Business keys a server learned (``order.id``) come back in a ``baggage`` response
    # header and join the caller's spans (tracebridge.business_keys).
    "httpx": {
        "response_hook": http_policy.response_hook,
        "async_response_hook": http_policy.async_response_hook,
    },
}


def _instrumentor(target: str) -> Any:
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)()


def instrument(only: tuple[str, ...] | None = None, **kwargs: Any) -> list[str]:
    """Instrument each installed library (or just those in ``only``); return their names.

    A library that isn't installed is skipped silently; one whose instrumentation fails is
    logged and skipped — a tracing problem must never stop the service.  Calling it again
    does nothing for libraries already instrumented.
    """
    from tracebridge.sdk import configured

    state = configured()
    settings = state.settings if state is not None else Settings.from_env()
    done: list[str] = []
    for name, (library, target) in INSTRUMENTATIONS.items():
        if only is not None and name not in only:
            continue
        if name in settings.disabled_instrumentations:  # OTEL_PYTHON_DISABLED_INSTRUMENTATIONS
            continue
        try:
            importlib.import_module(library)
        except ImportError:
            continue
        try:
            instrumentor = _instrumentor(target)
            if not instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.instrument(**{**DEFAULT_OPTIONS.get(name, {}), **kwargs})
            done.append(name)
        except Exception as error:
            logger.warning("tracebridge: could not instrument %s: %s", name, error)
    levels = {"warning": logging.WARNING, "error": logging.ERROR}
    log_events.set_level(levels.get(settings.log_events) if "logging" in done else None)
    if "fastapi" in done:
        http_policy.install_inbound_policy(settings.inbound_context)
    return done


def uninstrument() -> None:
    """Undo :func:`instrument` for every library it instrumented."""
    http_policy.uninstall_inbound_policy()
    log_events.set_level(None)
    for name, (library, target) in INSTRUMENTATIONS.items():
        try:
            importlib.import_module(library)
            instrumentor = _instrumentor(target)
        except ImportError:
            continue
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        logger.debug("tracebridge: uninstrumented %s", name)

"""Errors a program logs inside a span are recorded on that span.

Business code already logs its failures (``logger.error("charge failed", exc_info=error)``);
it should not also have to call the tracing API.  Through the upstream logging
instrumentation's ``log_hook`` (it runs as each record is created, so it keeps working after
the program replaces the root logger's handlers), a record at ``TRACEBRIDGE_LOG_EVENTS`` level
or above becomes an ``exception`` event (when it carries one) or a ``log`` event on the current
span, and an ERROR record marks the span ERROR — so a failed attempt shows up in the trace, and
in ``tracebridge diagnose``, as the failure it was.
"""

from __future__ import annotations

import logging

from opentelemetry.trace import Span, Status, StatusCode

_MAX_MESSAGE = 1000
_level: int | None = None  # None: off


def set_level(level: int | None) -> None:
    """The least severe record that is recorded on spans; ``None`` turns it off."""
    global _level
    _level = level


def hook(span: Span, record: logging.LogRecord) -> None:
    """``LoggingInstrumentor(log_hook=...)``: called with the current span for every record."""
    if _level is None or record.levelno < _level or not span.is_recording():
        return
    message = record.getMessage()[:_MAX_MESSAGE]
    attributes = {"log.severity": record.levelname, "log.logger": record.name, "log.message": message}
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, BaseException):
        span.record_exception(error, attributes=attributes)
    else:
        span.add_event("log", attributes)
    if record.levelno >= logging.ERROR:
        span.set_status(Status(StatusCode.ERROR, message[:200]))

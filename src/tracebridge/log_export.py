"""Every service's log records over OTLP, next to its spans, with their trace and span ids.

Records are taken where a logger hands each one to its handlers (``Logger.callHandlers``,
after its level, its filters and ``extra=`` were applied), not by a handler on the root
logger: a handler there would turn ``logging.basicConfig`` into a no-op for the program, and
silence Python's last-resort output in a program that never set logging up.  So exactly the
records the program's loggers let through are exported — inside a span or not — each with the
span that was current when it was logged.

The pipeline is the spans' own, not the SDK's logs pipeline: the SDK's handler cost 31 µs a
record before any export (bounded attribute containers, a copy of every record) and its OTLP
encoder builds a message object per field — 92 µs a record in all, ten times a span
(``bench/log_overhead.py``).  Here a record becomes a :class:`~tracebridge.otlp_wire.LogItem`
of plain values, queued in a :class:`~tracebridge.exporting.BatchExportProcessor` (bounded:
``OTEL_BLRP_MAX_QUEUE_SIZE``; a full queue drops and counts; its schedule and batch size are
``OTEL_BLRP_SCHEDULE_DELAY`` and ``OTEL_BLRP_MAX_EXPORT_BATCH_SIZE``), redacted like spans in the
export thread and written by :func:`~tracebridge.otlp_wire.encode_logs`.  Records of the
exporting machinery itself (``opentelemetry.*``, ``tracebridge.export*``) and records logged
while instrumentation is suppressed (the export threads) are never exported: no feedback loop.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from wrapt import wrap_function_wrapper

from tracebridge.config import Settings
from tracebridge.exporting import BatchExportProcessor, ResilientExporter
from tracebridge.otlp_wire import LogItem, WireSpanExporter, encode_logs
from tracebridge.redaction import RedactionError, RedactionPolicy, Redactor

_OWN_LOGGERS = ("opentelemetry", "tracebridge.export")
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
# What the logging instrumentation adds for log formats (``%(otelTraceID)s``): the record's own
# trace and span ids say it already.
_INJECTED = frozenset(("otelTraceID", "otelSpanID", "otelTraceSampled", "otelServiceName"))
_SCALARS = (str, bool, int, float)


def severity_number(level: int) -> int:
    """Python's level as an OTLP severity number (DEBUG 5, INFO 9, WARNING 13, ERROR 17,
    CRITICAL 21; levels in between keep their place in the range)."""
    if level <= 0:
        return 0
    if level < 10:
        return 1 + min(3, level * 4 // 10)
    return min(24, 5 + (level - 10) * 4 // 10)


def _item(record: logging.LogRecord) -> LogItem:
    attributes: dict[str, Any] = {
        "code.file.path": record.pathname,
        "code.function.name": record.funcName,
        "code.line.number": record.lineno,
    }
    for key, value in record.__dict__.items():
        if key not in _STANDARD and key not in _INJECTED and isinstance(value, _SCALARS):
            attributes[key] = value
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, BaseException):
        attributes["exception.type"] = type(error).__qualname__
        attributes["exception.message"] = str(error)
        attributes["exception.stacktrace"] = "".join(traceback.format_exception(error))
    context = trace.get_current_span().get_span_context()
    return LogItem(
        time_ns=int(record.created * 1e9),
        severity_number=severity_number(record.levelno),
        severity_text=record.levelname,
        body=record.getMessage(),
        attributes=attributes,
        trace_id=context.trace_id if context.is_valid else 0,
        span_id=context.span_id if context.is_valid else 0,
        trace_flags=int(context.trace_flags) if context.is_valid else 0,
        scope=record.name,
    )


class LogExporter(SpanExporter):
    """Encodes and posts batches of :class:`LogItem` to ``/v1/logs``, redacting first (the same
    policy as spans: a card number or an address logged by business code leaves no more than
    in a span), and — like spans — holds them while the collector is down and delivers them
    once it answers again (:class:`~tracebridge.exporting.ResilientExporter`, bounded by
    ``TRACEBRIDGE_EXPORT_BUFFER``).  A :class:`SpanExporter` by interface, so the batch
    processor drives it."""

    def __init__(self, settings: Settings, resource: Resource) -> None:
        try:
            policy = RedactionPolicy.parse(settings.redact)
        except RedactionError:
            policy = RedactionPolicy.parse(None)
        self.redactor = None if policy.empty else Redactor(policy)
        self.console = settings.logs_exporter == "console"
        self.resource = resource
        self.wire = ResilientExporter(
            WireSpanExporter.from_settings(settings, settings.otlp_logs_endpoint, self._encode),
            endpoint=settings.otlp_logs_endpoint,
            retry_after_s=settings.exporter_retry_after_s,
            max_held_spans=settings.export_buffer_spans,
            inner_logger="tracebridge.export.otlp",
            what="log records",
        )

    @property
    def held_spans(self) -> int:
        """Records held for a retry (the batch processor retries when idle while any are)."""
        return self.wire.held_spans

    @property
    def retry_after_s(self) -> float:
        return self.wire.retry_after_s

    def retry_held(self) -> bool:
        return self.wire.retry_held()

    def _redacted(self, item: LogItem) -> LogItem:
        if self.redactor is None:
            return item
        attributes = self.redactor.attributes(item.attributes) or {}
        body = self.redactor.policy.text(item.body)
        if body == item.body and attributes is item.attributes:
            return item
        return item._replace(body=body, attributes=attributes)

    def _encode(self, items: Sequence[Any]) -> bytes:
        return encode_logs([self._redacted(item) for item in items], self.resource)

    def export(self, items: Sequence[Any]) -> SpanExportResult:
        if self.console:
            for item in items:
                print(self._redacted(item))
            return SpanExportResult.SUCCESS
        return self.wire.export(items)

    def shutdown(self) -> None:
        self.wire.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class LogExport:
    """The logs pipeline ``configure()`` starts when ``OTEL_LOGS_EXPORTER`` is not ``none``."""

    def __init__(self, settings: Settings, resource: Resource, exporter: SpanExporter | None = None) -> None:
        self.exporter = exporter or LogExporter(settings, resource)
        self.processor = BatchExportProcessor(
            self.exporter,
            max_queue_size=settings.blrp_max_queue_size,
            schedule_delay_millis=settings.blrp_schedule_delay_ms,
            max_export_batch_size=settings.blrp_max_export_batch_size,
        )

    def emit(self, record: logging.LogRecord) -> None:
        """Queue one record as it is logged; never raises into the program that logged it."""
        if record.name.startswith(_OWN_LOGGERS) or not is_instrumentation_enabled():
            return
        try:
            self.processor.offer(_item(record))
        except Exception:  # a record that can't be read (a broken __str__) is not worth a crash
            return

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.processor.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: int) -> None:
        """Send what is queued within ``timeout_millis``, then stop: a dead collector costs the
        queued records, not the program's exit."""
        self.processor.force_flush(timeout_millis)
        self.exporter.shutdown()
        self.processor.shutdown()


_active: LogExport | None = None
_wrapped = False


def set_active(export: LogExport | None) -> None:
    """Export every record the program logs through ``export`` (``None``: stop)."""
    global _active, _wrapped
    _active = export
    if export is not None and not _wrapped:
        wrap_function_wrapper(logging.Logger, "callHandlers", _exporting)
        _wrapped = True


def _exporting(wrapped: Any, instance: logging.Logger, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    export = _active
    if export is not None and args:
        export.emit(args[0])
    return wrapped(*args, **kwargs)

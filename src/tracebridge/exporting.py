"""Exporting that can't hurt the application: a dead collector costs dropped spans, not time.

The stock OTLP exporter retries a refused connection with backoff for up to its timeout, on
every batch, logging each attempt, and the SDK flushes at exit with a 30 s budget.  A service
whose collector is down would log a warning per batch and hang for seconds on exit.  Here the
first failure opens a circuit: batches are dropped and counted without touching the network
until a retry interval has passed, one warning names the endpoint, and shutdown is bounded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

logger = logging.getLogger("tracebridge.export")


class _CaptureReason(logging.Filter):
    """Keeps the inner exporter's first complaint as our reason, and keeps its per-attempt
    complaints out of the logs (our one warning replaces them)."""

    def __init__(self) -> None:
        super().__init__()
        self.first_message = ""

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.first_message:
            try:
                self.first_message = record.getMessage()[:300]
            except Exception:  # a broken log record must not break exporting
                self.first_message = str(record.msg)[:300]
        return False


class ResilientExporter(SpanExporter):
    """Wraps an exporter; drops and counts batches while its endpoint is failing."""

    def __init__(
        self,
        inner: SpanExporter,
        *,
        endpoint: str,
        retry_after_s: float = 5.0,
        inner_logger: str | None = None,
    ) -> None:
        self.inner = inner
        self.endpoint = endpoint
        self.retry_after_s = retry_after_s
        self.exported_spans = 0
        self.dropped_spans = 0
        self.failed_batches = 0
        self._retry_at = 0.0
        self._warned = False
        self._closed = False
        self._lock = threading.Lock()
        self._reason = _CaptureReason()
        self._inner_logger = logging.getLogger(inner_logger) if inner_logger else None
        if self._inner_logger is not None:
            self._inner_logger.addFilter(self._reason)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export, unless the endpoint failed within the last retry interval."""
        if self._closed or time.monotonic() < self._retry_at:
            self._drop(len(spans))
            return SpanExportResult.FAILURE
        try:
            result = self.inner.export(spans)
        except Exception as error:  # an exporter bug must not kill the export thread
            self._reason.first_message = self._reason.first_message or repr(error)[:300]
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            with self._lock:
                self.exported_spans += len(spans)
                if self._warned:
                    logger.warning(
                        "tracebridge: exporting to %s works again (%d spans were dropped)",
                        self.endpoint,
                        self.dropped_spans,
                    )
                    self._warned = False
                    self._reason.first_message = ""
            return result
        self._retry_at = time.monotonic() + self.retry_after_s
        with self._lock:
            self.failed_batches += 1
        self._drop(len(spans))
        return result

    def _drop(self, count: int) -> None:
        with self._lock:
            self.dropped_spans += count
            if self._warned:
                return
            self._warned = True
        logger.warning(
            "tracebridge: cannot export spans to %s (%s); the application is unaffected, spans are "
            "dropped and counted until the endpoint answers again (retried every %.0f s)",
            self.endpoint,
            self._reason.first_message or "export failed",
            self.retry_after_s,
        )

    def shutdown(self) -> None:
        """Stop exporting; aborts a retry the inner exporter may be sleeping in."""
        if self._closed:
            return
        self._closed = True
        # The filter stays: the export thread may still log its last retry after this.
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class CountingExporter(SpanExporter):
    """Discards spans after counting them: the ``none`` exporter, and benchmarks' sink."""

    def __init__(self) -> None:
        self.exported_spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported_spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

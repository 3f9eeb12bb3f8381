"""Exporting that can't hurt the application: a dead collector costs dropped spans, not time.

The stock OTLP exporter retries a refused connection with backoff for up to its timeout, on
every batch, logging each attempt, and the SDK flushes at exit with a 30 s budget.  A service
whose collector is down would log a warning per batch and hang for seconds on exit.  Here the
first failure opens a circuit: batches are dropped and counted without touching the network
until a retry interval has passed, one warning names the endpoint, and shutdown is bounded.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence

from opentelemetry.context import (
    _SUPPRESS_INSTRUMENTATION_KEY,
    Context,
    attach,
    detach,
    set_value,
)
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
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


class BatchExportProcessor(SpanProcessor):
    """Queues finished spans and exports them in batches from one background thread.

    What the SDK's BatchSpanProcessor does, minus what we measured going wrong with it under
    sustained load: its worker clears its wake-up flag *after* exporting, so a wake-up raised
    meanwhile is lost and the worker sleeps the whole schedule delay while the queue overflows
    and drops spans; and its ``force_flush`` ignores its timeout.  Here the flag is cleared
    before draining, every span refused by a full queue is counted in ``queue_dropped``, and
    ``force_flush`` returns when its timeout is up.  ``on_end`` is a length check and an
    append.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queue_size: int = 2048,
        schedule_delay_millis: float = 5000,
        max_export_batch_size: int = 512,
    ) -> None:
        self.exporter = exporter
        self.max_queue_size = max_queue_size
        self.max_export_batch_size = min(max_export_batch_size, max_queue_size)
        self.schedule_delay_s = schedule_delay_millis / 1000.0
        self.queue_dropped = 0
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._wake = threading.Event()
        self._flushes: list[threading.Event] = []
        self._flush_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._shutdown = False
        self._worker: threading.Thread | None = None
        self._ensure_worker()
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)

            def reset_in_child() -> None:
                processor = ref()
                if processor is not None:
                    processor._after_fork()

            os.register_at_fork(after_in_child=reset_in_child)

    def _ensure_worker(self) -> threading.Thread:
        worker = self._worker
        if worker is not None:
            return worker
        with self._start_lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="tracebridge-export", daemon=True)
                self._worker.start()
            return self._worker

    def _after_fork(self) -> None:
        # Runs in every forked child — also between fork and exec when subprocess has a
        # preexec_fn, where starting a thread can deadlock.  So only reset state here; the
        # worker starts with the first span the child actually ends.
        self._queue = collections.deque()
        self._wake = threading.Event()
        self._flushes = []
        self._flush_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._worker = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if self._shutdown or not span.context.trace_flags.sampled:
            return
        queue = self._queue
        if len(queue) >= self.max_queue_size:
            self.queue_dropped += 1
            return
        queue.append(span)
        if self._worker is None:
            self._ensure_worker()
        if len(queue) >= self.max_export_batch_size and not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.schedule_delay_s)
            # Cleared before draining: a wake-up raised while we export is kept, never lost.
            self._wake.clear()
            self._drain()
            with self._flush_lock:
                waiting, self._flushes = self._flushes, []
            for flushed in waiting:
                flushed.set()
            if self._shutdown:
                return

    def _drain(self) -> None:
        queue = self._queue
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            while queue:
                count = min(len(queue), self.max_export_batch_size)
                batch = [queue.popleft() for _ in range(count)]
                try:
                    self.exporter.export(batch)
                except Exception:  # an exporter bug must not kill the export thread
                    logger.exception("tracebridge: span exporter raised; batch dropped")
        finally:
            detach(token)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export everything queued so far; ``False`` if that took longer than the timeout."""
        if self._shutdown or not self._ensure_worker().is_alive():
            return False
        flushed = threading.Event()
        with self._flush_lock:
            self._flushes.append(flushed)
        self._wake.set()
        return flushed.wait(timeout_millis / 1000.0)

    def shutdown(self) -> None:
        """Export what is queued (bounded by the exporter), then stop the worker."""
        if self._shutdown:
            return
        self._shutdown = True
        self._wake.set()
        self._ensure_worker().join(timeout=self.schedule_delay_s + 1)
        self.exporter.shutdown()

"""Exporting that can't hurt the application: a dead collector costs memory, bounded, not time.

The stock OTLP exporter retries a refused connection with backoff for up to its timeout, on
every batch, logging each attempt, then drops the batch; the SDK flushes at exit with a 30 s
budget.  A service whose collector restarts would lose every span of the restart and hang on
exit.  Here the first failure opens a circuit: batches are *held* in a bounded buffer, without
touching the network, and retried every ``TRACEBRIDGE_EXPORTER_RETRY_AFTER`` — as the OTel
Collector's sending queue does — so an outage of ~30 s costs no span; past the bound, spans are
dropped and counted.  One warning names the endpoint, one says when it works again, and
shutdown is bounded.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.context import (
    _SUPPRESS_INSTRUMENTATION_KEY,
    attach,
    detach,
    set_value,
)
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import TraceFlags

from tracebridge.propagation.w3c import context_fields
from tracebridge.span_copy import PLAIN_SPAN_TYPES

_SAMPLED = int(TraceFlags.SAMPLED)
logger = logging.getLogger("tracebridge.export")


def call_in_forked_child(owner: object, method: str) -> None:
    """Have every forked child call ``owner.method()`` (while ``owner`` lives): threads and
    pipes are the parent's after a fork, and each of our exporters must let go of them."""
    if not hasattr(os, "register_at_fork"):
        return
    ref = weakref.ref(owner)

    def in_child() -> None:
        alive = ref()
        if alive is not None:
            getattr(alive, method)()

    os.register_at_fork(after_in_child=in_child)


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


class _Encoded:
    """A batch held as its encoded request (from an exporter with ``encode``/``send``, as
    :class:`tracebridge.otlp_wire.WireSpanExporter` has): ~0.4 KB a span instead of the span
    objects, so an outage's buffer holds eight times more in the same memory."""

    __slots__ = ("body", "count")

    def __init__(self, body: bytes, count: int) -> None:
        self.body = body
        self.count = count

    def __len__(self) -> int:
        return self.count


Batch = Sequence[ReadableSpan] | _Encoded


class ResilientExporter(SpanExporter):
    """Wraps an exporter; holds batches (bounded) while its endpoint is failing, retries them
    oldest first, and drops and counts what doesn't fit or can never be delivered.  An inner
    exporter that can encode a batch apart from sending it (``encode``, ``send``) has its
    batches encoded once and held as bytes; a batch that doesn't fit whole is then dropped
    whole."""

    def __init__(
        self,
        inner: SpanExporter,
        *,
        endpoint: str,
        retry_after_s: float = 1.0,
        max_held_spans: int = 65536,
        inner_logger: str | None = None,
        what: str = "spans",
    ) -> None:
        """``what`` names the items in the warnings (``log records`` for the logs pipeline,
        which holds and retries its batches the same way)."""
        self.inner = inner
        self.what = what
        self.endpoint = endpoint
        self.retry_after_s = retry_after_s
        self.max_held_spans = max_held_spans
        self.exported_spans = 0
        self.dropped_spans = 0
        self.delivered_late = 0  # spans held during an outage, delivered after it
        self.failed_batches = 0
        self.held_spans = 0
        self.peak_held_spans = 0
        self._held: collections.deque[Batch] = collections.deque()
        self._encode: Callable[[Sequence[ReadableSpan]], bytes] | None = getattr(inner, "encode", None)
        self._send_encoded: Callable[[bytes], SpanExportResult] | None = getattr(inner, "send", None)
        if self._send_encoded is None:
            self._encode = None
        self._retry_at = 0.0
        self._warned = False
        self._closed = False
        self._lock = threading.Lock()
        self._reason = _CaptureReason()
        self._inner_logger = logging.getLogger(inner_logger) if inner_logger else None
        if self._inner_logger is not None:
            self._inner_logger.addFilter(self._reason)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Send, or hold for a retry while the endpoint is failing (never blocks on it)."""
        if self._closed:
            self._drop(len(spans))
            return SpanExportResult.FAILURE
        batch = self._batch(spans)
        if not self._held and time.monotonic() >= self._retry_at:
            # The common case: nothing held, the endpoint answering.
            if self._send(batch):
                self._recovered()
                return SpanExportResult.SUCCESS
            return SpanExportResult.FAILURE
        self._hold(batch)
        return SpanExportResult.SUCCESS if self.retry_held() else SpanExportResult.FAILURE

    def retry_held(self) -> bool:
        """Deliver what is held, oldest first, if the retry interval has passed; ``True`` when
        nothing is held any more.  Called with every export, and by the processor when idle."""
        if not self._held:
            return True
        if self._closed or time.monotonic() < self._retry_at:
            return False
        while self._held:
            batch = self._held[0]
            delivered = self._send(batch, held=True)
            if delivered is None:  # refused for good: dropped and counted by _send
                continue
            if not delivered:
                return False
            self._held.popleft()
            with self._lock:
                self.held_spans -= len(batch)
                self.delivered_late += len(batch)
        self._recovered()
        return True

    def _batch(self, spans: Sequence[ReadableSpan]) -> Batch:
        if self._encode is None:
            return spans
        try:
            return _Encoded(self._encode(spans), len(spans))
        except Exception:  # an encoder bug: the inner exporter's own export says what failed
            return spans

    def _send(self, spans: Batch, held: bool = False) -> bool | None:
        """``True`` if delivered; ``False`` if worth retrying (held, unless it already is);
        ``None`` if refused for good (dropped and counted)."""
        try:
            if isinstance(spans, _Encoded):
                assert self._send_encoded is not None  # only made when the inner can send it
                result = self._send_encoded(spans.body)
            else:
                result = self.inner.export(spans)
        except Exception as error:  # an exporter bug must not kill the export thread
            self._reason.first_message = self._reason.first_message or repr(error)[:300]
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            with self._lock:
                self.exported_spans += len(spans)
            return True
        self._retry_at = time.monotonic() + self.retry_after_s
        with self._lock:
            self.failed_batches += 1
        self._warn()
        if not getattr(self.inner, "last_failure_retryable", True):
            # Refused for what it is (400, 413, 401 …): it would be refused again.
            if held:
                self._held.popleft()
                with self._lock:
                    self.held_spans -= len(spans)
            self._drop(len(spans))
            return None
        if not held:
            self._hold(spans)
        return False

    def _recovered(self) -> None:
        with self._lock:
            if not self._warned:
                return
            self._warned = False
            self._reason.first_message = ""
        logger.warning(
            "tracebridge: exporting to %s works again (%d %s held during the outage were "
            "delivered late; %d dropped in all)",
            self.endpoint,
            self.delivered_late,
            self.what,
            self.dropped_spans,
        )

    def _hold(self, spans: Batch) -> None:
        room = self.max_held_spans - self.held_spans
        if room <= 0 or (isinstance(spans, _Encoded) and len(spans) > room):
            self._drop(len(spans))
            return
        if len(spans) > room and not isinstance(spans, _Encoded):
            self._drop(len(spans) - room)
            spans = spans[:room]
        self._held.append(spans)
        with self._lock:
            self.held_spans += len(spans)
            self.peak_held_spans = max(self.peak_held_spans, self.held_spans)

    def _drop(self, count: int) -> None:
        with self._lock:
            self.dropped_spans += count
        self._warn()

    def _warn(self) -> None:
        with self._lock:
            if self._warned:
                return
            self._warned = True
        logger.warning(
            "tracebridge: cannot export %s to %s (%s); the application is unaffected: up to %d "
            "%s are held and retried every %.0f s, more are dropped and counted",
            self.what,
            self.endpoint,
            self._reason.first_message or "export failed",
            self.max_held_spans,
            self.what,
            self.retry_after_s,
        )

    def shutdown(self) -> None:
        """Stop exporting; what is still held is dropped and counted.  Aborts a retry the inner
        exporter may be sleeping in."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            held, self.held_spans = self.held_spans, 0
            self._held.clear()
        if held:
            self._drop(held)
        # The filter stays: the export thread may still log its last retry after this.
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Try to deliver what is held (if the retry interval has passed)."""
        return self.retry_held()


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
        # How long shutdown waits for the worker's last export; ``tracebridge.shutdown`` sets
        # what its flush left of TRACEBRIDGE_SHUTDOWN_TIMEOUT (a send stuck on a collector that
        # never answers is not interrupted, so waiting longer would break that promise).
        self.shutdown_wait_s = self.schedule_delay_s + 1
        self.queue_dropped = 0
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._wake = threading.Event()
        self._flushes: list[tuple[threading.Event, float]] = []  # (set when done, deadline)
        self._flush_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._shutdown = False
        self._worker: threading.Thread | None = None
        self._ensure_worker()
        call_in_forked_child(self, "_after_fork")

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

    # (on_start is the base class's no-op: light spans don't call a processor that keeps it.)

    def on_end(self, span: ReadableSpan) -> None:
        context = span._context if type(span) in PLAIN_SPAN_TYPES else span.get_span_context()
        if context is not None and context_fields(context)[3] & _SAMPLED:
            self.offer(span)

    def offer(self, item: Any) -> None:
        """Queue one item for export (a span, or a log record of the logs pipeline); a full
        queue drops it and counts the drop."""
        if self._shutdown:
            return
        queue = self._queue
        if len(queue) >= self.max_queue_size:
            self.queue_dropped += 1
            return
        queue.append(item)
        if self._worker is None:
            self._ensure_worker()
        if len(queue) >= self.max_export_batch_size and not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        prepare = getattr(self.exporter, "prepare", None)
        if prepare is not None:
            self._call_exporter(prepare, "starting")
        retry_held = getattr(self.exporter, "retry_held", None)
        retry_after_s = float(getattr(self.exporter, "retry_after_s", self.schedule_delay_s))
        due_at = time.monotonic() + self.schedule_delay_s
        while True:
            holding = retry_held is not None and bool(getattr(self.exporter, "held_spans", 0))
            timeout = max(0.0, due_at - time.monotonic())
            self._wake.wait(min(timeout, retry_after_s) if holding else timeout)
            # Cleared before draining: a wake-up raised while we export is kept, never lost.
            self._wake.clear()
            with self._flush_lock:
                flushing = bool(self._flushes)
            now = time.monotonic()
            due = flushing or self._shutdown or now >= due_at
            self._drain(everything=due)
            if due:
                due_at = now + self.schedule_delay_s
            if retry_held is not None and not self._queue:
                self._call_exporter(retry_held, "retrying held spans")  # also when idle
            if flushing:
                with self._flush_lock:
                    waiting, self._flushes = self._flushes, []
                # Done when the exporter has delivered what it was handed, too: for one that
                # hands batches on (the helper of tracebridge.export_process) that is later.
                latest = max(deadline for _, deadline in waiting)
                remaining_ms = max(0, int((latest - time.monotonic()) * 1000))
                self._call_exporter(functools.partial(self.exporter.force_flush, remaining_ms), "flushing")
                for flushed, _ in waiting:
                    flushed.set()
            if self._shutdown:
                return

    def _drain(self, everything: bool) -> None:
        """Export full batches; the partial one too when its time has come (the schedule, a
        flush, shutdown).  Woken by a full batch, the worker must not chase the few spans that
        arrive while it exports: each would be a request of its own — measured, 14 spans a
        request at 2 000 calls/s and ~70 µs of CPU a span instead of ~15."""
        queue = self._queue
        size = self.max_export_batch_size
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            # What is queued now is what "everything" means: spans still arriving wait for
            # the next full batch or the next schedule, as the first ones did.
            remainder = len(queue) if everything else 0
            while len(queue) >= size or remainder > 0:
                count = min(len(queue), size)
                remainder -= count
                batch = [queue.popleft() for _ in range(count)]
                try:
                    self.exporter.export(batch)
                except Exception:  # an exporter bug must not kill the export thread
                    logger.exception("tracebridge: span exporter raised; batch dropped")
        finally:
            detach(token)

    def _call_exporter(self, call: Callable[[], object], doing: str) -> None:
        """One call into the exporter from the worker, outside export: uninstrumented (its
        own HTTP must not be traced), and an exporter bug must not kill the export thread."""
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            call()
        except Exception:
            logger.exception("tracebridge: span exporter raised while %s", doing)
        finally:
            detach(token)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export everything queued so far; ``False`` if that took longer than the timeout."""
        if self._shutdown or not self._ensure_worker().is_alive():
            return False
        flushed = threading.Event()
        with self._flush_lock:
            self._flushes.append((flushed, time.monotonic() + timeout_millis / 1000.0))
        self._wake.set()
        return flushed.wait(timeout_millis / 1000.0)

    def shutdown(self) -> None:
        """Export what is queued (bounded by the exporter), then stop the worker."""
        if self._shutdown:
            return
        self._shutdown = True
        self._wake.set()
        self._ensure_worker().join(timeout=self.shutdown_wait_s)
        self.exporter.shutdown()

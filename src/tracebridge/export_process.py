"""Exporting from a helper process, off the application's GIL (``TRACEBRIDGE_EXPORT_PROCESS``).

Profiled under load, the export thread — redaction, OTLP encoding, the HTTP post — held the
GIL for about as long as the application made spans, and every microsecond of it was taken from
the application.  :class:`ProcessExporter` hands each batch, as compact frames
(:mod:`tracebridge.export_frames`), to ``python -m tracebridge.export_helper``, started on the
first batch, which runs the same pipeline there.  What the application keeps is reading each
span once and one ``marshal`` call a batch.

What it promises, as the in-process pipeline does: ``force_flush`` returns once the helper has
delivered (or held) everything handed over; the held/dropped counters are the helper's (they
come back with every answer); a forked child starts its own helper; and if the helper cannot
start or dies, the pipeline runs in the application again — with one warning, the spans in
flight to the dead helper counted as dropped.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import logging
import os
import pickle
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tracebridge.config import Settings
from tracebridge.export_frames import COUNTERS, FLUSH, HEADER, HELLO, REPLY, SPANS, SpanPacker
from tracebridge.export_helper import LOST, REPLY_BODY
from tracebridge.exporting import call_in_forked_child
from tracebridge.instrument.launcher import BOOTSTRAP_DIR

logger = logging.getLogger("tracebridge.export")
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
MAX_IN_FLIGHT = 64  # batches handed over but not yet answered; past it, wait for answers
PIPE_SIZE = 1 << 20  # Linux lets a pipe hold up to /proc/sys/fs/pipe-max-size (1 MiB)
_orphans: list[object] = []  # a forked child's copy of its parent's helper, never waited on


class HelperGone(Exception):
    """The helper process exited, closed its pipes, or never answered."""


def helper_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The helper's environment: the application's, minus our bootstrap (the helper must not be
    instrumented itself), with this copy of tracebridge first on the path."""
    env = dict(environ)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(BOOTSTRAP_DIR)]
    env["PYTHONPATH"] = os.pathsep.join([PACKAGE_ROOT, *parts])
    return env


def _enlarge(fd: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


class _Helper:
    """One running helper process and our ends of its two pipes (raw descriptors: a buffered
    writer could be caught mid-write by a fork and flush half a frame from the child)."""

    def __init__(self, settings: Settings) -> None:
        to_helper_read, self.to_helper = os.pipe()
        self.from_helper, from_helper_write = os.pipe()
        for fd in (self.to_helper, self.from_helper):
            _enlarge(fd)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tracebridge.export_helper"],
                stdin=to_helper_read,
                stdout=from_helper_write,
                env=helper_environment(os.environ),
                close_fds=True,
            )
        except BaseException:
            for fd in (self.to_helper, self.from_helper):
                os.close(fd)
            raise
        finally:
            os.close(to_helper_read)
            os.close(from_helper_write)
        os.set_blocking(self.from_helper, False)
        self.packer = SpanPacker()
        self.sent = 0  # frames written
        self.in_flight: collections.deque[tuple[int, int]] = collections.deque()  # (frame, spans)
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.lost = 0
        self._pending = b""
        # Not waited for: batches queue in the pipe while the helper starts (~0.3 s), and one
        # that cannot start shows as its pipe closing, handled as a helper that died.
        try:
            self.write(HELLO, pickle.dumps(settings), spans=0)
        except HelperGone:
            self.kill()
            raise

    def write(self, kind: bytes, body: bytes, spans: int) -> int:
        """Hand one frame over; returns its number (the helper answers each, in order)."""
        while len(self.in_flight) >= MAX_IN_FLIGHT:
            self._read(wait_s=1.0)
        data = memoryview(HEADER.pack(kind, len(body)) + body)
        try:
            while data:
                written = os.write(self.to_helper, data)
                data = data[written:]
        except OSError as error:  # BrokenPipeError: the helper has gone
            raise HelperGone(f"the export helper stopped reading ({error})") from error
        if kind != HELLO:  # the settings are frame 0; the helper numbers the rest from 1
            self.sent += 1
        number = self.sent
        self.in_flight.append((number, spans))
        self._read(wait_s=0.0)
        return number

    def wait_for(self, number: int, timeout_s: float) -> bool:
        """Wait until frame ``number`` is answered; ``False`` if it wasn't within the time."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight and self.in_flight[0][0] <= number:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._read(wait_s=remaining)
        return True

    def _read(self, wait_s: float) -> None:
        if wait_s > 0:
            ready, _, _ = select.select([self.from_helper], [], [], wait_s)
            if not ready:
                return
        try:
            chunk = os.read(self.from_helper, 65536)
        except BlockingIOError:
            return
        except OSError as error:
            raise HelperGone(f"cannot read the export helper's answers ({error})") from error
        if not chunk:
            raise HelperGone("the export helper exited")
        data = self._pending + chunk
        size = HEADER.size + REPLY_BODY.size
        while len(data) >= size:
            kind, _length = HEADER.unpack_from(data)
            if kind != REPLY:
                raise HelperGone(f"the export helper wrote something that is not an answer ({kind!r})")
            number, status, *counters = REPLY_BODY.unpack_from(data, HEADER.size)
            data = data[size:]
            self.counters = dict(zip(COUNTERS, counters, strict=True))
            while self.in_flight and self.in_flight[0][0] <= number:
                answered, spans = self.in_flight.popleft()
                if answered == number and status == LOST:
                    self.lost += spans
        self._pending = data

    def unanswered_spans(self) -> int:
        return sum(spans for _, spans in self.in_flight)

    def close(self, timeout_s: float) -> None:
        """End the helper's input and give it ``timeout_s`` to deliver and exit; its last
        answer, written as it exits, has the final counts."""
        with contextlib.suppress(OSError):
            os.close(self.to_helper)
        deadline = time.monotonic() + timeout_s
        with contextlib.suppress(HelperGone):  # "gone" is how this ends: its answers' end
            while time.monotonic() < deadline:
                self._read(wait_s=max(0.001, deadline - time.monotonic()))
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(OSError):
            os.close(self.from_helper)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()
        for fd in (self.to_helper, self.from_helper):
            with contextlib.suppress(OSError):
                os.close(fd)

    def forget_in_child(self) -> None:
        """In a forked child: this helper is the parent's; let go of our copies of its pipes
        (without that the parent's helper would not see its input end when the parent exits)."""
        for fd in (self.to_helper, self.from_helper):
            with contextlib.suppress(OSError):
                os.close(fd)
        _orphans.append(self.process)


class ProcessExporter(SpanExporter):
    """Exports through a helper process; falls back to ``inline()`` (the same pipeline, in this
    process) when the helper cannot start or dies."""

    def __init__(self, settings: Settings, inline: Callable[[], SpanExporter | None]) -> None:
        self.settings = settings
        self._make_inline = inline
        self._inline: SpanExporter | None = None
        self._helper: _Helper | None = None
        self._failed = False
        self._closed = False
        self._lock = threading.Lock()
        self._lost = 0  # spans handed to a helper that died before answering
        self._final: dict[str, int] = dict.fromkeys(COUNTERS, 0)  # of helpers that are gone
        call_in_forked_child(self, "_after_fork")

    def _after_fork(self) -> None:
        if self._helper is not None:
            self._helper.forget_in_child()
        self._helper = None
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Start the helper now (the batch processor calls this when its worker starts), so
        it is up by the time the first batch is full."""
        with self._lock:
            if not self._closed:
                self._running()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        with self._lock:
            helper = self._running()
            if helper is not None:
                try:
                    helper.write(SPANS, helper.packer.pack(spans), len(spans))
                    return SpanExportResult.SUCCESS
                except HelperGone as error:
                    self._gone(helper, error)
            inline = self._inline_exporter()
        return inline.export(spans) if inline is not None else SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until the helper has delivered (or held, on a failing collector) every batch
        handed over so far."""
        with self._lock:
            helper = self._helper
            if helper is not None:
                try:
                    number = helper.write(FLUSH, b"", 0)
                    return helper.wait_for(number, timeout_millis / 1000.0)
                except HelperGone as error:
                    self._gone(helper, error)
            inline = self._inline
        return inline.force_flush(timeout_millis) if inline is not None else True

    def shutdown(self, timeout_s: float | None = None) -> None:
        """End the helper's input and wait up to ``timeout_s`` (default ``shutdown_timeout_s``)
        for it to deliver what it has.  A helper still busy then — stuck on a collector that
        does not answer — goes on alone for at most that budget and exits."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            helper, self._helper = self._helper, None
            if helper is not None:
                helper.close(self.settings.shutdown_timeout_s if timeout_s is None else timeout_s)
                self._retire(helper)
            if self._inline is not None:
                self._inline.shutdown()

    def _running(self) -> _Helper | None:
        if self._helper is None and not self._failed:
            try:
                self._helper = _Helper(self.settings)
            except (HelperGone, OSError) as error:
                self._failed = True
                logger.warning(
                    "tracebridge: cannot start the export helper process (%s); exporting from the "
                    "application's own export thread instead",
                    error,
                )
        return self._helper

    def _gone(self, helper: _Helper, error: HelperGone) -> None:
        lost = helper.unanswered_spans()
        helper.kill()
        self._retire(helper)
        self._lost += lost
        self._helper = None
        self._failed = True
        logger.warning(
            "tracebridge: %s; exporting from the application's own export thread from now on "
            "(%d spans handed to it were lost)",
            error,
            lost,
        )

    def _retire(self, helper: _Helper) -> None:
        for name in COUNTERS:
            if name != "held_spans":
                self._final[name] += helper.counters[name]
        self._lost += helper.lost

    def _inline_exporter(self) -> SpanExporter | None:
        if self._inline is None:
            self._inline = self._make_inline()
        return self._inline

    def _refresh(self) -> None:
        """Take in the answers that came since (the helper reports retries it made while the
        application was idle); skipped while the export thread is using the pipes."""
        helper = self._helper
        if helper is None or not self._lock.acquire(blocking=False):
            return
        try:
            helper._read(wait_s=0.0)
        except HelperGone:
            pass  # the next export notices, and says so
        finally:
            self._lock.release()

    def _count(self, name: str) -> int:
        self._refresh()
        helper = self._helper
        total = self._final[name] + (helper.counters[name] if helper is not None else 0)
        return total + int(getattr(self._inline, name, 0) or 0)

    @property
    def helper_pid(self) -> int | None:
        """The running helper's process id (``None`` before the first batch, or inline)."""
        helper = self._helper
        return helper.process.pid if helper is not None else None

    @property
    def exported_spans(self) -> int:
        return self._count("exported_spans")

    @property
    def dropped_spans(self) -> int:
        total = self._count("dropped_spans")  # refreshes: read the helper after it
        helper = self._helper
        return total + self._lost + (helper.lost if helper is not None else 0)

    @property
    def delivered_late(self) -> int:
        return self._count("delivered_late")

    @property
    def held_spans(self) -> int:
        return self._count("held_spans")  # what a gone helper held is not retired (_retire)

    @property
    def peak_held_spans(self) -> int:
        return self._count("peak_held_spans")


__all__ = ["HelperGone", "ProcessExporter", "helper_environment"]

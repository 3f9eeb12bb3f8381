"""``python -m tracebridge.export_helper``: one application's export pipeline, in its own process.

Started by :class:`tracebridge.export_process.ProcessExporter`, fed frames of compact spans on
stdin (:mod:`tracebridge.export_frames`), answering on stdout.  It runs exactly the pipeline the
application would have run in its export thread — redaction, the held-and-retried batches of
:class:`~tracebridge.exporting.ResilientExporter`, our OTLP encoder — built from the
application's own Settings, sent as the first frame.  Its warnings go to the application's
stderr, which it shares.

It ignores SIGINT and SIGTERM: they are meant for the application (a Ctrl-C or a
``systemctl stop`` reaches the whole process group), whose shutdown then closes the pipe; the
helper delivers what it has and exits at that end of its input, within the application's
shutdown budget — so spans the application handed over survive even the application being
killed outright.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import signal
import struct
import sys
import threading
from typing import Any

from tracebridge.export_frames import (
    COUNTERS,
    FLUSH,
    HELLO,
    REPLY,
    SPANS,
    FrameError,
    SpanUnpacker,
    read_frame,
    write_frame,
)

REPLY_BODY = struct.Struct(f"!IB{len(COUNTERS)}Q")
DELIVERED_OR_HELD, LOST = 0, 1  # a REPLY's status: the pipeline has the batch / it could not be read
logger = logging.getLogger("tracebridge.export")


def reply(stream: Any, sequence: int, status: int, pipeline: Any) -> None:
    counters = (int(getattr(pipeline, name, 0) or 0) for name in COUNTERS)
    try:
        write_frame(stream, REPLY, REPLY_BODY.pack(sequence, status, *counters))
    except OSError:
        # The application stopped listening: it spent its shutdown budget and exited while we
        # were still sending.  The frames it handed over are ours to deliver, within the same
        # budget; its answers go nowhere from now on (and nothing fails flushing them at exit).
        with contextlib.suppress(OSError):
            nowhere = os.open(os.devnull, os.O_WRONLY)
            os.dup2(nowhere, stream.fileno())
            os.close(nowhere)


def _read_into(stream: Any, frames: queue.Queue[tuple[bytes, bytes] | None], budget_s: float) -> None:
    """Reads frames as they come, so the end of the input is seen even while an export hangs
    on a collector that does not answer: from then on the helper has the application's
    shutdown budget to deliver, and exits when it is spent."""
    try:
        while (frame := read_frame(stream)) is not None:
            frames.put(frame)
    except (FrameError, OSError) as error:
        logger.warning("tracebridge: export helper: %s; delivering what it has and stopping", error)
    deadline = threading.Timer(budget_s, os._exit, args=(0,))
    deadline.daemon = True
    deadline.start()
    frames.put(None)


def main() -> int:
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.SIG_IGN)
    source, answers = sys.stdin.buffer, sys.stdout.buffer
    first = read_frame(source)
    if first is None or first[0] != HELLO:
        print("tracebridge export helper: expected the settings first; exiting", file=sys.stderr)
        return 2
    settings = pickle.loads(first[1])  # our own parent's Settings, over our own pipe

    from tracebridge.sdk import export_pipeline

    pipeline = export_pipeline(settings)
    if pipeline is None:
        return 0
    reply(answers, 0, DELIVERED_OR_HELD, pipeline)
    frames: queue.Queue[tuple[bytes, bytes] | None] = queue.Queue()
    threading.Thread(
        target=_read_into, args=(source, frames, settings.shutdown_timeout_s), name="frames", daemon=True
    ).start()
    unpacker = SpanUnpacker()
    retry_held = getattr(pipeline, "retry_held", None)
    sequence = 0
    while True:
        holding = bool(getattr(pipeline, "held_spans", 0))
        try:
            frame = frames.get(timeout=settings.exporter_retry_after_s if holding else None)
        except queue.Empty:  # idle with spans held through an outage: retry them
            if retry_held is not None:
                retry_held()
                reply(answers, sequence, DELIVERED_OR_HELD, pipeline)  # the counters moved
            continue
        if frame is None:
            break
        kind, body = frame
        sequence += 1
        if kind == SPANS:
            try:
                spans = unpacker.unpack(body)
            except Exception as error:  # a bug of ours; the application counts the batch lost
                logger.warning("tracebridge: export helper could not read a batch: %r", error)
                reply(answers, sequence, LOST, pipeline)
                continue
            pipeline.export(spans)
        elif kind == FLUSH:
            pipeline.force_flush()
        reply(answers, sequence, DELIVERED_OR_HELD, pipeline)
    # The application has gone, or is shutting down: deliver what is held, within the budget
    # it has for that (the reader's timer ends us when it is spent); what is still held then
    # is dropped, and the last answer counts it.
    pipeline.force_flush()
    pipeline.shutdown()
    reply(answers, sequence, DELIVERED_OR_HELD, pipeline)
    return 0


if __name__ == "__main__":
    sys.exit(main())

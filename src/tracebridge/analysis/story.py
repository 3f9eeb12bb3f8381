"""An order's story: its trace plus every trace joined to it by a consumer's link.

A consumer that starts a new trace per record and only *links* to the producer (.NET's
Confluent.Kafka instrumentation, kafkajs ``eachBatch``, the Java agent in batch listeners, Go's
kotel with links, ``TRACEBRIDGE_CONSUMER_PARENT=link``) is still the order's next hop.  Jaeger
and Tempo can't follow such a link backwards; with a source that can answer "who links to this
trace" we can, both ways:

- backwards from the trace asked about: the traces its consumer spans link to (what caused it),
  and theirs, recursively;
- forwards from every trace in the story: traces whose consumer spans link into it.

Bounded (``limit`` traces), because one batch can link a thousand records' producers.
"""

from __future__ import annotations

from typing import Protocol

from tracebridge.analysis import messaging
from tracebridge.analysis.model import SpanRecord, Trace

MAX_TRACES = 50


class LinkedSource(Protocol):
    """What following links needs from a source (every :class:`~.sources.Source` has it)."""

    def trace(self, trace_id: str) -> Trace: ...

    def linked_to(self, trace_id: str) -> list[SpanRecord]:
        """Spans of other traces with a link into ``trace_id``."""
        ...


def story(source: LinkedSource, trace_id: str, limit: int = MAX_TRACES) -> Trace:
    """The trace ``trace_id`` and the traces linked to it by consumer links, as one
    :class:`Trace` (link-only consumers hang under their producers); :attr:`Trace.truncated`
    says how many linked traces were left out at ``limit``."""
    from tracebridge.analysis.sources import TraceNotFound

    first = source.trace(trace_id)
    traces: dict[str, list[SpanRecord]] = {trace_id.lower(): first.spans}
    left_out: set[str] = set()
    missing: set[str] = set()  # linked traces the source doesn't have (not ours to count)

    def add(linked_id: str) -> bool:
        if linked_id in traces or linked_id in left_out or linked_id in missing:
            return False
        if len(traces) >= limit:
            left_out.add(linked_id)
            return False
        try:
            traces[linked_id] = source.trace(linked_id).spans
        except TraceNotFound:
            missing.add(linked_id)
            return False
        return True

    backward = [trace_id.lower()]
    while backward:
        for span in traces[backward.pop()]:
            if messaging.is_consumer(span):
                for link in span.links:
                    if add(link.trace_id):
                        backward.append(link.trace_id)
    forward = list(traces)
    while forward:
        for span in source.linked_to(forward.pop(0)):
            if messaging.is_consumer(span) and add(span.trace_id):
                forward.append(span.trace_id)
    if len(traces) == 1:
        return first
    joined = Trace(span for spans in traces.values() for span in spans)
    joined.truncated = len(left_out)
    return joined

"""The critical path of a trace through sync *and* async edges, cut into costed segments.

Jaeger's critical path prunes producer→consumer branches (a consumer ends after its producer,
so it "can't" be on the path) and so loses exactly the hop users ask about.  Here a span's
*reach* is the end of its whole subtree, async descendants included, and the walk follows the
child that reaches furthest.  Every nanosecond from the first start to the last end lands in
exactly one segment: processing in a service, network between two services, publishing to a
topic, or waiting in a topic.
"""

from __future__ import annotations

from dataclasses import dataclass

from tracebridge.analysis import messaging
from tracebridge.analysis.model import SpanRecord, Trace

PROCESSING = "processing"
NETWORK = "network"
PUBLISH = "publish"
QUEUE_WAIT = "queue wait"


@dataclass(frozen=True)
class Segment:
    """A stretch of the critical path and what it was spent on."""

    category: str  # processing | network | publish | queue wait
    service: str  # who spent it; for queue wait, the consumer that waited
    span_id: str
    start_ns: int
    end_ns: int
    topic: str | None = None
    peer: str | None = None  # network: the service called

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)


def reaches(trace: Trace) -> dict[str, int]:
    """For every span, the end of its subtree (async descendants included)."""
    reach: dict[str, int] = {}
    # Children start no earlier than parents in practice, but order by depth to be safe.
    order: list[SpanRecord] = []
    stack = list(trace.roots)
    while stack:
        span = stack.pop()
        order.append(span)
        stack.extend(trace.children.get(span.span_id, []))
    for span in reversed(order):
        reach[span.span_id] = max(
            [span.end_ns, *(reach[child.span_id] for child in trace.children.get(span.span_id, []))]
        )
    return reach


@dataclass(frozen=True)
class CriticalPath:
    """The segments, in time order, and every span the path runs through (a span can be on
    the path with no time of its own: a send whose publish overlapped the queue wait)."""

    segments: tuple[Segment, ...]
    span_ids: frozenset[str]


def critical_path(trace: Trace) -> CriticalPath:
    """The path from the trace's first start to its last end."""
    if not trace.spans:
        return CriticalPath((), frozenset())
    reach = reaches(trace)
    # An order's story starts in the trace that began first (the order's own); a batch's poll
    # trace joined to it by links may reach later (other orders' records) but is not the start.
    first = trace.spans[0].trace_id
    roots = [root for root in trace.roots if root.trace_id == first] or trace.roots
    root = max(roots, key=lambda span: reach[span.span_id])
    segments: list[Segment] = []
    # An explicit stack, not recursion: a long chain of hops must not hit the recursion limit.
    work = [(root, reach[root.span_id])]
    on_path: set[str] = set()
    while work:
        span, limit = work.pop()
        on_path.add(span.span_id)
        _explain(trace, reach, span, limit, segments, work)
    segments.sort(key=lambda segment: (segment.start_ns, segment.end_ns))
    return CriticalPath(tuple(s for s in segments if s.duration_ns > 0), frozenset(on_path))


def _explain(
    trace: Trace,
    reach: dict[str, int],
    span: SpanRecord,
    limit: int,
    out: list[Segment],
    work: list[tuple[SpanRecord, int]],
) -> None:
    """Explain [span.start, limit] with segments of the span's own time; the children's parts
    of it go onto ``work`` to be explained the same way."""
    cursor = limit
    children = sorted(trace.children.get(span.span_id, []), key=lambda c: reach[c.span_id], reverse=True)
    for child in children:
        if cursor <= span.start_ns:
            break
        if child.start_ns >= cursor:
            continue
        child_end = min(reach[child.span_id], cursor)
        if child_end < cursor:
            out.extend(_own_time(trace, span, child_end, cursor, None))
        work.append((child, child_end))
        next_cursor = max(span.start_ns, child.start_ns)
        if next_cursor < cursor:
            # the span's own time before this child, up to where the child began
            cursor = next_cursor
            before = _previous_end(children, reach, child, span, cursor)
            if before < cursor:
                out.extend(_own_time(trace, span, before, cursor, child))
                cursor = before
    if cursor > span.start_ns:
        out.extend(_own_time(trace, span, span.start_ns, cursor, None))


def _previous_end(
    children: list[SpanRecord], reach: dict[str, int], current: SpanRecord, span: SpanRecord, cursor: int
) -> int:
    """Where the own-time gap before ``current`` starts: the latest (clamped) end of another
    child that started before ``cursor`` — that child is explained next — else the span's start."""
    best = span.start_ns
    for other in children:
        if other is not current and other.start_ns < cursor:
            best = max(best, min(reach[other.span_id], cursor))
    return best


def _own_time(
    trace: Trace, span: SpanRecord, start: int, end: int, next_child: SpanRecord | None
) -> list[Segment]:
    """A span's own time, categorised by what the span is and what it leads to."""
    if end <= start:
        return []
    span_role = messaging.role(span)
    if span.kind == "CLIENT" and span_role is None:
        callee = next_child or next(iter(trace.children.get(span.span_id, [])), None)
        peer = callee.service if callee is not None else None
        return [Segment(NETWORK, span.service, span.span_id, start, end, peer=peer)]
    if span_role == messaging.SEND:
        topic = messaging.topic(span)
        if next_child is not None and messaging.is_consumer(next_child):
            published = min(end, max(start, span.end_ns))
            wait_start = published
            measured = messaging.measured_queue_wait_ns(next_child)
            if measured is not None:
                # The consumer measured the wait against the record timestamp (≈ send start);
                # trust it over cross-host span timestamps, within this stretch.
                wait_start = max(start, end - measured)
                published = wait_start
            return [
                Segment(PUBLISH, span.service, span.span_id, start, published, topic=topic),
                Segment(QUEUE_WAIT, next_child.service, next_child.span_id, wait_start, end, topic=topic),
            ]
        return [Segment(PUBLISH, span.service, span.span_id, start, end, topic=topic)]
    return [Segment(PROCESSING, span.service, span.span_id, start, end)]

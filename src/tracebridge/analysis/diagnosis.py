"""The answer to "this order was slow or failed — which hop, and why?" for one trace."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tracebridge.analysis import messaging
from tracebridge.analysis.causes import Cause, Nearby, failure_cause, verdict_cause
from tracebridge.analysis.critical_path import (
    NETWORK,
    PROCESSING,
    PUBLISH,
    QUEUE_WAIT,
    Segment,
    critical_path,
)
from tracebridge.analysis.model import SpanRecord, Trace, error_type
from tracebridge.analysis.pending import NO_CONTEXT, PROCESSED, UNKNOWN, WAITING, Delivery


def format_duration(ns: int | float) -> str:
    """Human durations: 2.1 s, 350 ms, 12.3 ms, 45 µs."""
    if ns >= 1e9:
        return f"{ns / 1e9:.1f} s"
    if ns >= 100e6:
        return f"{ns / 1e6:.0f} ms"
    if ns >= 1e6:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e3:.0f} µs"


@dataclass(frozen=True)
class Hop:
    """One send→process edge: how long publishing, waiting in the topic and processing took."""

    topic: str
    producer: str
    consumer: str
    send_span_id: str
    process_span_id: str
    publish_ns: int
    queue_wait_ns: int
    processing_ns: int
    clock_skew: bool
    attempt: int
    failed: bool
    linked: bool = False  # joined to its producer by a link only (a new trace per record, a batch)


@dataclass(frozen=True)
class Failure:
    """A span that ended in error, with the exception it recorded."""

    service: str
    span_name: str
    span_id: str
    error_type: str
    message: str


@dataclass(frozen=True)
class Retry:
    """A record delivered more than once to the same consumer group."""

    topic: str
    partition: str
    offset: int
    group: str
    service: str
    deliveries: int


@dataclass(frozen=True)
class DeadLetter:
    """A record routed to a dead-letter topic."""

    topic: str
    service: str
    span_id: str


@dataclass(frozen=True)
class Verdict:
    """The costliest part of the critical path."""

    category: str
    service: str
    duration_ns: int
    share: float
    topic: str | None = None
    peer: str | None = None
    span_name: str | None = None
    cause: Cause | None = None  # why the longest segment of the group cost what it did

    @property
    def where(self) -> str:
        if self.category == QUEUE_WAIT:
            return f"queue wait on `{self.topic}` before {self.service}"
        if self.category == PUBLISH:
            return f"publishing to `{self.topic}` from {self.service}"
        if self.category == NETWORK:
            return f"network from {self.service} to {self.peer or 'its peer'}"
        return f"processing in {self.service}" + (f" ({self.span_name})" if self.span_name else "")


@dataclass(frozen=True)
class Diagnosis:
    """Everything `tracebridge diagnose` says about a trace."""

    trace_id: str
    start_ns: int
    end_ns: int
    span_count: int
    services: tuple[str, ...]
    segments: tuple[Segment, ...]
    verdict: Verdict | None
    hops: tuple[Hop, ...]
    failures: tuple[Failure, ...]
    retries: tuple[Retry, ...]
    dead_letters: tuple[DeadLetter, ...]
    broken_hops: int
    critical_span_ids: frozenset[str] = field(default_factory=frozenset)
    linked_trace_ids: tuple[str, ...] = ()  # the story's other traces, joined by links
    failure_cause: Cause | None = None  # a failure at its source, through the hops it crossed
    # Each record the trace sent, for each consumer group expected to process it, and where it
    # stands (processed, waiting at the broker, passed without context, unknown).
    deliveries: tuple[Delivery, ...] = ()

    @property
    def end_to_end_ns(self) -> int:
        return self.end_ns - self.start_ns

    def to_json(self) -> dict[str, Any]:
        """What ``tracebridge diagnose --json`` prints and the collector's API returns."""
        data = asdict(self)
        data["critical_span_ids"] = sorted(self.critical_span_ids)
        data["end_to_end_ns"] = self.end_to_end_ns
        data["headline"] = self.headline
        data["verdict_where"] = self.verdict.where if self.verdict is not None else None
        data["cause"] = data["verdict"]["cause"] if self.verdict is not None else None
        data["deliveries"] = [{**asdict(delivery), "text": delivery.text} for delivery in self.deliveries]
        encoded: dict[str, Any] = json.loads(json.dumps(data, default=str))
        return encoded

    @property
    def headline(self) -> str:
        """An order in flight says where it waits first; a record a group passed without
        context says so next (the rest of the story is missing); otherwise the verdict."""
        labels = ((WAITING, "in flight: "), (NO_CONTEXT, "broken chain: "), (UNKNOWN, ""))
        for state, label in labels:
            matching = [delivery for delivery in self.deliveries if delivery.state == state]
            if matching:
                first = matching[0]
                done = [
                    f"`{delivery.group}`"
                    for delivery in self.deliveries
                    if delivery.send_span_id == first.send_span_id and delivery.state == PROCESSED
                ]
                already = f"; already processed by {', '.join(done)}" if done else ""
                more = f" (+{len(matching) - 1} more)" if len(matching) > 1 else ""
                return f"{label}{first.text}{already}{more}"
        if self.verdict is None:
            return f"{format_duration(self.end_to_end_ns)} end to end"
        headline = f"{self.verdict.share:.0%} of {format_duration(self.end_to_end_ns)}: {self.verdict.where}"
        return f"{headline} — {self.verdict.cause.text}" if self.verdict.cause is not None else headline


def producer_of(trace: Trace, span: SpanRecord) -> SpanRecord | None:
    """The send span a consumer span's record came from: the send it hangs under (its parent,
    or the send it links to), else any linked send."""
    parent = trace.parent(span)
    if parent is not None and messaging.is_send(parent):
        return parent
    for link in span.links:
        target = trace.by_id.get(link.span_id)
        if target is not None and messaging.is_send(target):
            return target
    return None


def hops(trace: Trace) -> list[Hop]:
    """Every send→consumer edge with publish time, queue wait and processing time.

    A record's hop ends at the span that processed it; a poll/receive span is the hop only for
    a record no process span handled.  Queue wait is what the consumer measured
    (``tracebridge.queue_wait_ms``, the Java agent's ``kafka.record.queue_time_ms``), else the
    gap between the spans; a negative gap is clock skew, reported as such and counted as 0.
    """
    found = []
    joined: dict[str, list[tuple[SpanRecord, SpanRecord]]] = {messaging.PROCESS: [], messaging.RECEIVE: []}
    for span in trace.spans:
        role = messaging.role(span)
        if role != messaging.PROCESS and role != messaging.RECEIVE:
            continue
        send = producer_of(trace, span)
        if send is not None:
            joined[role].append((span, send))
    processed = {send.span_id for _span, send in joined[messaging.PROCESS]}
    pairs = joined[messaging.PROCESS] + [
        (span, send) for span, send in joined[messaging.RECEIVE] if send.span_id not in processed
    ]
    for span, send in pairs:
        measured = messaging.measured_queue_wait_ns(span)
        skew = span.attributes.get("tracebridge.clock_skew") is True
        if measured is not None:
            wait = measured
        else:
            wait = span.start_ns - send.end_ns
            if wait < 0:
                skew, wait = True, 0
        found.append(
            Hop(
                topic=messaging.topic(span) or messaging.topic(send) or "?",
                producer=send.service,
                consumer=span.service,
                send_span_id=send.span_id,
                process_span_id=span.span_id,
                publish_ns=send.duration_ns,
                queue_wait_ns=max(0, wait),
                processing_ns=span.duration_ns,
                clock_skew=skew,
                attempt=messaging.attempt(span),
                failed=span.status == "ERROR",
                linked=span.parent_span_id != send.span_id,
            )
        )
    return sorted(found, key=lambda hop: trace.by_id[hop.process_span_id].start_ns)


def failures(trace: Trace) -> list[Failure]:
    out = []
    for span in trace.spans:
        if span.status != "ERROR":
            continue
        exception = next((event for event in span.events if event.name == "exception"), None)
        message = str(
            (exception.attributes.get("exception.message") if exception else None) or span.status_message
        )
        out.append(Failure(span.service, span.name, span.span_id, error_type(span) or "error", message))
    return out


def retries(trace: Trace) -> list[Retry]:
    """Records delivered more than once: by the attempt the instrumentation counted, or — for
    a redelivery after a consumer process died — by two process spans of one offset."""
    deliveries: dict[tuple[str, str, int, str], list[SpanRecord]] = defaultdict(list)
    for span in trace.spans:
        if messaging.role(span) != messaging.PROCESS:
            continue
        offset = messaging.offset(span)
        if offset is None:
            continue
        key = (
            messaging.topic(span) or "?",
            messaging.partition(span) or "?",
            offset,
            messaging.group(span) or span.service,
        )
        deliveries[key].append(span)
    out = []
    for (topic, partition, offset, group), spans in deliveries.items():
        counted = max(messaging.attempt(s) for s in spans)
        count = max(len(spans), counted)
        if count > 1:
            out.append(Retry(topic, partition, offset, group, spans[-1].service, count))
    return out


def dead_letters(trace: Trace) -> list[DeadLetter]:
    return [
        DeadLetter(topic, span.service, span.span_id)
        for span in trace.spans
        if messaging.is_dead_letter(span) and (topic := messaging.topic(span))
    ]


def verdict(
    segments: list[Segment], trace: Trace, end_to_end_ns: int, nearby: Nearby | None = None
) -> Verdict | None:
    """The (category, service, topic/peer) group of segments that cost the most, and why
    (:mod:`tracebridge.analysis.causes`; ``nearby`` gives other traces' spans of a window)."""
    if not segments or end_to_end_ns <= 0:
        return None
    totals: dict[tuple[str, str, str | None, str | None], int] = defaultdict(int)
    longest: dict[tuple[str, str, str | None, str | None], Segment] = {}
    for segment in segments:
        key = (
            segment.category,
            segment.service,
            segment.topic,
            segment.peer if segment.category == NETWORK else None,
        )
        totals[key] += segment.duration_ns
        if key not in longest or segment.duration_ns > longest[key].duration_ns:
            longest[key] = segment
    key = max(totals, key=lambda k: totals[k])
    category, service, topic, peer = key
    span = trace.by_id.get(longest[key].span_id)
    return Verdict(
        category=category,
        service=service,
        duration_ns=totals[key],
        share=totals[key] / end_to_end_ns,
        topic=topic,
        peer=peer,
        span_name=span.name if span is not None and category == PROCESSING else None,
        cause=verdict_cause(trace, longest[key], end_to_end_ns, nearby),
    )


def diagnose(trace: Trace, nearby: Nearby | None = None, deliveries: Sequence[Delivery] = ()) -> Diagnosis:
    """The verdict for one trace (or an order's story): critical path, hop breakdown, failures,
    retries, DLQ, and the causes.  ``nearby(start_ns, end_ns, service)`` — the spans of any
    trace in a window, which a source can give — lets a queue wait's cause be told (a backlog, idling).
    ``deliveries`` (:func:`tracebridge.analysis.pending.for_trace`) says where each of its
    records stands with each consumer group that should process it."""
    if not trace.spans:
        raise ValueError("an empty trace has no diagnosis")
    start = min(span.start_ns for span in trace.spans)
    end = max(span.end_ns for span in trace.spans)
    path = critical_path(trace)
    segments = list(path.segments)
    return Diagnosis(
        trace_id=trace.spans[0].trace_id,
        start_ns=start,
        end_ns=end,
        span_count=len(trace.spans),
        services=tuple(sorted({span.service for span in trace.spans})),
        segments=tuple(segments),
        verdict=verdict(segments, trace, end - start, nearby),
        hops=tuple(hops(trace)),
        failures=tuple(failures(trace)),
        retries=tuple(retries(trace)),
        dead_letters=tuple(dead_letters(trace)),
        broken_hops=sum(1 for s in trace.spans if messaging.context_broken(s)),
        critical_span_ids=path.span_ids,
        linked_trace_ids=tuple(sorted(trace.trace_ids - {trace.spans[0].trace_id})),
        failure_cause=failure_cause(trace),
        deliveries=tuple(deliveries),
    )

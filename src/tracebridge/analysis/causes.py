"""Why the verdict's segment cost what it did: the cause, not the symptom.

The critical path says *where* the time went (a queue wait before inventory-worker); a person
asks *why*: the worker needs 700 ms a record and eight records were ahead (a backlog), or it was
retrying a record its dependency kept refusing, or nothing consumed at all (stopped, paused,
restarted, not yet started), or one synchronous call took most of the request, or the network
to a peer did.  Each answer comes from spans: the trace's own (earlier attempts of the same
record, the calls under a span) and, for a queue wait, the consumer's spans from other traces
during the wait — ``nearby(start_ns, end_ns, service)`` gives those (any source can; without it a
backlog can't be told from idling, and the cause says so).

A failed order has a second cause: the exception at its source (the deepest failed span),
through the hops the failure crossed, to where it ended (a dead letter, or the request).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from tracebridge.analysis import messaging
from tracebridge.analysis.critical_path import NETWORK, PROCESSING, PUBLISH, QUEUE_WAIT, Segment
from tracebridge.analysis.model import SpanRecord, Trace, error_type, http_status_code

BACKLOG = "backlog"
RETRIES = "retries"
IDLE = "no consumer activity"
SLOW_CALL = "slow call"
SLOW_NETWORK = "slow network"
SLOW_PROCESSING = "slow processing"
SLOW_PUBLISH = "slow publish"
FAILURE = "failure"

BUSY_FOR_BACKLOG = 0.5  # the consumer was handling other records for at least this share of the wait
LOOK_BACK_NS = 600 * 10**9  # how far before a wait an idle consumer's last activity is looked for

Nearby = Callable[[int, int, str | None], Sequence[SpanRecord]]  # (start, end, service or all)


def _duration(ns: float) -> str:
    from tracebridge.analysis.diagnosis import format_duration

    return format_duration(ns)


@dataclass(frozen=True)
class Cause:
    """One sentence a person would say, and the facts behind it."""

    kind: str
    service: str
    text: str
    facts: dict[str, Any] = field(default_factory=dict)


def _instance(span: SpanRecord) -> tuple[Any, ...]:
    """Which process wrote a span: ``service.instance.id``, else host and pid."""
    resource = span.resource
    if "service.instance.id" in resource:
        return (resource["service.instance.id"],)
    return (resource.get("host.name"), resource.get("process.pid"))


def _callee(trace: Trace, client: SpanRecord) -> SpanRecord | None:
    """The server span answering a client span (its child in another service)."""
    return next((c for c in trace.children.get(client.span_id, []) if c.service != client.service), None)


def _error_of(span: SpanRecord) -> str:
    return error_type(span) or span.status_message or "an error"


def _descendants(trace: Trace, span: SpanRecord) -> list[SpanRecord]:
    out, stack = [], list(trace.children.get(span.span_id, []))
    while stack:
        child = stack.pop()
        out.append(child)
        stack.extend(trace.children.get(child.span_id, []))
    return out


def _why_attempt_failed(trace: Trace, attempt: SpanRecord) -> tuple[str, str]:
    """(who, what) for a failed attempt: the dependency that answered an error, else the
    exception the handler raised."""
    for child in sorted(_descendants(trace, attempt), key=lambda s: s.start_ns):
        if child.kind == "CLIENT" and (child.status == "ERROR" or (http_status_code(child) or 0) >= 500):
            server = _callee(trace, child)
            who = (
                server.service
                if server is not None
                else str(child.attributes.get("server.address") or "its peer")
            )
            code = http_status_code(server or child)
            return who, f"answered {code}" if code else f"failed ({_error_of(server or child)})"
    return attempt.service, f"raised {_error_of(attempt)}"


def _same_record(trace: Trace, consumer: SpanRecord) -> list[SpanRecord]:
    """Every delivery of ``consumer``'s record to its group, in start order (itself included)."""
    send = trace.parent(consumer)
    topic, partition, offset, group = (
        messaging.topic(consumer),
        messaging.partition(consumer),
        messaging.offset(consumer),
        messaging.group(consumer) or consumer.service,
    )
    found = []
    for span in trace.spans:
        if messaging.role(span) != messaging.PROCESS or span.service != consumer.service:
            continue
        if offset is not None and messaging.offset(span) == offset:
            same = (
                messaging.topic(span) == topic
                and messaging.partition(span) == partition
                and (messaging.group(span) or span.service) == group
            )
        else:
            same = send is not None and trace.parent(span) is send
        if same:
            found.append(span)
    return sorted(found, key=lambda s: s.start_ns)


def _retries(trace: Trace, consumer: SpanRecord) -> Cause | None:
    attempts = [s for s in _same_record(trace, consumer) if s.start_ns <= consumer.start_ns]
    if len(attempts) < 2:
        return None
    failed = [a for a in attempts if a.status == "ERROR"]
    backoff = sum(max(0, b.start_ns - a.end_ns) for a, b in pairwise(attempts))
    reasons: dict[tuple[str, str], int] = {}
    for attempt in failed:
        key = _why_attempt_failed(trace, attempt)
        reasons[key] = reasons.get(key, 0) + 1
    (who, what), _count = max(reasons.items(), key=lambda item: item[1]) if reasons else (("", ""), 0)
    because = (
        f"{who} {what} on {len(failed)} of {len(attempts)} attempts"
        if failed
        else f"{len(attempts)} attempts"
    )
    return Cause(
        RETRIES,
        consumer.service,
        f"retries at {consumer.service}: {because}, {_duration(backoff)} of backoff",
        {
            "attempts": len(attempts),
            "failed": len(failed),
            "backoff_ns": backoff,
            "dependency": who if who and who != consumer.service else None,
        },
    )


def _busy_share(spans: Sequence[SpanRecord], start: int, end: int) -> float:
    covered, cursor = 0, start
    for span in sorted(spans, key=lambda s: s.start_ns):
        begin, finish = max(cursor, span.start_ns, start), min(span.end_ns, end)
        if finish > begin:
            covered += finish - begin
            cursor = finish
    return covered / max(1, end - start)


def _queue_wait(trace: Trace, segment: Segment, nearby: Nearby | None) -> Cause | None:
    consumer = trace.by_id.get(segment.span_id)
    if consumer is None:
        return None
    own = _retries(trace, consumer)
    if own is not None:
        return own
    service, topic = consumer.service, segment.topic
    if nearby is None:
        return None
    mine = {span.span_id for span in trace.spans}
    around = [
        span
        for span in nearby(segment.start_ns - LOOK_BACK_NS, segment.end_ns, service)
        if span.service == service and span.span_id not in mine and messaging.role(span) == messaging.PROCESS
    ]
    during = [s for s in around if s.end_ns > segment.start_ns and s.start_ns < segment.end_ns]
    wait = segment.duration_ns
    busy = _busy_share(during, segment.start_ns, segment.end_ns)
    gap_start, gap_end = _longest_gap(during, segment.start_ns, segment.end_ns)
    if busy < BUSY_FOR_BACKLOG and gap_end - gap_start >= wait / 2:
        # Nothing consumed for most of the wait: say for how long, and what the process did.
        before = [s for s in around if s.end_ns <= gap_start]
        after = [s for s in [*during, consumer] if s.start_ns >= gap_end]
        resumed = min(after, key=lambda s: s.start_ns) if after else consumer
        if not before:
            state = "not yet started: no record processed before this one"
        elif _instance(max(before, key=lambda s: s.end_ns)) != _instance(resumed):
            state = "restarted: a new process took over"
        else:
            state = "stopped, paused or rebalancing: the same process resumed"
        idle = gap_end - gap_start
        share = "" if idle >= wait * 0.95 else f" of the {_duration(wait)} wait"
        return Cause(
            IDLE,
            service,
            f"no consumer activity at {service} for {_duration(idle)}{share} on `{topic}` ({state})",
            {"state": state.partition(":")[0], "idle_ns": idle, "wait_ns": wait},
        )
    per_record = sum(s.duration_ns for s in during) / len(during)
    failed = [s for s in during if s.status == "ERROR"]
    if failed and len(failed) * 3 >= len(during):
        # what those attempts called is among the nearby spans too: the dependency that refused
        context = Trace(nearby(segment.start_ns, segment.end_ns, None))
        reasons: dict[tuple[str, str], int] = {}
        for attempt in failed:
            key = _why_attempt_failed(context, context.by_id.get(attempt.span_id, attempt))
            reasons[key] = reasons.get(key, 0) + 1
        ranked = sorted(reasons, key=lambda key: -reasons[key])
        said = ", ".join(f"{who} {what} on {reasons[(who, what)]}" for who, what in ranked[:2])
        dependency = next((who for who, _what in ranked if who != service), None)
        return Cause(
            RETRIES,
            service,
            f"retries at {service}: earlier records failed on {len(failed)} of {len(during)} attempts "
            f"while this one waited ({said})",
            {
                "attempts": len(during),
                "failed": len(failed),
                "busy_share": round(busy, 2),
                "dependency": dependency,
            },
        )
    if busy >= BUSY_FOR_BACKLOG:
        return Cause(
            BACKLOG,
            service,
            f"backlog at {service}: {_duration(per_record)} per record, {len(during)} records ahead",
            {"records_ahead": len(during), "per_record_ns": int(per_record), "busy_share": round(busy, 2)},
        )
    return Cause(
        BACKLOG,
        service,
        f"slow pickup at {service}: busy {busy:.0%} of the wait with {len(during)} other records",
        {"records_ahead": len(during), "per_record_ns": int(per_record), "busy_share": round(busy, 2)},
    )


def _longest_gap(spans: Sequence[SpanRecord], start: int, end: int) -> tuple[int, int]:
    """The longest stretch of [start, end] that none of ``spans`` covers."""
    best, cursor = (start, start), start
    for span in sorted(spans, key=lambda s: s.start_ns):
        if span.start_ns > cursor and min(span.start_ns, end) - cursor > best[1] - best[0]:
            best = (cursor, min(span.start_ns, end))
        cursor = max(cursor, span.end_ns)
    if end > cursor and end - cursor > best[1] - best[0]:
        best = (cursor, end)
    return best


def _processing(trace: Trace, segment: Segment, end_to_end_ns: int) -> Cause | None:
    span = trace.by_id.get(segment.span_id)
    if span is None:
        return None
    own_share = segment.duration_ns / max(1, span.duration_ns)
    caller = trace.parent(span)
    if (
        span.kind == "SERVER"
        and caller is not None
        and caller.kind == "CLIENT"
        and caller.service != span.service
    ):
        # the caller's own request (its server or consumer span), not a resolver in between
        origin = trace.parent(caller)
        while origin is not None and origin.kind not in ("SERVER", "CONSUMER"):
            above = trace.parent(origin)
            if above is None or above.service != caller.service:
                break
            origin = above
        whole = origin.duration_ns if origin is not None else caller.duration_ns
        return Cause(
            SLOW_CALL,
            span.service,
            f"slow call: {caller.service} → {span.service} {span.name} took {_duration(span.duration_ns)}, "
            f"{span.duration_ns / max(1, whole):.0%} of {caller.service}'s "
            f"{origin.name if origin is not None else 'request'}",
            {"caller": caller.service, "callee": span.service, "call_ns": span.duration_ns},
        )
    role = messaging.role(span)
    what = f"{_duration(span.duration_ns)} per record" if role is not None else _duration(span.duration_ns)
    return Cause(
        SLOW_PROCESSING,
        span.service,
        f"slow processing in {span.service}: {span.name} took {what}, {own_share:.0%} of it in its own code",
        {"span_ns": span.duration_ns, "own_share": round(own_share, 2)},
    )


def _network(trace: Trace, segment: Segment) -> Cause | None:
    client = trace.by_id.get(segment.span_id)
    if client is None:
        return None
    server = _callee(trace, client)
    peer = segment.peer or (server.service if server is not None else None)
    if server is None:
        return Cause(
            SLOW_NETWORK,
            client.service,
            f"slow call from {client.service} to an untraced peer: {_duration(client.duration_ns)} in "
            f"{client.name} with no server span to explain it",
            {"call_ns": client.duration_ns, "peer": peer},
        )
    outside = max(0, client.duration_ns - server.duration_ns)
    return Cause(
        SLOW_NETWORK,
        client.service,
        f"slow network from {client.service} to {server.service}: {_duration(outside)} of the "
        f"{_duration(client.duration_ns)} call outside {server.service}'s {_duration(server.duration_ns)}",
        {"call_ns": client.duration_ns, "server_ns": server.duration_ns, "peer": server.service},
    )


def verdict_cause(
    trace: Trace, segment: Segment | None, end_to_end_ns: int, nearby: Nearby | None = None
) -> Cause | None:
    """The cause of the verdict's segment (the longest of its group)."""
    if segment is None:
        return None
    if segment.category == QUEUE_WAIT:
        return _queue_wait(trace, segment, nearby)
    if segment.category == PROCESSING:
        return _processing(trace, segment, end_to_end_ns)
    if segment.category == NETWORK:
        return _network(trace, segment)
    if segment.category == PUBLISH:
        return Cause(
            SLOW_PUBLISH,
            segment.service,
            f"slow publish from {segment.service} to `{segment.topic}`: "
            f"{_duration(segment.duration_ns)} until the broker acknowledged",
            {"publish_ns": segment.duration_ns},
        )
    return None


def failure_cause(trace: Trace) -> Cause | None:
    """The failure at its source — the earliest failed span with no failed span under it —
    and the hops it crossed on the way up (failed ancestors, topics) to where it ended."""
    failed = [span for span in trace.spans if span.status == "ERROR"]
    if not failed:
        return None
    failed_ids = {span.span_id for span in failed}
    sources = [
        span
        for span in failed
        if not any(child.span_id in failed_ids for child in trace.children.get(span.span_id, []))
    ]
    source = min(sources, key=lambda s: (s.start_ns, s.span_id))
    # Up from the source: the failed spans the error crossed, one per service — the highest of
    # each (a consumer's process span rather than the client call under it).
    chain: list[SpanRecord] = []
    step = trace.parent(source)
    while step is not None:
        if step.span_id in failed_ids and step.service != source.service:
            if chain and chain[-1].service == step.service:
                chain[-1] = step
            elif all(seen.service != step.service for seen in chain):
                chain.append(step)
        step = trace.parent(step)
    steps = [f"{source.service} ({source.name}: {_error_of(source)})"]
    for hop in chain:
        topic = messaging.topic(hop) if messaging.is_consumer(hop) else None
        steps.append(f"{hop.service} ({hop.name}{f' from `{topic}`' if topic else ''}: {_error_of(hop)})")
    crossed = [hop.service for hop in chain]
    dead = [s for s in trace.spans if messaging.is_dead_letter(s)]
    ending = f" → dead-lettered to `{messaging.topic(dead[-1])}` by {dead[-1].service}" if dead else ""
    return Cause(
        FAILURE,
        source.service,
        "failed at " + " → ".join(steps) + ending,
        {"source_span_id": source.span_id, "crossed": crossed, "dead_lettered": bool(dead)},
    )

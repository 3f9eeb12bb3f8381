"""Doctor: where trace context breaks, across many traces, grouped so it can be fixed.

A consumer that found no context can't say who sent the record — but the data often can, and
the doctor names the producer with how sure it is: *certain* when a send span on the topic has
the record's partition and offset; *likely* when one has its key; *possible* when no send was
traced but a service handled the same key (an order id) just before — the usual shape of a
producer whose client nobody instrumented, or that sends without context.

Three symptoms: a process span that found no context in its record
(``tracebridge.context.source=none``, grouped by *why* — ``tracebridge.context.problem``:
a missing context, a duplicated or invalid ``traceparent``, an unparsable envelope); a
consumer span that is a trace root with no link (an uninstrumented or differently
instrumented consumer); and a send whose record nobody processed
within the window (a consumer that lost it, or never ran).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from tracebridge.analysis import messaging
from tracebridge.analysis.model import SpanRecord, Trace
from tracebridge.analysis.pending import ExpectedGroup, Offsets, deliveries, expected_groups

NO_CONTEXT = "record carried no trace context"
CONSUMER_ROOT = "consumer span starts its own trace"
NEVER_PROCESSED = "sent but never processed"


@dataclass(frozen=True)
class BrokenChain:
    """One group of the same break: what, where, how often, and a trace to look at."""

    symptom: str
    topic: str
    producer: str
    consumer: str
    count: int
    example_trace_id: str
    reason: str = ""  # for NO_CONTEXT: the consumer's tracebridge.context.problem
    producer_confidence: str = ""  # certain | likely | possible, when the producer was named
    producer_evidence: str = ""  # why we think so, in words


CERTAIN, LIKELY, POSSIBLE = "certain", "likely", "possible"
_SLACK_NS = 5_000_000  # clocks of one host; a record's timestamp is taken just before the send span ends
_RANK = {CERTAIN: 0, LIKELY: 1, POSSIBLE: 2}


@dataclass(frozen=True)
class _Suspect:
    service: str
    confidence: str
    send_span: tuple[str, str] | None  # (trace, span) of the matched send, if one was traced
    gap_ns: int


def _business_keys(span: SpanRecord) -> set[str]:
    """The record key and the order id a span carries: what joins an orphan to its producer."""
    keys = {messaging.key(span), span.attributes.get("order.id")}
    return {key for key in keys if isinstance(key, str) and key}


class _Producers:
    """Who sent an orphan consumer's record, from the sends and the keys in the window."""

    def __init__(self, spans: list[SpanRecord]) -> None:
        self.by_offset: dict[tuple[str, str | None, int], SpanRecord] = {}
        self.sends_by_key: dict[tuple[str, str], list[SpanRecord]] = defaultdict(list)
        self.handled_by_key: dict[str, list[SpanRecord]] = defaultdict(list)
        for span in spans:
            if messaging.is_send(span):
                topic = messaging.topic(span) or "?"
                offset = messaging.offset(span)
                if offset is not None:
                    self.by_offset[(topic, messaging.partition(span), offset)] = span
                if (record_key := messaging.key(span)) is not None:
                    self.sends_by_key[(topic, record_key)].append(span)
            elif messaging.role(span) == messaging.PROCESS and not messaging.context_broken(span):
                for business_key in _business_keys(span):
                    self.handled_by_key[business_key].append(span)

    def suspect(self, orphan: SpanRecord) -> _Suspect | None:
        topic = messaging.topic(orphan) or "?"
        offset = messaging.offset(orphan)
        if offset is not None:
            send = self.by_offset.get((topic, messaging.partition(orphan), offset))
            if send is not None:
                return _Suspect(
                    send.service, CERTAIN, (send.trace_id, send.span_id), orphan.start_ns - send.end_ns
                )
        record_key = messaging.key(orphan)
        if record_key is not None:
            earlier = [
                s for s in self.sends_by_key.get((topic, record_key), []) if s.start_ns <= orphan.start_ns
            ]
            if earlier:
                send = max(earlier, key=lambda s: s.end_ns)
                return _Suspect(
                    send.service, LIKELY, (send.trace_id, send.span_id), orphan.start_ns - send.end_ns
                )
        # No traced send: who was handling the same key when the record was written (the
        # consumer's start less the queue wait it measured)?  Not another consumer of the topic.
        waited = messaging.measured_queue_wait_ns(orphan) or 0
        written = orphan.start_ns - waited
        handled = [
            span
            for business_key in _business_keys(orphan)
            for span in self.handled_by_key.get(business_key, [])
            if span.service != orphan.service
            and span.start_ns <= written + _SLACK_NS
            and messaging.topic(span) != topic
        ]
        if not handled:
            return None

        def fit(span: SpanRecord) -> tuple[bool, bool, int]:
            # A handler sends its output near its end and then finishes: prefer a span that
            # succeeded, that was running when the record was written, and that ended soonest
            # after — not, say, another consumer's retries of the same order around that time.
            running = span.end_ns + _SLACK_NS >= written
            return (span.status == "ERROR", not running, abs(span.end_ns - written))

        chosen = min(handled, key=fit)
        return _Suspect(chosen.service, POSSIBLE, None, orphan.start_ns - min(chosen.end_ns, orphan.start_ns))


def _evidence(suspects: list[_Suspect], total: int) -> tuple[str, str]:
    """The group's confidence (its weakest record's) and the evidence in words."""
    if not suspects:
        return "", ""
    confidence = max((s.confidence for s in suspects), key=lambda c: _RANK[c])
    gaps = sorted(max(0, s.gap_ns) for s in suspects)
    low, high = f"{gaps[0] / 1e6:.0f}", f"{gaps[-1] / 1e6:.0f}"
    span = f"{low} ms" if low == high else f"{low} to {high} ms"
    what = {
        CERTAIN: "a traced send had the record's partition and offset",
        LIKELY: "a traced send to the topic had the record's key",
        POSSIBLE: (
            "it was handling the record's key when the record was written, "
            "and no send to the topic was traced"
        ),
    }[confidence]
    return confidence, f"{len(suspects)} of {total} records: {what} ({span} before)"


def _expected_consumers(
    send: SpanRecord, expected: dict[str, list[ExpectedGroup]], offsets: Offsets | None
) -> tuple[str, str]:
    """(consumer, why) for a record nobody processed: the services of the groups that should
    have, and where each stands on this record (asked of the broker when there is one)."""
    topic = messaging.topic(send) or "?"
    consumer = ", ".join(sorted({service for group in expected[topic] for service in group.services}))
    found = deliveries(Trace([send]), expected, offsets)
    if offsets is None or not found:
        names = ", ".join(f"`{group.group}`" for group in expected[topic])
        if len(expected[topic]) > 1:
            return consumer, f"groups {names} have not processed it"
        return consumer, f"group {names} has not processed it"
    return consumer, "; ".join(delivery.text for delivery in found)


def doctor(
    spans: list[SpanRecord], now_ns: int, unprocessed_after_s: float = 60.0, offsets: Offsets | None = None
) -> list[BrokenChain]:
    """Broken chains among ``spans``, most frequent first.

    A record sent but never processed names the consumer groups ``spans`` show processing its
    topic, and — with ``offsets``, the broker — where each of them stands on the example record
    (:mod:`tracebridge.analysis.pending`): waiting N records behind, or past it without context.
    """
    consumed: set[tuple[str, str]] = set()
    groups: dict[tuple[str, str, str, str, str], list[str]] = defaultdict(list)
    evidence: dict[tuple[str, str, str, str, str], list[_Suspect]] = defaultdict(list)
    producers = _Producers(spans)
    for span in spans:
        role = messaging.role(span)
        if role != messaging.PROCESS and role != messaging.RECEIVE:
            continue
        if span.parent_span_id:
            consumed.add((span.trace_id, span.parent_span_id))
        for link in span.links:
            consumed.add((link.trace_id, link.span_id))
        consumer_topic = messaging.topic(span) or "?"
        if messaging.context_broken(span):
            reason = str(span.attributes.get("tracebridge.context.problem") or "missing")
            symptom = NO_CONTEXT
        elif role == messaging.PROCESS and span.parent_span_id is None and not span.links:
            # A link-only consumer (a new trace per record, a batch) is a hop, not a break;
            # a poll/receive root is the batch its process spans hang under.
            reason, symptom = "", CONSUMER_ROOT
        else:
            continue
        suspect = producers.suspect(span)
        if suspect is not None and suspect.send_span is not None:
            consumed.add(suspect.send_span)  # it was processed: the context was lost, not the record
        group = (symptom, reason, consumer_topic, suspect.service if suspect else "?", span.service)
        groups[group].append(span.trace_id)
        if suspect is not None:
            evidence[group].append(suspect)
    cutoff = now_ns - int(unprocessed_after_s * 1e9)
    unprocessed: dict[tuple[str, str], SpanRecord] = {}  # the latest such send, per (topic, producer)
    for span in spans:
        topic = messaging.topic(span)
        if not messaging.is_send(span) or topic is None or messaging.is_dead_letter(span):
            continue
        if span.status == "ERROR" or span.end_ns > cutoff:
            continue  # never reached the broker, or too recent to judge
        if (span.trace_id, span.span_id) not in consumed:
            groups[(NEVER_PROCESSED, "", topic, span.service, "?")].append(span.trace_id)
            unprocessed[(topic, span.service)] = span
    expected = expected_groups(spans) if unprocessed else {}
    report = []
    for group, traces in groups.items():
        symptom, reason, topic, producer, consumer = group
        confidence, words = _evidence(evidence.get(group, []), len(traces))
        if symptom == NEVER_PROCESSED and expected.get(topic):
            consumer, reason = _expected_consumers(unprocessed[(topic, producer)], expected, offsets)
        report.append(
            BrokenChain(
                symptom, topic, producer, consumer, len(traces), traces[-1], reason, confidence, words
            )
        )
    return sorted(report, key=lambda chain: (-chain.count, chain.symptom, chain.reason, chain.topic))

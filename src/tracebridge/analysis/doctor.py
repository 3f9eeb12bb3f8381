"""Doctor: where trace context breaks, across many traces, grouped so it can be fixed.

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
from tracebridge.analysis.diagnosis import DEAD_LETTER_SUFFIXES
from tracebridge.analysis.model import SpanRecord

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


def doctor(spans: list[SpanRecord], now_ns: int, unprocessed_after_s: float = 60.0) -> list[BrokenChain]:
    """Broken chains among ``spans``, most frequent first."""
    consumed: set[tuple[str, str]] = set()
    groups: dict[tuple[str, str, str, str, str], list[str]] = defaultdict(list)
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
            groups[(NO_CONTEXT, reason, consumer_topic, "?", span.service)].append(span.trace_id)
        elif role == messaging.PROCESS and span.parent_span_id is None and not span.links:
            # A link-only consumer (a new trace per record, a batch) is a hop, not a break;
            # a poll/receive root is the batch its process spans hang under.
            groups[(CONSUMER_ROOT, "", consumer_topic, "?", span.service)].append(span.trace_id)
    cutoff = now_ns - int(unprocessed_after_s * 1e9)
    for span in spans:
        topic = messaging.topic(span)
        if not messaging.is_send(span) or topic is None or topic.endswith(DEAD_LETTER_SUFFIXES):
            continue
        if span.status == "ERROR" or span.end_ns > cutoff:
            continue  # never reached the broker, or too recent to judge
        if (span.trace_id, span.span_id) not in consumed:
            groups[(NEVER_PROCESSED, "", topic, span.service, "?")].append(span.trace_id)
    report = [
        BrokenChain(symptom, topic, producer, consumer, len(traces), traces[-1], reason)
        for (symptom, reason, topic, producer, consumer), traces in groups.items()
    ]
    return sorted(report, key=lambda chain: (-chain.count, chain.symptom, chain.reason, chain.topic))

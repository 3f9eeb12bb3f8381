"""An order in flight: which records its trace sent an expected consumer group has not processed.

A trace that stops at a ``send`` span looks finished everywhere — Jaeger, Tempo, the Java agent
all show a short, healthy trace.  Two things together say what is really going on:

- **who should pick the record up**: every consumer group recent traces show processing the
  topic (a ``process``/``receive`` span naming ``messaging.consumer.group.name``), with the
  services it runs in;
- **how far each of them has got**: the broker's committed offset of the group on the record's
  partition (has it passed the record?) and the partition's end offset (how far behind is it).

So each sent record gets, for each expected group, one of: *processed* (the trace holds that
group's process span), *waiting* (the group has not reached it: how many records are ahead of
it, the group's lag, how long the oldest unprocessed record has waited), *processed without
trace context* (the group's committed offset is past the record, yet no span of it continues
the trace — a broken chain, named), or *unknown* (the broker could not be asked; why).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from tracebridge.analysis import messaging
from tracebridge.analysis.model import SpanRecord, Trace
from tracebridge.analysis.sources import Source, SourceUnavailable

PROCESSED = "processed"
WAITING = "waiting"
NO_CONTEXT = "processed without trace context"
UNKNOWN = "unknown"


class OffsetsUnavailable(RuntimeError):
    """The broker could not answer (unreachable, timed out, refused)."""


class Offsets(Protocol):
    """What the broker knows about a topic's partitions and a group's progress on them."""

    def committed(self, group: str, topic: str, partitions: Sequence[int]) -> dict[int, int | None]:
        """The group's committed offset (the next record it will process) per partition;
        ``None`` where it has committed none."""
        ...

    def end_offsets(self, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        """The offset the next record written to each partition will get."""
        ...

    def timestamp_ms(self, topic: str, partition: int, offset: int) -> int | None:
        """When the record at ``offset`` was written (``None``: not there, or no timestamp)."""
        ...


@dataclass(frozen=True)
class ExpectedGroup:
    """A consumer group recent traces show processing a topic, and where it runs."""

    topic: str
    group: str
    services: tuple[str, ...]


@dataclass(frozen=True)
class Delivery:
    """One sent record and one group that should process it."""

    topic: str
    partition: int
    offset: int
    group: str
    services: tuple[str, ...]
    state: str
    send_span_id: str
    ahead: int | None = None  # records before this one the group has still to process
    lag: int | None = None  # the group's lag on the partition: end offset - committed
    oldest_wait_s: float | None = None  # how long the group's next record has waited
    reason: str = ""  # why the state is unknown

    @property
    def text(self) -> str:
        who = f"group `{self.group}` ({', '.join(self.services)})"
        where = f"`{self.topic}` partition {self.partition}"
        if self.state == PROCESSED:
            return f"processed by {who}"
        if self.state == NO_CONTEXT:
            return (
                f"processed by {who} without trace context: its committed offset on {where} is past "
                f"offset {self.offset}, but no span of it continues this trace"
            )
        if self.state == WAITING:
            parts = []
            if self.lag is not None:
                parts.append(f"{self.lag:,} record{'s' if self.lag != 1 else ''} behind")
            if self.ahead:
                parts.append(f"{self.ahead:,} ahead of this one")
            if self.oldest_wait_s is not None:
                parts.append(f"oldest unprocessed {_seconds(self.oldest_wait_s)}")
            detail = f": {', '.join(parts)}" if parts else ""
            return f"waiting in {where} (offset {self.offset}) for {who}{detail}"
        return f"not processed by {who} in this trace; where it stands on {where} is unknown: {self.reason}"


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def expected_groups(spans: Iterable[SpanRecord]) -> dict[str, list[ExpectedGroup]]:
    """Per topic, the consumer groups seen processing it in ``spans`` (recent traces)."""
    seen: dict[tuple[str, str], set[str]] = {}
    for span in spans:
        if not messaging.is_consumer(span):
            continue
        topic = messaging.topic(span)
        group = messaging.group(span)
        if topic and group:
            seen.setdefault((topic, group), set()).add(span.service)
    found: dict[str, list[ExpectedGroup]] = {}
    for (topic, group), services in sorted(seen.items()):
        found.setdefault(topic, []).append(ExpectedGroup(topic, group, tuple(sorted(services))))
    return found


def _sent_records(trace: Trace) -> list[tuple[SpanRecord, str, int, int]]:
    """(send span, topic, partition, offset) of every acknowledged send in the trace."""
    sent = []
    for span in trace.spans:
        if not messaging.is_send(span):
            continue
        topic = messaging.topic(span)
        partition = messaging.partition(span)
        offset = messaging.offset(span)
        if topic and partition is not None and partition.isdigit() and offset is not None:
            sent.append((span, topic, int(partition), offset))
    return sent


class _ConsumerSpans:
    """A trace's consumer spans (those naming a group), indexed once: by the record they
    processed and by span id — so finding who processed each sent record is two look-ups,
    not a pass over the whole trace per record (quadratic in a trace of many sends)."""

    def __init__(self, trace: Trace) -> None:
        self.children = trace.children
        self.by_record: dict[tuple[str | None, str | None, int | None], set[str]] = {}
        self.by_span: dict[str, tuple[str | None, str]] = {}
        for span in trace.spans:
            if not messaging.is_consumer(span):
                continue
            group = messaging.group(span)
            if group is None:
                continue
            topic = messaging.topic(span)
            record = (topic, messaging.partition(span), messaging.offset(span))
            self.by_record.setdefault(record, set()).add(group)
            self.by_span[span.span_id] = (topic, group)

    def groups_that_processed(self, send: SpanRecord, topic: str, partition: int, offset: int) -> set[str]:
        """The groups whose consumer span for this record is in the trace (child of the send,
        or the same topic, partition and offset)."""
        groups = set(self.by_record.get((topic, str(partition), offset), ()))
        for child in self.children.get(send.span_id, []):
            found = self.by_span.get(child.span_id)
            if found is not None and found[0] == topic:
                groups.add(found[1])
        return groups


def deliveries(
    trace: Trace,
    expected: Mapping[str, Sequence[ExpectedGroup]],
    offsets: Offsets | None,
    now_s: float | None = None,
) -> list[Delivery]:
    """Every (sent record, expected group) of ``trace``, with where it stands.

    Without ``offsets`` (no broker to ask) a record no span shows processed is *unknown*.
    Broker errors never raise: they become *unknown*, with the broker's reason.
    """
    now_s = time.time() if now_s is None else now_s
    found: list[Delivery] = []
    committed_cache: dict[tuple[str, str, int], int | OffsetsUnavailable | None] = {}
    end_cache: dict[tuple[str, int], int | None] = {}
    consumers = _ConsumerSpans(trace)
    for send, topic, partition, offset in _sent_records(trace):
        processed = consumers.groups_that_processed(send, topic, partition, offset)
        for group in expected.get(topic, ()):
            template = Delivery(topic, partition, offset, group.group, group.services, UNKNOWN, send.span_id)
            if group.group in processed:
                found.append(replace(template, state=PROCESSED))
                continue
            if offsets is None:
                found.append(replace(template, reason="no broker to ask (--kafka)"))
                continue
            key = (group.group, topic, partition)
            if key not in committed_cache:
                try:
                    committed_cache[key] = offsets.committed(group.group, topic, [partition]).get(partition)
                except OffsetsUnavailable as error:
                    committed_cache[key] = error
            committed = committed_cache[key]
            if isinstance(committed, OffsetsUnavailable):
                found.append(replace(template, reason=str(committed)))
                continue
            if committed is not None and committed > offset:
                found.append(replace(template, state=NO_CONTEXT))
                continue
            if (topic, partition) not in end_cache:
                try:
                    end_cache[(topic, partition)] = offsets.end_offsets(topic, [partition]).get(partition)
                except OffsetsUnavailable:
                    end_cache[(topic, partition)] = None
            end = end_cache[(topic, partition)]
            # The oldest record the group has not processed: the one at its committed offset
            # (this record itself when the group has committed nothing on the partition).
            try:
                written_ms = offsets.timestamp_ms(
                    topic, partition, offset if committed is None else committed
                )
            except OffsetsUnavailable:
                written_ms = None
            found.append(
                replace(
                    template,
                    state=WAITING,
                    ahead=None if committed is None else offset - committed,
                    lag=None if committed is None or end is None else end - committed,
                    oldest_wait_s=None if written_ms is None else max(0.0, now_s - written_ms / 1000),
                )
            )
    return found


# How far back recent traces are read to learn which groups consume which topic.
GROUPS_SEEN_S = 3600.0


class GroupsSeen:
    """The expected groups of a source's recent traces, re-read at most every ``ttl_s`` (the
    collector answers every diagnosis request from it; a CLI run reads it once)."""

    def __init__(self, source: Source, since_s: float = GROUPS_SEEN_S, ttl_s: float = 30.0) -> None:
        self.source = source
        self.since_s = since_s
        self.ttl_s = ttl_s
        self._read_at = float("-inf")
        self._spans: list[SpanRecord] = []

    def expected(self, trace: Trace) -> dict[str, list[ExpectedGroup]]:
        """Groups seen in the recent traces and in ``trace`` itself."""
        now = time.monotonic()
        if now - self._read_at > self.ttl_s:
            try:
                # A bounded read (the store's limit): groups recur, a sample finds them.
                now_ns = time.time_ns()
                self._spans = self.source.spans_between(now_ns - int(self.since_s * 1e9), now_ns)
            except SourceUnavailable:
                self._spans = []
            self._read_at = now
        return expected_groups([*self._spans, *trace.spans])


def for_trace(trace: Trace, groups: GroupsSeen, offsets: Offsets | None) -> list[Delivery]:
    """:func:`deliveries` of ``trace`` for the groups ``groups`` has seen."""
    return deliveries(trace, groups.expected(trace), offsets)

"""The span model of DESIGN §3, built once for every broker adapter.

An adapter only knows where its client library keeps topic, partition, offset, key, headers
and timestamp; everything a span *is* — name, kind, parent, links, attributes, queue wait,
delivery attempt, context source — is decided here.  These functions run per record, so they
build attribute dicts only for recording spans and avoid anything slower than a dict lookup.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context, get_current
from opentelemetry.instrumentation.utils import _SUPPRESS_INSTRUMENTATION_KEY_PLAIN
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanKind, Status, StatusCode, Tracer

from tracebridge.config import ConsumerParent, KafkaCarrier
from tracebridge.messaging.delivery import DeliveryTracker, attempt_from_headers
from tracebridge.messaging.light_span import FOLLOWS_FROM, LightTracer, set_known_attributes
from tracebridge.messaging.record_context import (
    extract_record_parent,
    inject_record_context,
)


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What a span needs to know about the client that sent or received a record."""

    system: str
    client_id: str | None = None
    server_address: str | None = None
    server_port: int | None = None
    consumer_group: str | None = None

    def base_attributes(self, operation: str, destination: str | None) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "messaging.system": self.system,
            "messaging.operation.type": operation,
            "messaging.operation.name": operation,
        }
        if destination is not None:
            attributes["messaging.destination.name"] = destination
        if self.client_id:
            attributes["messaging.client.id"] = self.client_id
        if self.server_address:
            attributes["server.address"] = self.server_address
        if self.server_port is not None:
            attributes["server.port"] = self.server_port
        if self.consumer_group and operation != "send":
            attributes["messaging.consumer.group.name"] = self.consumer_group
        return attributes


class ConsumedRecord(Protocol):
    """A received record as the broker-neutral code reads it (aiokafka's ``ConsumerRecord``
    has exactly these fields; other adapters wrap theirs in :class:`Record`)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> object: ...
    @property
    def timestamp(self) -> int | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]] | None: ...
    @property
    def value(self) -> object: ...
    @property
    def serialized_value_size(self) -> int | None: ...


class Record(NamedTuple):
    """A plain :class:`ConsumedRecord`, for adapters whose client has no such object (a named
    tuple: built once per polled message, at a third of a frozen dataclass's cost)."""

    topic: str
    partition: int
    offset: int
    key: object = None
    timestamp: int | None = None
    headers: Sequence[tuple[str, bytes | None]] | None = None
    value: object = None
    serialized_value_size: int | None = None


def key_text(key: object) -> str | None:
    """A record key as a span attribute value (semconv: the string form)."""
    if key is None:
        return None
    if isinstance(key, bytes | bytearray):
        return bytes(key).decode("utf-8", "replace")
    return key if isinstance(key, str) else str(key)


def body_size(value: object) -> int | None:
    """Size of a body we can measure before serialization, else ``None``."""
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    return None


def mark_failed(span: Span, error: BaseException, error_type: str | None = None) -> None:
    """ERROR status, ``error.type`` and the exception event, the same way everywhere.

    ``error_type`` overrides the exception's class name where the client has a better
    low-cardinality name (a Kafka error code such as ``_MSG_TIMED_OUT``).
    """
    if not span.is_recording():
        return
    span.set_attribute("error.type", error_type or type(error).__qualname__)
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def sending_context() -> Context | None:
    """The current context, or ``None`` where OpenTelemetry's off switch
    (``suppress_instrumentation()``) is on — then the record goes out as the plain client sends
    it.  Read once per record and handed to every step (parent, baggage), which otherwise each
    asked the runtime context again: ~0.7 µs a record here, sampled or not."""
    current = get_current()
    if current.get(_SUPPRESS_INSTRUMENTATION_KEY) or current.get(_SUPPRESS_INSTRUMENTATION_KEY_PLAIN):
        return None
    return current


class UnacknowledgedSend(Exception):
    """A record whose delivery report never came."""


class MessagingSpans:
    """Starts and finishes send, process and receive spans for one instrumented library."""

    def __init__(
        self,
        tracer: Tracer,
        *,
        carrier: KafkaCarrier = KafkaCarrier.HEADERS,
        consumer_parent: ConsumerParent = ConsumerParent.PARENT,
        deliveries: DeliveryTracker | None = None,
    ) -> None:
        self.tracer = LightTracer(tracer)
        self.carrier = carrier
        self.link_only = consumer_parent is ConsumerParent.LINK
        self.deliveries = deliveries or DeliveryTracker()

    # -- send ---------------------------------------------------------------------------------
    def start_send(
        self,
        client: ClientInfo,
        topic: str,
        *,
        partition: int | None,
        key: object,
        value: object,
        headers: Sequence[tuple[str, bytes | None]] | None,
        carrier: KafkaCarrier | None = None,
        context: Context | None = None,
    ) -> tuple[Span, list[tuple[str, bytes | None]], object]:
        """Start ``send {topic}`` (PRODUCER, child of the span in ``context``, default the
        current one) and return it with the headers and value that carry its context (where
        ``carrier``, default the configured one, says)."""
        span = self.tracer.start_span(f"send {topic}", context, kind=SpanKind.PRODUCER)
        if span.is_recording():
            attributes = client.base_attributes("send", topic)
            if partition is not None:
                attributes["messaging.destination.partition.id"] = str(partition)
            text = key_text(key)
            if text is not None:
                attributes["messaging.kafka.message.key"] = text
            size = body_size(value)
            if size is not None:
                attributes["messaging.message.body.size"] = size
            set_known_attributes(span, attributes)
        new_headers, new_value = inject_record_context(carrier or self.carrier, span, headers, value, context)
        return span, new_headers, new_value

    @staticmethod
    def end_send(
        span: Span,
        *,
        partition: int | None = None,
        offset: int | None = None,
        error: BaseException | None = None,
        error_type: str | None = None,
    ) -> None:
        """Finish a send span once the broker acknowledged (or refused) the record."""
        if span.is_recording():
            if partition is not None and partition >= 0:
                span.set_attribute("messaging.destination.partition.id", str(partition))
            if offset is not None and offset >= 0:
                span.set_attribute("messaging.kafka.offset", offset)
            if error is not None:
                mark_failed(span, error, error_type)
        span.end()

    @staticmethod
    def end_unacknowledged(span: Span, why: str) -> None:
        """Finish a send span whose record the client never reported on (the program flushed
        with a timeout, closed, or exited first): it may or may not have reached the broker,
        so it is an error to look at, not a success."""
        if span.is_recording():
            span.set_attribute("tracebridge.send.acknowledged", False)
            mark_failed(span, UnacknowledgedSend(why), "tracebridge.unacknowledged")
        span.end()

    # -- process ------------------------------------------------------------------------------
    def start_process(
        self, client: ClientInfo, record: ConsumedRecord, group_key: Hashable
    ) -> tuple[Span, Context]:
        """Start ``process {topic}`` for one record; return it with the context to make current.

        Parent: the record's context (or a new trace in link-only mode), plus a ``follows_from``
        link to it.  The returned context carries the span *and* the record's baggage, so the
        handler's own calls continue the trace and the business keys.
        """
        start_ns = time.time_ns()
        remote, carried, source, problem = extract_record_parent(record.headers, record.value)
        span = self.tracer.start_span(
            f"process {record.topic}",
            context=carried,
            kind=SpanKind.CONSUMER,
            start_time=start_ns,
            follows=remote,
            parent=None if self.link_only else remote,
        )
        # Every delivery is counted (redeliveries are found by offset), recorded or not.
        attempt = self.deliveries.attempt(group_key, record.topic, record.partition, record.offset)
        if type(span) is not NonRecordingSpan and span.is_recording():
            attempt += attempt_from_headers(record.headers) - 1
            attributes = client.base_attributes("process", record.topic)
            attributes["messaging.destination.partition.id"] = str(record.partition)
            attributes["messaging.kafka.offset"] = record.offset
            text = key_text(record.key)
            if text is not None:
                attributes["messaging.kafka.message.key"] = text
            size = record.serialized_value_size
            if size is not None and size >= 0:
                attributes["messaging.message.body.size"] = size
            if record.timestamp is not None and record.timestamp >= 0:
                wait_ms = start_ns / 1e6 - record.timestamp
                if wait_ms < 0:
                    attributes["tracebridge.clock_skew"] = True
                    wait_ms = 0.0
                attributes["tracebridge.queue_wait_ms"] = round(wait_ms, 3)
            attributes["tracebridge.delivery.attempt"] = attempt
            attributes["tracebridge.context.source"] = source
            if problem is not None:
                attributes["tracebridge.context.problem"] = problem
            set_known_attributes(span, attributes)
        return span, trace.set_span_in_context(span, carried)

    # -- receive (batch) ----------------------------------------------------------------------
    def start_receive(
        self, client: ClientInfo, records: Iterable[ConsumedRecord], group_key: Hashable
    ) -> tuple[Span, Context]:
        """Start one ``receive`` span for a batch, linked to every record's context.

        A batch has many parents, so it starts a new trace and links them all; the returned
        context makes it current for the batch handler.  Redeliveries are counted as for
        single records; the span reports the highest attempt in the batch.
        """
        topics: set[str] = set()
        links: list[Link] = []
        count = 0
        broken = 0
        highest_attempt = 1
        for record in records:
            count += 1
            topics.add(record.topic)
            attempt = self.deliveries.attempt(
                group_key, record.topic, record.partition, record.offset, attempt_from_headers(record.headers)
            )
            highest_attempt = max(highest_attempt, attempt)
            remote, _carried, _source, _problem = extract_record_parent(record.headers, record.value)
            if remote is not None:
                links.append(Link(remote, FOLLOWS_FROM))
            else:
                broken += 1
        topic = next(iter(topics)) if len(topics) == 1 else None
        span = self.tracer.start_span(
            f"receive {topic}" if topic else "receive",
            context=Context(),
            kind=SpanKind.CONSUMER,
            links=links,
        )
        if span.is_recording():
            attributes = client.base_attributes("receive", topic)
            attributes["messaging.batch.message_count"] = count
            attributes["tracebridge.delivery.attempt"] = highest_attempt
            if topic is None:
                attributes["tracebridge.destinations"] = sorted(topics)
            if broken:
                attributes["tracebridge.context.missing_count"] = broken
            set_known_attributes(span, attributes)
        return span, trace.set_span_in_context(span, Context())

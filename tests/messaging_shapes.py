"""The messaging spans of every mainstream Kafka instrumentation, one order flow each.

Each shape imitates what the named instrumentation and version emits (names, kinds, attribute
keys and value types, parent or link), read from its source: the Java agent's
``kafka-clients`` instrumentation (old conventions in 1.x/2.x, the stable messaging conventions
behind ``otel.semconv-stability.opt-in=messaging``), Spring Kafka 3's Micrometer observations,
``opentelemetry-instrumentation-kafkajs`` (aspecto's 0.x, and contrib's 0.32 with ``eachBatch``),
Go's ``otelsarama`` 0.4x, franz-go's ``kotel`` with ``LinkSpans``, the eBPF ``kafka-go`` probe of
``opentelemetry-go-instrumentation``, .NET's ``Confluent.Kafka.Extensions.Diagnostics`` (first
generation) and ``OpenTelemetry.Instrumentation.ConfluentKafka`` (second), OpenTracing's
``java-kafka-client`` (through Jaeger's classic JSON, FOLLOWS_FROM), and ours.

The flow is the same in all: service ``api`` answers ``POST /orders`` (20 ms) and sends one
record to ``orders`` at +10 ms; service ``worker`` starts processing it at +512 ms (so the record
waited 500 ms after its send ended at +12 ms), spends 100 ms, 80 of them calling ``notification``
over HTTP.  The answer a human gives for every shape: one hop ``orders`` api → worker, 500 ms of
queue wait (480 where the Java agent measured ``kafka.record.queue_time_ms`` itself), 100 ms of
processing, and the verdict "queue wait on `orders` before worker"; no broken chain.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from tracebridge.analysis.model import LinkRecord, SpanRecord
from tracebridge.analysis.sources import jaeger_spans

T0 = 1_764_000_000_000_000_000
MS = 1_000_000
_ids = itertools.count(1)


def _id(width: int) -> str:
    return f"{next(_ids):0{width}x}"


@dataclass
class Shape:
    name: str  # the instrumentation and version imitated
    spans: list[SpanRecord]
    queue_wait_ms: float = 500.0
    consumer_span: str = ""  # span id of the span the hop ends at
    send_span: str = ""
    partition: str | None = "2"
    offset: int | None = 17
    group: str | None = "workers"
    linked: bool = False  # joined to its producer by a link only
    notes: dict[str, Any] = field(default_factory=dict)


def _span(
    trace: str, name: str, kind: str, service: str, start: float, end: float, **more: Any
) -> SpanRecord:
    return SpanRecord(
        trace_id=trace,
        span_id=more.pop("span_id", None) or _id(16),
        parent_span_id=more.pop("parent", None),
        name=name,
        kind=kind,
        start_ns=T0 + int(start * MS),
        end_ns=T0 + int(end * MS),
        service=service,
        attributes=more.pop("attributes", {}),
        links=tuple(more.pop("links", ())),
        status=more.pop("status", "UNSET"),
    )


def _flow(
    name: str,
    send_name: str,
    send_attributes: dict[str, Any],
    consumer_name: str,
    consumer_kind: str,
    consumer_attributes: dict[str, Any],
    how: str,  # "parent" | "link" (a new trace) | "poll" (a new trace: poll span → process, linked)
    poll_name: str = "",
    poll_kind: str = "CLIENT",
    poll_attributes: dict[str, Any] | None = None,
    **expected: Any,
) -> Shape:
    order = _id(32)
    root = _span(order, "POST /orders", "SERVER", "api", 0, 20)
    send = _span(order, send_name, "PRODUCER", "api", 10, 12, parent=root.span_id, attributes=send_attributes)
    spans = [root, send]
    link = LinkRecord(order, send.span_id)
    if how == "parent":
        consumer = _span(
            order,
            consumer_name,
            consumer_kind,
            "worker",
            512,
            612,
            parent=send.span_id,
            attributes=consumer_attributes,
        )
    else:
        other = _id(32)
        parent = None
        if how == "poll":
            poll = _span(other, poll_name, poll_kind, "worker", 505, 613, attributes=poll_attributes or {})
            spans.append(poll)
            parent = poll.span_id
        consumer = _span(
            other,
            consumer_name,
            consumer_kind,
            "worker",
            512,
            612,
            parent=parent,
            attributes=consumer_attributes,
            links=[link],
        )
    spans.append(consumer)
    call = _span(consumer.trace_id, "POST", "CLIENT", "worker", 520, 600, parent=consumer.span_id)
    served = _span(
        consumer.trace_id, "POST /sendEmail", "SERVER", "notification", 522, 598, parent=call.span_id
    )
    spans += [call, served]
    return Shape(
        name,
        spans,
        consumer_span=consumer.span_id,
        send_span=send.span_id,
        linked=how != "parent",
        **expected,
    )


def java_agent_1x_old() -> Shape:
    """OpenTelemetry Java agent 1.x, kafka-clients, old conventions, receive telemetry on: the
    receive span is a root of its own (no links), the process span is the producer's child and
    carries the agent's own queue time."""
    shape = _flow(
        "otel-java-agent-1.x (old conventions)",
        "orders publish",
        {
            "messaging.system": "kafka",
            "messaging.destination": "orders",
            "messaging.destination_kind": "topic",
            "messaging.kafka.partition": 2,
        },
        "orders process",
        "CONSUMER",
        {
            "messaging.system": "kafka",
            "messaging.destination": "orders",
            "messaging.destination_kind": "topic",
            "messaging.operation": "process",
            "messaging.kafka.partition": 2,
            "messaging.kafka.message.offset": 17,
            "messaging.kafka.consumer.group": "workers",
            "kafka.record.queue_time_ms": 480,
        },
        "parent",
        queue_wait_ms=480,
    )
    receive = _span(
        _id(32),
        "orders receive",
        "CONSUMER",
        "worker",
        505,
        511,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination": "orders",
            "messaging.operation": "receive",
        },
    )
    shape.spans.append(receive)
    return shape


def java_agent_2x_new() -> Shape:
    """OpenTelemetry Java agent 2.x, stable messaging conventions, a batch listener: ``poll``
    (CLIENT) starts a trace; ``process`` under it links to the producer."""
    return _flow(
        "otel-java-agent-2.x (messaging conventions 1.26+)",
        "send orders",
        {
            "messaging.system": "kafka",
            "messaging.destination.name": "orders",
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.partition.id": "2",
            "messaging.kafka.offset": 17,
        },
        "process orders",
        "CONSUMER",
        {
            "messaging.system": "kafka",
            "messaging.destination.name": "orders",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.partition.id": "2",
            "messaging.kafka.offset": 17,
            "messaging.consumer.group.name": "workers",
        },
        "poll",
        poll_name="poll orders",
        poll_attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": "orders",
            "messaging.operation.type": "receive",
            "messaging.operation.name": "poll",
            "messaging.batch.message_count": 1,
            "messaging.consumer.group.name": "workers",
        },
    )


def spring_kafka_micrometer() -> Shape:
    """Spring Kafka 3.x with Micrometer Tracing (observation enabled): the listener's
    ``{topic} receive`` span is the processing, child of the template's ``{topic} send``."""
    return _flow(
        "spring-kafka-3.x micrometer",
        "orders send",
        {
            "messaging.system": "kafka",
            "messaging.destination.name": "orders",
            "messaging.destination.kind": "topic",
            "messaging.operation": "publish",
        },
        "orders receive",
        "CONSUMER",
        {
            "messaging.system": "kafka",
            "messaging.source.name": "orders",
            "messaging.source.kind": "topic",
            "messaging.operation": "receive",
            "messaging.kafka.consumer.group": "workers",
            "messaging.kafka.source.partition": "2",
            "messaging.kafka.message.offset": "17",
            "spring.kafka.listener.id": "orders-listener-0",
        },
        "parent",
    )


def kafkajs_old() -> Shape:
    """opentelemetry-instrumentation-kafkajs 0.x (aspecto): spans named just ``{topic}``."""
    return _flow(
        "kafkajs old (opentelemetry-instrumentation-kafkajs 0.x)",
        "orders",
        {
            "messaging.system": "kafka",
            "messaging.destination": "orders",
            "messaging.destination_kind": "topic",
        },
        "orders",
        "CONSUMER",
        {
            "messaging.system": "kafka",
            "messaging.destination": "orders",
            "messaging.destination_kind": "topic",
            "messaging.operation": "process",
        },
        "parent",
        partition=None,
        offset=None,
        group=None,
    )


def kafkajs_new_each_batch() -> Shape:
    """@opentelemetry/instrumentation-kafkajs 0.32, ``eachBatch``: ``poll {topic}`` (CLIENT) on a
    new trace, per-message ``process {topic}`` under it linked to the producer; offsets are
    strings (kafkajs' own type)."""
    return _flow(
        "kafkajs new (@opentelemetry/instrumentation-kafkajs 0.32, eachBatch)",
        "send orders",
        {
            "messaging.system": "kafka",
            "messaging.destination.name": "orders",
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.partition.id": "2",
        },
        "process orders",
        "CONSUMER",
        {
            "messaging.system": "kafka",
            "messaging.destination.name": "orders",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.partition.id": "2",
            "messaging.kafka.offset": "17",
        },
        "poll",
        poll_name="poll orders",
        poll_attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": "orders",
            "messaging.operation.type": "receive",
            "messaging.operation.name": "poll",
            "messaging.batch.message_count": 3,
            "messaging.destination.partition.id": "2",
        },
        group=None,
    )


def go_otelsarama() -> Shape:
    """Go otelsarama 0.4x: ``{topic} publish`` / ``{topic} receive``, the offset as the message id
    (a string), partitions under ``destination`` / ``source``."""
    return _flow(
        "go otelsarama 0.4x",
        "orders publish",
        {
            "messaging.system": "kafka",
            "messaging.destination.kind": "topic",
            "messaging.destination.name": "orders",
            "messaging.kafka.destination.partition": 2,
            "messaging.message.id": "17",
        },
        "orders receive",
        "CONSUMER",
        {
            "messaging.system": "kafka",
            "messaging.source.kind": "topic",
            "messaging.source.name": "orders",
            "messaging.operation": "receive",
            "messaging.kafka.source.partition": 2,
            "messaging.message.id": "17",
        },
        "parent",
        group=None,
    )


def go_kotel_linked() -> Shape:
    """franz-go kotel with ``LinkSpans()``: the consumer's ``{topic} receive`` is a new trace's root
    with a link to the producer."""
    return _flow(
        "go kotel (franz-go, LinkSpans)",
        "orders send",
        {
            "messaging.system": "kafka",
            "messaging.destination.name": "orders",
            "messaging.destination.kind": "topic",
            "messaging.kafka.destination.partition": 2,
            "messaging.kafka.message.offset": 17,
        },
        "orders receive",
        "CONSUMER",
        {
            "messaging.system": "kafka",
            "messaging.source.name": "orders",
            "messaging.source.kind": "topic",
            "messaging.operation": "receive",
            "messaging.kafka.consumer.group": "workers",
            "messaging.kafka.source.partition": 2,
            "messaging.kafka.message.offset": 17,
        },
        "link",
    )


def go_ebpf_kafka_go() -> Shape:
    """opentelemetry-go-instrumentation's segmentio/kafka-go probe (eBPF): ``{topic} publish`` and
    ``{topic} receive``, parented."""
    return _flow(
        "go eBPF kafka-go probe",
        "orders publish",
        {
            "messaging.system": "kafka",
            "messaging.destination.name": "orders",
            "messaging.kafka.message.key": "o-1",
            "messaging.batch.message_count": 1,
        },
        "orders receive",
        "CONSUMER",
        {
            "messaging.system": "kafka",
            "messaging.destination.name": "orders",
            "messaging.kafka.consumer.group": "workers",
            "messaging.kafka.destination.partition": 2,
            "messaging.kafka.message.offset": 17,
            "messaging.kafka.message.key": "o-1",
        },
        "parent",
    )


def dotnet_gen1() -> Shape:
    """.NET Confluent.Kafka.Extensions.Diagnostics (first generation): the consumer activity is
    a new trace's root, linked to the producer — never its child."""
    return _flow(
        ".NET Confluent.Kafka.Extensions.Diagnostics (gen 1)",
        "orders publish",
        {
            "messaging.system": "kafka",
            "messaging.destination": "orders",
            "messaging.destination_kind": "topic",
            "messaging.kafka.partition": 2,
        },
        "orders process",
        "CONSUMER",
        {
            "messaging.system": "kafka",
            "messaging.destination": "orders",
            "messaging.destination_kind": "topic",
            "messaging.operation": "process",
            "messaging.kafka.partition": 2,
            "messaging.kafka.message.offset": 17,
            "messaging.kafka.consumer.group": "workers",
        },
        "link",
    )


def dotnet_gen2() -> Shape:
    """.NET OpenTelemetry.Instrumentation.ConfluentKafka (second generation, new conventions):
    ``publish {topic}`` and a linked ``process {topic}`` on a new trace."""
    return _flow(
        ".NET OpenTelemetry.Instrumentation.ConfluentKafka (gen 2)",
        "publish orders",
        {
            "messaging.system": "kafka",
            "messaging.destination.name": "orders",
            "messaging.operation.type": "publish",
            "messaging.destination.partition.id": "2",
            "messaging.kafka.offset": 17,
        },
        "process orders",
        "CONSUMER",
        {
            "messaging.system": "kafka",
            "messaging.destination.name": "orders",
            "messaging.operation.type": "process",
            "messaging.destination.partition.id": "2",
            "messaging.kafka.offset": 17,
            "messaging.consumer.group.name": "workers",
        },
        "link",
    )


def tracebridge_link_mode() -> Shape:
    """Ours with ``TRACEBRIDGE_CONSUMER_PARENT=link``."""
    return _flow(
        "tracebridge (TRACEBRIDGE_CONSUMER_PARENT=link)",
        "send orders",
        {
            "messaging.system": "kafka",
            "messaging.destination.name": "orders",
            "messaging.operation.type": "send",
            "messaging.destination.partition.id": "2",
            "messaging.kafka.offset": 17,
        },
        "process orders",
        "CONSUMER",
        {
            "messaging.system": "kafka",
            "messaging.destination.name": "orders",
            "messaging.operation.type": "process",
            "messaging.destination.partition.id": "2",
            "messaging.kafka.offset": 17,
            "messaging.consumer.group.name": "workers",
            "tracebridge.queue_wait_ms": 500.0,
            "tracebridge.context.source": "headers",
            "tracebridge.delivery.attempt": 1,
        },
        "link",
    )


def opentracing_java_kafka_client() -> Shape:
    """OpenTracing java-kafka-client as Jaeger stores it (classic JSON): ``To_{topic}`` and
    ``From_{topic}`` in one trace, the consumer joined by a FOLLOWS_FROM reference."""
    trace = _id(32)
    root, send, consumer, call, served = (_id(16) for _ in range(5))

    def jspan(
        span_id: str,
        name: str,
        start_ms: float,
        end_ms: float,
        process: str,
        tags: list[Any],
        refs: list[Any],
    ):  # type: ignore[no-untyped-def]
        return {
            "traceID": trace,
            "spanID": span_id,
            "operationName": name,
            "references": refs,
            "startTime": (T0 + int(start_ms * MS)) // 1000,
            "duration": int((end_ms - start_ms) * 1000),
            "tags": tags,
            "logs": [],
            "processID": process,
            "warnings": None,
        }

    def tag(key: str, value: Any, kind: str = "string") -> dict[str, Any]:
        return {"key": key, "type": kind, "value": value}

    document = {
        "traceID": trace,
        "spans": [
            jspan(root, "POST /orders", 0, 20, "p1", [tag("span.kind", "server")], []),
            jspan(
                send,
                "To_orders",
                10,
                12,
                "p1",
                [
                    tag("span.kind", "producer"),
                    tag("component", "java-kafka"),
                    tag("message_bus.destination", "orders"),
                    tag("peer.service", "kafka"),
                ],
                [{"refType": "CHILD_OF", "traceID": trace, "spanID": root}],
            ),
            jspan(
                consumer,
                "From_orders",
                512,
                612,
                "p2",
                [
                    tag("span.kind", "consumer"),
                    tag("component", "java-kafka"),
                    tag("message_bus.destination", "orders"),
                    tag("partition", 2, "int64"),
                    tag("offset", 17, "int64"),
                    tag("peer.service", "kafka"),
                ],
                [{"refType": "FOLLOWS_FROM", "traceID": trace, "spanID": send}],
            ),
            jspan(
                call,
                "POST",
                520,
                600,
                "p2",
                [tag("span.kind", "client")],
                [{"refType": "CHILD_OF", "traceID": trace, "spanID": consumer}],
            ),
            jspan(
                served,
                "POST /sendEmail",
                522,
                598,
                "p3",
                [tag("span.kind", "server")],
                [{"refType": "CHILD_OF", "traceID": trace, "spanID": call}],
            ),
        ],
        "processes": {
            "p1": {"serviceName": "api", "tags": []},
            "p2": {"serviceName": "worker", "tags": []},
            "p3": {"serviceName": "notification", "tags": []},
        },
        "warnings": None,
    }
    return Shape(
        "opentracing java-kafka-client (Jaeger classic JSON, FOLLOWS_FROM)",
        jaeger_spans(document),
        consumer_span=consumer,
        send_span=send,
        group=None,
        linked=True,
    )


SHAPES = (
    java_agent_1x_old,
    java_agent_2x_new,
    spring_kafka_micrometer,
    kafkajs_old,
    kafkajs_new_each_batch,
    go_otelsarama,
    go_kotel_linked,
    go_ebpf_kafka_go,
    dotnet_gen1,
    dotnet_gen2,
    opentracing_java_kafka_client,
    tracebridge_link_mode,
)

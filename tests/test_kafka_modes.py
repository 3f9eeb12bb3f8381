"""Carrier modes, link-only parenting, redelivery, batches, baggage and sampling — real broker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import aiokafka
from aiokafka import AIOKafkaProducer, TopicPartition
from opentelemetry import baggage, context, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from tests.conftest import by_name, one, unique
from tests.test_kafka_spans import consumer_for
from tracebridge.config import ConsumerParent, KafkaCarrier
from tracebridge.messaging.kafka.aiokafka import AIOKafkaInstrumentor

tracer = trace.get_tracer("tests")


@contextmanager
def instrumented(**options: object) -> Iterator[None]:
    AIOKafkaInstrumentor().instrument(**options)
    try:
        yield
    finally:
        AIOKafkaInstrumentor().uninstrument()


async def produce(bootstrap: str, topic: str, value: bytes, **send: object) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, **send)
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, count: int = 1, group: str | None = None) -> list[object]:
    consumer = consumer_for(bootstrap, topic, group=group)
    await consumer.start()
    records = []
    try:
        for _ in range(count):
            records.append(await consumer.getone())
        await consumer.commit()
    finally:
        await consumer.stop()
    return records


async def test_link_only_mode_starts_new_trace_linked_to_producer(bootstrap, spans):
    topic = unique("orders")
    with instrumented(consumer_parent=ConsumerParent.LINK):
        await produce(bootstrap, topic, b"x")
        await consume(bootstrap, topic)
    send = one(spans, f"send {topic}")
    process = one(spans, f"process {topic}")
    assert process.parent is None
    assert process.context.trace_id != send.context.trace_id
    assert [(link.context.trace_id, link.context.span_id) for link in process.links] == [
        (send.context.trace_id, send.context.span_id)
    ]
    assert process.attributes["tracebridge.context.source"] == "headers"


async def test_envelope_only_producer_writes_body_not_headers(bootstrap, spans):
    topic = unique("orders")
    with instrumented(carrier=KafkaCarrier.ENVELOPE):
        await produce(bootstrap, topic, b'{"order_id": "o-1"}')
        (record,) = await consume(bootstrap, topic)
    assert not any(name == "traceparent" for name, _ in record.headers)
    body = json.loads(record.value)
    assert body["order_id"] == "o-1"
    send = one(spans, f"send {topic}")
    assert body["trace_context"]["traceparent"] == (
        f"00-{send.context.trace_id:032x}-{send.context.span_id:016x}-03"
    )
    process = one(spans, f"process {topic}")
    assert process.parent.span_id == send.context.span_id
    assert process.attributes["tracebridge.context.source"] == "envelope"


async def test_envelope_mode_falls_back_to_headers_for_non_json_body(bootstrap, spans):
    topic = unique("orders")
    with instrumented(carrier=KafkaCarrier.ENVELOPE):
        await produce(bootstrap, topic, b"\x00binary-avro")
        (record,) = await consume(bootstrap, topic)
    assert record.value == b"\x00binary-avro"
    process = one(spans, f"process {topic}")
    assert process.parent.span_id == one(spans, f"send {topic}").context.span_id
    assert process.attributes["tracebridge.context.source"] == "headers"


async def test_both_mode_writes_headers_and_envelope(bootstrap, spans):
    topic = unique("orders")
    with instrumented(carrier=KafkaCarrier.BOTH):
        await produce(bootstrap, topic, b'{"a": 1}')
        (record,) = await consume(bootstrap, topic)
    header = dict(record.headers)["traceparent"].decode()
    assert json.loads(record.value)["trace_context"]["traceparent"] == header
    assert one(spans, f"process {topic}").attributes["tracebridge.context.source"] == "headers"


async def test_mixed_fleet_headers_and_envelope_producers_one_consumer(bootstrap, spans, broker):
    topic = unique("orders")
    broker.create_topics([topic], partitions=1)
    with (
        instrumented(carrier=KafkaCarrier.HEADERS),
        tracer.start_as_current_span("headers producer") as first,
    ):
        await produce(bootstrap, topic, b'{"n": 1}')
    with instrumented(carrier=KafkaCarrier.ENVELOPE):
        with tracer.start_as_current_span("envelope producer") as second:
            await produce(bootstrap, topic, b'{"n": 2}')
        await consume(bootstrap, topic, count=2)
    processes = sorted(
        by_name(spans, f"process {topic}"), key=lambda s: s.attributes["messaging.kafka.offset"]
    )
    assert [p.attributes["tracebridge.context.source"] for p in processes] == ["headers", "envelope"]
    assert [p.context.trace_id for p in processes] == [
        first.get_span_context().trace_id,
        second.get_span_context().trace_id,
    ]


async def test_uninstrumented_producer_gives_broken_chain_marked_none(bootstrap, spans):
    topic = unique("orders")
    await produce(bootstrap, topic, b'{"no": "context"}')
    with instrumented():
        await consume(bootstrap, topic)
    process = one(spans, f"process {topic}")
    assert process.parent is None
    assert process.links == ()
    assert process.attributes["tracebridge.context.source"] == "none"


async def test_redelivery_after_consumer_restart_is_attempt_two(bootstrap, spans):
    topic, group = unique("orders"), unique("inventory")
    with instrumented():
        await produce(bootstrap, topic, b"x")
        first = consumer_for(bootstrap, topic, group=group)
        await first.start()
        await first.getone()  # handler "crashes": no commit
        await first.stop()
        await consume(bootstrap, topic, group=group)  # restarted consumer, commits
        await consume(bootstrap, topic, group=unique("other-group"))  # another group: its first
    attempts = [
        (p.attributes["messaging.consumer.group.name"], p.attributes["tracebridge.delivery.attempt"])
        for p in sorted(by_name(spans, f"process {topic}"), key=lambda s: s.start_time)
    ]
    assert attempts[:2] == [(group, 1), (group, 2)]
    assert attempts[2][1] == 1
    send = one(spans, f"send {topic}")
    assert {p.parent.span_id for p in by_name(spans, f"process {topic}")} == {send.context.span_id}


async def test_seek_back_counts_as_redelivery(bootstrap, spans, broker):
    topic = unique("orders")
    broker.create_topics([topic], partitions=1)
    with instrumented():
        await produce(bootstrap, topic, b"x")
        consumer = consumer_for(bootstrap, topic)
        await consumer.start()
        try:
            record = await consumer.getone()
            consumer.seek(TopicPartition(topic, record.partition), record.offset)
            await consumer.getone()
            consumer.seek(TopicPartition(topic, record.partition), record.offset)
            await consumer.getone()
        finally:
            await consumer.stop()
    attempts = sorted(
        p.attributes["tracebridge.delivery.attempt"] for p in by_name(spans, f"process {topic}")
    )
    assert attempts == [1, 2, 3]


async def test_retry_record_attempt_header_is_respected(bootstrap, spans):
    topic = unique("orders.retry")
    with instrumented():
        await produce(bootstrap, topic, b"x", headers=[("tracebridge-attempt", b"3")])
        await consume(bootstrap, topic)
    assert one(spans, f"process {topic}").attributes["tracebridge.delivery.attempt"] == 3


async def test_getmany_receive_span_links_every_record(bootstrap, spans, broker):
    topic = unique("orders")
    broker.create_topics([topic], partitions=1)
    with instrumented():
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for n in range(3):
                with tracer.start_as_current_span(f"request {n}"):
                    await producer.send_and_wait(topic, b"x")
        finally:
            await producer.stop()
        consumer = consumer_for(bootstrap, topic)
        await consumer.start()
        try:
            received = 0
            while received < 3:
                batch = await consumer.getmany(timeout_ms=2000)
                received += sum(len(records) for records in batch.values())
                with tracer.start_as_current_span("batch handler"):
                    pass
        finally:
            await consumer.stop()
    receives = by_name(spans, f"receive {topic}")
    assert sum(r.attributes["messaging.batch.message_count"] for r in receives) == 3
    sends = {s.context.span_id for s in by_name(spans, f"send {topic}")}
    assert {link.context.span_id for r in receives for link in r.links} == sends
    assert all(r.kind is SpanKind.CONSUMER and r.parent is None for r in receives)
    handler = by_name(spans, "batch handler")[-1]
    assert handler.parent.span_id == receives[-1].context.span_id


async def test_baggage_business_key_on_every_span_across_two_hops(bootstrap, spans):
    orders, shipments = unique("orders"), unique("shipments")
    with instrumented():
        token = context.attach(baggage.set_baggage("order.id", "o-42"))
        try:
            with tracer.start_as_current_span("createOrder"):
                await produce(bootstrap, orders, b"x")
        finally:
            context.detach(token)
        consumer = consumer_for(bootstrap, orders)
        await consumer.start()
        try:
            await consumer.getone()
            await produce(bootstrap, shipments, b"y")
        finally:
            await consumer.stop()
        await consume(bootstrap, shipments)
    names = [
        "createOrder",
        f"send {orders}",
        f"process {orders}",
        f"send {shipments}",
        f"process {shipments}",
    ]
    assert [one(spans, n).attributes.get("order.id") for n in names] == ["o-42"] * 5
    assert len({one(spans, n).context.trace_id for n in names}) == 1


async def test_unsampled_trace_propagates_flag_and_records_nothing(bootstrap, spans):
    topic = unique("orders")
    unsampled = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(0))
    with instrumented():
        token = context.attach(trace.set_span_in_context(NonRecordingSpan(unsampled)))
        try:
            await produce(bootstrap, topic, b"x")
        finally:
            context.detach(token)
        (record,) = await consume(bootstrap, topic)
    traceparent = dict(record.headers)["traceparent"].decode()
    assert traceparent.startswith(f"00-{0x1234:032x}-") and traceparent.endswith("-00")
    assert spans.get_finished_spans() == ()


async def test_uninstrument_restores_aiokafka_exactly(bootstrap, spans):
    originals = {
        (cls, name): getattr(getattr(aiokafka, cls), name)
        for cls, name in [
            ("AIOKafkaProducer", "send"),
            ("AIOKafkaConsumer", "getone"),
            ("AIOKafkaConsumer", "getmany"),
            ("AIOKafkaConsumer", "commit"),
            ("AIOKafkaConsumer", "stop"),
        ]
    }
    with instrumented():
        assert all(getattr(getattr(aiokafka, c), n) is not f for (c, n), f in originals.items())
    assert all(getattr(getattr(aiokafka, c), n) is f for (c, n), f in originals.items())
    topic = unique("orders")
    await produce(bootstrap, topic, b"x")
    (record,) = await consume(bootstrap, topic)
    assert record.headers == ()
    assert spans.get_finished_spans() == ()

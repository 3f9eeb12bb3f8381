"""The span model of DESIGN §3 for kafka-python, against the real embedded broker.

One consumer per group, positioned by ``assign()``: kafka-python's group rebalancing with
several members is flaky against the embedded broker (DESIGN §4).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import by_name, one, unique
from tracebridge.broker import EmbeddedBroker

kafka = pytest.importorskip("kafka")

tracer = trace.get_tracer("tests")


@pytest.fixture
def instrumented(spans) -> Iterator[None]:
    from tracebridge.messaging.kafka.kafka_python import KafkaPythonInstrumentor

    KafkaPythonInstrumentor().instrument()
    yield
    KafkaPythonInstrumentor().uninstrument()


def producer(bootstrap: str, **config: object):
    return kafka.KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, **config)


def consumer_from_start(bootstrap: str, topic: str, group: str | None = None):
    """Partition 0 from its first record, by assign(), in a group of its own."""
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group or unique("logistics"),
        enable_auto_commit=False,
        consumer_timeout_ms=10_000,
    )
    partition = kafka.TopicPartition(topic, 0)
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    return consumer


def test_send_span_ends_with_the_acknowledgement(instrumented, spans, broker, bootstrap):
    topic = unique("orders")
    broker.create_topics([topic], partitions=1)
    running = producer(bootstrap, client_id="logistics")
    try:
        with tracer.start_as_current_span("request") as request:
            metadata = running.send(topic, b'{"id": 1}', key=b"order-1").get(10)
    finally:
        running.close()
    send = one(spans, f"send {topic}")
    assert send.kind is SpanKind.PRODUCER
    assert send.parent.span_id == request.get_span_context().span_id
    attributes = dict(send.attributes)
    assert attributes["messaging.destination.name"] == topic
    assert attributes["messaging.destination.partition.id"] == "0"
    assert attributes["messaging.kafka.offset"] == metadata.offset == 0
    assert attributes["messaging.kafka.message.key"] == "order-1"
    assert attributes["messaging.client.id"] == "logistics"
    assert attributes["server.port"] == broker.port
    assert send.end_time >= send.start_time and send.status.status_code is StatusCode.UNSET


def test_send_refused_at_once_is_an_error_and_raises(instrumented, spans, broker, bootstrap):
    topic = unique("orders")
    broker.create_topics([topic], partitions=1)
    running = producer(bootstrap, max_request_size=1000)
    try:
        with pytest.raises(kafka.errors.MessageSizeTooLargeError):
            running.send(topic, b"x" * 5000)
    finally:
        running.close()
    send = one(spans, f"send {topic}")
    assert send.status.status_code is StatusCode.ERROR
    assert send.attributes["error.type"] == "MessageSizeTooLargeError"


def test_send_the_broker_never_acknowledges_fails_its_span(instrumented, spans):
    topic = unique("orders")
    with EmbeddedBroker() as doomed:
        doomed.create_topics([topic], partitions=1)
        running = producer(doomed.bootstrap_servers, delivery_timeout_ms=1500, request_timeout_ms=1000)
        running.send(topic, b"first").get(10)
    with pytest.raises(kafka.errors.KafkaError):
        running.send(topic, b"second").get(15)
    running.close(timeout=1)
    sends = by_name(spans, f"send {topic}")
    assert [s.status.status_code for s in sends] == [StatusCode.UNSET, StatusCode.ERROR]
    assert "messaging.kafka.offset" not in sends[1].attributes


def test_iteration_keeps_the_process_span_current_for_the_handler(instrumented, spans, broker, bootstrap):
    topic, follow_up = unique("inventory"), unique("shipments")
    broker.create_topics([topic, follow_up], partitions=1)
    running = producer(bootstrap)
    with tracer.start_as_current_span("request"):
        running.send(topic, b"x", key=b"o-1").get(10)
    group = unique("logistics")
    consumer = consumer_from_start(bootstrap, topic, group)
    try:
        for _record in consumer:
            with tracer.start_as_current_span("handler work"):
                pass
            running.send(follow_up, b"y").get(10)  # a send inside the handler
            assert by_name(spans, f"process {topic}") == []
            consumer.commit()
            assert len(by_name(spans, f"process {topic}")) == 1  # commit: the handler is done
            break
    finally:
        consumer.close()
        running.close()
    send = one(spans, f"send {topic}")
    process = one(spans, f"process {topic}")
    assert process.kind is SpanKind.CONSUMER
    assert process.parent.span_id == send.context.span_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert one(spans, "handler work").parent.span_id == process.context.span_id
    assert one(spans, f"send {follow_up}").parent.span_id == process.context.span_id
    assert process.attributes["messaging.consumer.group.name"] == group
    assert process.attributes["tracebridge.context.source"] == "headers"
    assert by_name(spans, f"receive {topic}") == []  # iteration's internal poll is not a batch
    assert trace.get_current_span() is trace.INVALID_SPAN


@pytest.mark.parametrize("ending", ["next", "seek", "unsubscribe", "close"])
def test_each_done_call_ends_the_process_span(instrumented, spans, broker, bootstrap, ending):
    topic = unique("orders")
    broker.create_topics([topic], partitions=1)
    running = producer(bootstrap)
    for value in (b"a", b"b"):
        running.send(topic, value).get(10)
    running.close()
    consumer = consumer_from_start(bootstrap, topic)
    try:
        next(consumer)
        calls = {
            "next": lambda: next(consumer),
            "seek": lambda: consumer.seek(kafka.TopicPartition(topic, 0), 0),
            "unsubscribe": consumer.unsubscribe,
            "close": consumer.close,
        }
        calls[ending]()
        first = [s for s in by_name(spans, f"process {topic}") if s.attributes["messaging.kafka.offset"] == 0]
        assert len(first) == 1
    finally:
        consumer.close()


def test_handler_failure_closing_the_consumer_marks_the_span_failed(instrumented, spans, broker, bootstrap):
    topic = unique("orders")
    broker.create_topics([topic], partitions=1)
    running = producer(bootstrap)
    running.send(topic, b"x").get(10)
    running.close()
    consumer = consumer_from_start(bootstrap, topic)
    with pytest.raises(ValueError):
        try:
            for _record in consumer:
                raise ValueError("bad order")
        finally:
            consumer.close()
    process = one(spans, f"process {topic}")
    assert process.status.status_code is StatusCode.ERROR
    assert process.attributes["error.type"] == "ValueError"


def test_seek_back_is_a_redelivery_counted_as_attempt_two(instrumented, spans, broker, bootstrap):
    topic = unique("orders")
    broker.create_topics([topic], partitions=1)
    running = producer(bootstrap)
    running.send(topic, b"x").get(10)
    running.close()
    consumer = consumer_from_start(bootstrap, topic)
    try:
        first = next(consumer)
        consumer.seek(kafka.TopicPartition(topic, 0), first.offset)
        assert next(consumer).offset == first.offset
        consumer.commit()
    finally:
        consumer.close()
    attempts = [s.attributes["tracebridge.delivery.attempt"] for s in by_name(spans, f"process {topic}")]
    assert attempts == [1, 2]


def test_poll_batch_is_one_receive_span_linked_to_every_record(instrumented, spans, broker, bootstrap):
    topic = unique("orders")
    broker.create_topics([topic], partitions=1)
    running = producer(bootstrap)
    for number in range(3):
        with tracer.start_as_current_span(f"request {number}"):
            running.send(topic, f"{number}".encode()).get(10)
    running.close()
    consumer = consumer_from_start(bootstrap, topic)
    try:
        records: list[object] = []
        for _ in range(20):
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
            if len(records) >= 3:
                break
        consumer.commit()
    finally:
        consumer.close()
    receives = by_name(spans, f"receive {topic}")
    linked = {link.context.span_id for receive in receives for link in receive.links}
    assert linked == {s.context.span_id for s in by_name(spans, f"send {topic}")}
    assert sum(r.attributes["messaging.batch.message_count"] for r in receives) == 3
    assert all(r.kind is SpanKind.CONSUMER and r.parent is None for r in receives)


def test_hostile_headers_never_raise_and_valid_ones_survive(instrumented, spans, broker, bootstrap):
    from tracebridge.messaging.kafka.kafka_python import KafkaPythonInstrumentor

    topic = unique("hostile")
    broker.create_topics([topic], partitions=1)
    valid = ("00-" + "c" * 32 + "-" + "d" * 16 + "-01").encode()
    hostile = [
        [("traceparent", b"\xff\xfe")],
        [("traceparent", valid), ("TRACEPARENT", valid)],
        [("tracestate", b"=" * 600), ("baggage", b"x" * 9000)],
        [("traceparent", valid), ("tracestate", b"\x00garbage")],
        [("tracebridge-attempt", b"99999999999"), ("traceparent", valid)],
    ]
    KafkaPythonInstrumentor().uninstrument()  # written by a plain client: ours would repair them
    running = producer(bootstrap)
    for number, headers in enumerate(hostile):
        running.send(topic, f"order {number}".encode(), headers=headers).get(10)
    running.close()
    KafkaPythonInstrumentor().instrument()
    consumer = consumer_from_start(bootstrap, topic)
    try:
        values = [next(consumer).value for _ in hostile]
        consumer.commit()
    finally:
        consumer.close()
    assert values == [f"order {n}".encode() for n in range(len(hostile))]
    processes = sorted(
        by_name(spans, f"process {topic}"), key=lambda s: s.attributes["messaging.kafka.offset"]
    )
    assert [s.attributes["tracebridge.context.source"] for s in processes] == [
        "none",
        "none",
        "none",
        "headers",
        "headers",
    ]
    assert processes[3].parent.trace_id == int("c" * 32, 16)
    assert processes[4].attributes["tracebridge.delivery.attempt"] == 1


def test_suppressed_instrumentation_sends_the_record_untouched(instrumented, spans, broker, bootstrap):
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    topic = unique("quiet")
    broker.create_topics([topic], partitions=1)
    running = producer(bootstrap)
    try:
        with tracer.start_as_current_span("request"), suppress_instrumentation():
            running.send(topic, b"x", headers=[("own", b"1")]).get(10)
    finally:
        running.close()
    assert by_name(spans, f"send {topic}") == []
    consumer = consumer_from_start(bootstrap, topic)
    try:
        record = next(consumer)
    finally:
        consumer.close()
    assert list(record.headers) == [("own", b"1")]  # no traceparent written


def test_uninstrument_restores_the_library(spans, broker, bootstrap):
    from tracebridge.messaging.kafka.kafka_python import KafkaPythonInstrumentor

    KafkaPythonInstrumentor().instrument()
    assert hasattr(kafka.KafkaProducer.send, "__wrapped__")
    KafkaPythonInstrumentor().uninstrument()
    for method in (kafka.KafkaProducer.send, kafka.KafkaConsumer.__next__, kafka.KafkaConsumer.poll):
        assert not hasattr(method, "__wrapped__")
    topic = unique("orders")
    running = producer(bootstrap)
    running.send(topic, b"x").get(10)
    running.close()
    assert by_name(spans, f"send {topic}") == []

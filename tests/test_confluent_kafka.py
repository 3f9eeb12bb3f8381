"""The span model of DESIGN §3 for confluent-kafka (librdkafka), against the real embedded broker."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import by_name, one, unique

confluent_kafka = pytest.importorskip("confluent_kafka")

tracer = trace.get_tracer("tests")
CONSUMER_TIMINGS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


@pytest.fixture
def instrumented(spans) -> Iterator[None]:
    from tracebridge.messaging.kafka.confluent_kafka import ConfluentKafkaInstrumentor

    ConfluentKafkaInstrumentor().instrument()
    yield
    ConfluentKafkaInstrumentor().uninstrument()


def producer(bootstrap: str, **config: object):
    return confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, **config})


def consumer_from_start(bootstrap: str, topic: str, group: str | None = None, **config: object):
    """A consumer of partition 0 from its first record, by assign() (no group join wait), in a
    group of its own: committing into a group another test's consumer joined is refused."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group or unique("confluent"),
            "enable.auto.commit": False,
            **CONSUMER_TIMINGS,
            **config,
        }
    )
    consumer.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
    return consumer


def poll_one(consumer, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            return message
    raise AssertionError("no record arrived")


def test_send_span_ends_with_the_delivery_report(instrumented, spans, broker, bootstrap):
    topic = unique("orders")
    broker.create_topics([topic], partitions=1)
    reports: list[tuple[object, int]] = []
    running = producer(bootstrap, **{"client.id": "order-service"})
    with tracer.start_as_current_span("request") as request:
        running.produce(
            topic, b'{"id": 1}', b"order-1", on_delivery=lambda e, m: reports.append((e, m.offset()))
        )
    assert by_name(spans, f"send {topic}") == []  # buffered, not yet acknowledged
    assert running.flush(10) == 0
    send = one(spans, f"send {topic}")
    assert reports == [(None, 0)]  # the application's callback still runs
    assert send.kind is SpanKind.PRODUCER
    assert send.parent.span_id == request.get_span_context().span_id
    attributes = dict(send.attributes)
    assert attributes["messaging.system"] == "kafka"
    assert attributes["messaging.operation.type"] == "send"
    assert attributes["messaging.destination.name"] == topic
    assert attributes["messaging.destination.partition.id"] == "0"
    assert attributes["messaging.kafka.offset"] == 0
    assert attributes["messaging.kafka.message.key"] == "order-1"
    assert attributes["messaging.message.body.size"] == 9
    assert attributes["messaging.client.id"] == "order-service"
    assert attributes["server.address"] == "127.0.0.1" and attributes["server.port"] == broker.port
    assert send.status.status_code is StatusCode.UNSET


def test_configured_delivery_callback_and_errors_only_are_honoured(instrumented, spans, broker, bootstrap):
    topic = unique("orders")
    broker.create_topics([topic], partitions=1)
    configured: list[object] = []
    only_errors: list[object] = []
    plain = producer(bootstrap, on_delivery=lambda e, m: configured.append((e, m.value())))
    quiet = producer(bootstrap, **{"on_delivery": only_errors.append, "delivery.report.only.error": True})
    plain.produce(topic, b"a")
    quiet.produce(topic, b"b")
    plain.flush(10)
    quiet.flush(10)
    assert configured == [(None, b"a")]
    assert only_errors == []  # success is not reported to an errors-only callback
    assert len(by_name(spans, f"send {topic}")) == 2  # but both sends were seen through to the ack
    assert all("messaging.kafka.offset" in s.attributes for s in by_name(spans, f"send {topic}"))


def test_delivery_failure_is_an_error_with_the_kafka_error_code(instrumented, spans, broker, bootstrap):
    topic = unique("orders")
    broker.create_topics([topic], partitions=1)
    errors: list[str] = []
    running = producer(bootstrap)
    running.produce(topic, b"x", partition=7, on_delivery=lambda e, m: errors.append(e.name()))
    running.flush(15)
    send = one(spans, f"send {topic}")
    assert errors == ["_UNKNOWN_PARTITION"]
    assert send.status.status_code is StatusCode.ERROR
    assert send.attributes["error.type"] == "_UNKNOWN_PARTITION"
    assert "messaging.kafka.offset" not in send.attributes


def test_send_refused_at_once_is_an_error_and_raises(instrumented, spans, broker, bootstrap):
    topic = unique("orders")
    running = producer(bootstrap, **{"message.max.bytes": 1000})
    with pytest.raises(confluent_kafka.KafkaException):
        running.produce(topic, b"x" * 5000)
    send = one(spans, f"send {topic}")
    assert send.status.status_code is StatusCode.ERROR
    assert send.attributes["error.type"] == "MSG_SIZE_TOO_LARGE"


def test_process_span_is_current_for_the_handler_until_the_next_poll(instrumented, spans, broker, bootstrap):
    topic, follow_up = unique("orders"), unique("inventory")
    broker.create_topics([topic, follow_up], partitions=1)
    with tracer.start_as_current_span("request"):
        running = producer(bootstrap)
        running.produce(topic, b"x", b"o-1")
        running.flush(10)
    group = unique("billing")
    consumer = consumer_from_start(bootstrap, topic, group)
    try:
        poll_one(consumer)
        with tracer.start_as_current_span("handler work"):
            pass
        running.produce(follow_up, b"y")  # a produce inside the handler
        running.flush(10)
        assert by_name(spans, f"process {topic}") == []  # still running: the handler isn't done
        consumer.poll(0.1)
    finally:
        consumer.close()
    send = one(spans, f"send {topic}")
    process = one(spans, f"process {topic}")
    assert process.kind is SpanKind.CONSUMER
    assert process.parent.span_id == send.context.span_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert one(spans, "handler work").parent.span_id == process.context.span_id
    assert one(spans, f"send {follow_up}").parent.span_id == process.context.span_id
    attributes = dict(process.attributes)
    assert attributes["messaging.consumer.group.name"] == group
    assert attributes["messaging.kafka.offset"] == 0
    assert attributes["messaging.kafka.message.key"] == "o-1"
    assert attributes["tracebridge.context.source"] == "headers"
    assert attributes["tracebridge.delivery.attempt"] == 1
    assert attributes["tracebridge.queue_wait_ms"] >= 0
    assert trace.get_current_span() is trace.INVALID_SPAN  # the consumer restored the context


@pytest.mark.parametrize("ending", ["commit", "store_offsets", "seek", "unsubscribe", "close"])
def test_each_done_call_ends_the_process_span(instrumented, spans, broker, bootstrap, ending):
    topic = unique("orders")
    broker.create_topics([topic], partitions=1)
    running = producer(bootstrap)
    running.produce(topic, b"x")
    running.flush(10)
    consumer = consumer_from_start(bootstrap, topic, **{"enable.auto.offset.store": False})
    try:
        message = poll_one(consumer)
        calls = {
            "commit": lambda: consumer.commit(message=message, asynchronous=False),
            "store_offsets": lambda: consumer.store_offsets(message=message),
            "seek": lambda: consumer.seek(confluent_kafka.TopicPartition(topic, 0, 0)),
            "unsubscribe": consumer.unsubscribe,
            "close": consumer.close,
        }
        calls[ending]()
        assert len(by_name(spans, f"process {topic}")) == 1
    finally:
        if ending != "close":
            consumer.close()


def test_handler_failure_closing_the_consumer_marks_the_span_failed(instrumented, spans, broker, bootstrap):
    topic = unique("orders")
    broker.create_topics([topic], partitions=1)
    running = producer(bootstrap)
    running.produce(topic, b"x")
    running.flush(10)
    consumer = consumer_from_start(bootstrap, topic)
    with pytest.raises(ValueError), consumer:
        poll_one(consumer)
        raise ValueError("bad order")
    process = one(spans, f"process {topic}")
    assert process.status.status_code is StatusCode.ERROR
    assert process.attributes["error.type"] == "ValueError"


def test_seek_back_is_a_redelivery_counted_as_attempt_two(instrumented, spans, broker, bootstrap):
    topic = unique("orders")
    broker.create_topics([topic], partitions=1)
    running = producer(bootstrap)
    running.produce(topic, b"x")
    running.flush(10)
    consumer = consumer_from_start(bootstrap, topic)
    try:
        first = poll_one(consumer)
        consumer.seek(confluent_kafka.TopicPartition(topic, 0, first.offset()))
        assert poll_one(consumer).offset() == first.offset()
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    attempts = [s.attributes["tracebridge.delivery.attempt"] for s in by_name(spans, f"process {topic}")]
    assert attempts == [1, 2]


def test_consume_batch_is_one_receive_span_linked_to_every_record(instrumented, spans, broker, bootstrap):
    topic = unique("orders")
    broker.create_topics([topic], partitions=1)
    running = producer(bootstrap)
    for number in range(3):
        with tracer.start_as_current_span(f"request {number}"):
            running.produce(topic, f"{number}".encode())
    running.flush(10)
    consumer = consumer_from_start(bootstrap, topic)
    try:
        batch: list[object] = []
        deadline = time.monotonic() + 15
        while len(batch) < 3 and time.monotonic() < deadline:
            batch.extend(consumer.consume(3 - len(batch), 1.0))
        assert len(batch) == 3
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    receives = by_name(spans, f"receive {topic}")
    sends = by_name(spans, f"send {topic}")
    assert all(r.kind is SpanKind.CONSUMER and r.parent is None for r in receives)
    linked = {link.context.span_id for receive in receives for link in receive.links}
    assert linked == {s.context.span_id for s in sends}
    assert sum(r.attributes["messaging.batch.message_count"] for r in receives) == 3
    assert by_name(spans, f"process {topic}") == []


def test_serializing_and_deserializing_clients_are_traced(instrumented, spans, broker, bootstrap):
    from confluent_kafka.serialization import StringDeserializer, StringSerializer

    topic = unique("orders")
    broker.create_topics([topic], partitions=1)
    running = confluent_kafka.SerializingProducer(
        {"bootstrap.servers": bootstrap, "value.serializer": StringSerializer()}
    )
    with tracer.start_as_current_span("request"):
        running.produce(topic, value="héllo")
    running.flush(10)
    consumer = confluent_kafka.DeserializingConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "strings",
            "value.deserializer": StringDeserializer(),
            **CONSUMER_TIMINGS,
        }
    )
    consumer.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
    try:
        assert poll_one(consumer).value() == "héllo"
    finally:
        consumer.close()
    send = one(spans, f"send {topic}")
    process = one(spans, f"process {topic}")
    assert send.attributes["messaging.kafka.offset"] == 0
    assert send.attributes["messaging.message.body.size"] == len("héllo".encode())
    assert process.parent.span_id == send.context.span_id


def test_injection_replaces_context_headers_of_a_forwarded_record(instrumented, spans, broker, bootstrap):
    topic = unique("orders")
    broker.create_topics([topic], partitions=1)
    stale = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    running = producer(bootstrap)
    running.produce(topic, b"x", headers=[("traceparent", stale), ("baggage", "a=b"), ("kept", b"1")])
    running.flush(10)
    consumer = consumer_from_start(bootstrap, topic)
    try:
        headers = poll_one(consumer).headers()
    finally:
        consumer.close()
    names = [name for name, _ in headers]
    assert names.count("traceparent") == 1 and "baggage" not in names and "kept" in names
    send = one(spans, f"send {topic}")
    assert dict(headers)["traceparent"].decode().split("-")[2] == f"{send.context.span_id:016x}"


def test_hostile_headers_never_raise_and_valid_ones_survive(instrumented, spans, broker, bootstrap):
    topic = unique("hostile")
    broker.create_topics([topic], partitions=1)
    valid = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    hostile = [
        [("traceparent", b"\xff\xfe")],
        [("traceparent", valid.encode()), ("traceparent", valid.encode())],  # duplicated: new trace
        [("traceparent", None), ("tracestate", b"=" * 600)],
        [("baggage", b"x" * 9000)],
        [("traceparent", valid.encode()), ("tracestate", b"\x00\x01garbage")],  # valid parent survives
        [("tracebridge-attempt", b"-7"), ("traceparent", valid.encode())],
    ]
    raw = confluent_kafka.Consumer  # records written with the plain client: our producer would fix them
    from tracebridge.messaging.kafka import confluent_kafka as adapter

    plain = adapter._ORIGINALS["Producer"]({"bootstrap.servers": bootstrap})
    for number, headers in enumerate(hostile):
        plain.produce(topic, f"order {number}".encode(), headers=headers)
    plain.flush(10)
    consumer = consumer_from_start(bootstrap, topic)
    assert isinstance(consumer, raw)
    try:
        values = [poll_one(consumer).value() for _ in hostile]
        consumer.poll(0.1)
    finally:
        consumer.close()
    assert values == [f"order {n}".encode() for n in range(len(hostile))]
    processes = sorted(
        by_name(spans, f"process {topic}"), key=lambda s: s.attributes["messaging.kafka.offset"]
    )
    sources = [s.attributes["tracebridge.context.source"] for s in processes]
    assert sources == ["none", "none", "none", "none", "headers", "headers"]
    assert processes[4].parent.trace_id == int("a" * 32, 16)
    assert processes[5].attributes["tracebridge.delivery.attempt"] == 1


def test_suppressed_instrumentation_sends_the_record_untouched(instrumented, spans, broker, bootstrap):
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    topic = unique("orders")
    broker.create_topics([topic], partitions=1)
    running = producer(bootstrap)
    with tracer.start_as_current_span("request"), suppress_instrumentation():
        running.produce(topic, b"x")
    running.flush(10)
    consumer = consumer_from_start(bootstrap, topic)
    try:
        assert poll_one(consumer).headers() is None
    finally:
        consumer.close()
    assert by_name(spans, f"send {topic}") == []
    assert one(spans, f"process {topic}").attributes["tracebridge.context.source"] == "none"


def test_uninstrument_restores_the_library(spans, broker, bootstrap):
    from tracebridge.messaging.kafka.confluent_kafka import ConfluentKafkaInstrumentor

    originals = (confluent_kafka.Producer, confluent_kafka.Consumer, confluent_kafka.SerializingProducer)
    ConfluentKafkaInstrumentor().instrument()
    assert confluent_kafka.Producer is not originals[0]
    ConfluentKafkaInstrumentor().uninstrument()
    assert (
        confluent_kafka.Producer,
        confluent_kafka.Consumer,
        confluent_kafka.SerializingProducer,
    ) == originals
    topic = unique("orders")
    running = producer(bootstrap)
    running.produce(topic, b"x")
    running.flush(10)
    assert by_name(spans, f"send {topic}") == []


def test_instrumenting_after_the_application_imported_the_classes_says_so(spans, caplog):
    import types

    from tracebridge.messaging.kafka.confluent_kafka import ConfluentKafkaInstrumentor

    application = types.ModuleType("billing_app")
    application.Producer = confluent_kafka.Producer  # `from confluent_kafka import Producer`, too early
    sys.modules["billing_app"] = application
    try:
        with caplog.at_level(logging.WARNING, logger="tracebridge"):
            ConfluentKafkaInstrumentor().instrument()
        ConfluentKafkaInstrumentor().uninstrument()
    finally:
        del sys.modules["billing_app"]
    assert any("billing_app.Producer" in record.getMessage() for record in caplog.records)


def test_record_never_reported_ends_unacknowledged_at_exit(collector, tmp_path):
    """A program that exits without flushing: librdkafka drops the record silently; its span
    must still reach the collector, as an unacknowledged send."""
    app = tmp_path / "fire_and_forget.py"
    app.write_text(
        textwrap.dedent(
            """
            from confluent_kafka import Producer
            producer = Producer({"bootstrap.servers": "127.0.0.1:1", "log_level": 0})
            producer.produce("orders", b"lost")
            """
        )
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEBRIDGE_"))},
        "OTEL_SERVICE_NAME": "fire-and-forget",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
    }
    command = [sys.executable, "-m", "tracebridge", "run", "--", sys.executable, str(app)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 10
    while collector.store.span_count() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    (send,) = [s for s in collector.store.spans_between(0) if s.name == "send orders"]
    assert send.status == "ERROR"
    assert send.attributes["error.type"] == "tracebridge.unacknowledged"
    assert send.attributes["tracebridge.send.acknowledged"] is False


async def aio_poll_one(consumer, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = await consumer.poll(0.5)
        if message is not None and message.error() is None:
            return message
    raise AssertionError("no record arrived")


async def test_asyncio_clients_carry_the_context_through_their_thread_pool(
    instrumented, spans, broker, bootstrap
):
    from confluent_kafka.aio import AIOConsumer, AIOProducer

    topic = unique("orders")
    broker.create_topics([topic], partitions=1)
    running = AIOProducer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    try:
        with tracer.start_as_current_span("request") as request:
            delivered = await running.produce(topic, value=b'{"order_id": "o-1"}', key=b"o-1")
            await running.flush()
            message = await delivered
    finally:
        await running.close()
    send = one(spans, f"send {topic}")
    assert send.parent.span_id == request.get_span_context().span_id
    assert send.attributes["tracebridge.context.carrier"] == "envelope"
    assert send.attributes["messaging.kafka.offset"] == message.offset() == 0
    consumer = AIOConsumer({"bootstrap.servers": bootstrap, "group.id": "aio", **CONSUMER_TIMINGS})
    try:
        await consumer.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
        record = await aio_poll_one(consumer)
        assert b'"trace_context"' in record.value() and b'"order_id":"o-1"' in record.value()
        with tracer.start_as_current_span("handler work"):
            pass
        await consumer.commit(message=record, asynchronous=False)
        assert len(by_name(spans, f"process {topic}")) == 1  # commit ended it
    finally:
        await consumer.close()
    process = one(spans, f"process {topic}")
    assert process.parent.span_id == send.context.span_id
    assert process.attributes["tracebridge.context.source"] == "envelope"
    assert process.attributes["messaging.consumer.group.name"] == "aio"
    assert one(spans, "handler work").parent.span_id == process.context.span_id


async def test_asyncio_producer_sends_a_record_without_room_untouched_and_warns_once(
    instrumented, spans, broker, bootstrap, caplog
):
    from confluent_kafka.aio import AIOProducer

    topic = unique("plain")
    broker.create_topics([topic], partitions=1)
    running = AIOProducer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    try:
        with caplog.at_level(logging.WARNING, logger="tracebridge"):
            futures = [await running.produce(topic, value=b"not json") for _ in range(2)]
            await running.flush()
            for future in futures:
                await future
    finally:
        await running.close()
    sends = by_name(spans, f"send {topic}")
    assert [s.attributes["tracebridge.context.carrier"] for s in sends] == ["none", "none"]
    assert sorted(s.attributes["messaging.kafka.offset"] for s in sends) == [0, 1]
    warnings = [r.getMessage() for r in caplog.records if topic in r.getMessage()]
    assert len(warnings) == 1
    consumer = consumer_from_start(bootstrap, topic)
    try:
        assert poll_one(consumer).value() == b"not json"
    finally:
        consumer.close()

"""The span model of DESIGN §3 for aiokafka, against the real embedded broker."""

from __future__ import annotations

import asyncio
import time

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import CONSUMER_TIMINGS, one, read_topic, unique

tracer = trace.get_tracer("tests")


def consumer_for(bootstrap: str, topic: str, group: str | None = None, **extra: object) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group or unique("group"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **CONSUMER_TIMINGS,
        **extra,
    )


async def test_send_span_is_producer_child_of_current_span_with_offset(producer, spans, broker):
    topic = unique("orders")
    broker.create_topics([topic], partitions=1)
    with tracer.start_as_current_span("request") as request:
        metadata = await producer.send_and_wait(topic, b'{"id": 1}', key=b"order-1")
    send = one(spans, f"send {topic}")
    assert send.kind is SpanKind.PRODUCER
    assert send.parent is not None and send.parent.span_id == request.get_span_context().span_id
    assert send.context.trace_id == request.get_span_context().trace_id
    attributes = dict(send.attributes)
    assert attributes["messaging.system"] == "kafka"
    assert attributes["messaging.operation.type"] == "send"
    assert attributes["messaging.operation.name"] == "send"
    assert attributes["messaging.destination.name"] == topic
    assert attributes["messaging.destination.partition.id"] == "0"
    assert attributes["messaging.kafka.offset"] == metadata.offset
    assert attributes["messaging.kafka.message.key"] == "order-1"
    assert attributes["messaging.message.body.size"] == 9
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == broker.port
    assert attributes["messaging.client.id"].startswith("aiokafka")
    assert send.status.status_code is StatusCode.UNSET


async def test_process_span_is_child_of_send_and_links_to_it(producer, spans, bootstrap):
    topic = unique("orders")
    with tracer.start_as_current_span("request"):
        await producer.send_and_wait(topic, b"x")
    consumer = consumer_for(bootstrap, topic, group="billing")
    await consumer.start()
    try:
        record = await consumer.getone()
        assert record.value == b"x"
    finally:
        await consumer.stop()
    send = one(spans, f"send {topic}")
    process = one(spans, f"process {topic}")
    assert process.kind is SpanKind.CONSUMER
    assert process.parent.span_id == send.context.span_id
    assert process.context.trace_id == send.context.trace_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert dict(process.links[0].attributes) == {"tracebridge.link.type": "follows_from"}
    attributes = dict(process.attributes)
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.consumer.group.name"] == "billing"
    assert attributes["messaging.kafka.offset"] == 0
    assert attributes["tracebridge.context.source"] == "headers"
    assert attributes["tracebridge.delivery.attempt"] == 1
    assert attributes["tracebridge.queue_wait_ms"] >= 0
    assert "tracebridge.clock_skew" not in attributes


async def test_handler_http_call_and_send_are_children_of_process_span(producer, spans, bootstrap):
    topic, next_topic = unique("orders"), unique("shipments")
    with tracer.start_as_current_span("request"):
        await producer.send_and_wait(topic, b"x")
    consumer = consumer_for(bootstrap, topic)
    await consumer.start()
    try:
        async for _record in consumer:
            with tracer.start_as_current_span("handler work"):
                await asyncio.sleep(0.01)
            await producer.send_and_wait(next_topic, b"y")
            break
    finally:
        await consumer.stop()
    process = one(spans, f"process {topic}")
    work = one(spans, "handler work")
    forwarded = one(spans, f"send {next_topic}")
    assert work.parent.span_id == process.context.span_id
    assert forwarded.parent.span_id == process.context.span_id
    # the process span covers the handler: it ends after the work it contains
    assert process.end_time >= forwarded.end_time
    assert trace.get_current_span() is trace.INVALID_SPAN or not trace.get_current_span().is_recording()


async def test_handler_exception_marks_process_span_error(producer, spans, bootstrap):
    topic = unique("orders")
    await producer.send_and_wait(topic, b"poison")
    consumer = consumer_for(bootstrap, topic)
    await consumer.start()
    try:
        try:
            async for _record in consumer:
                raise ValueError("cannot parse order")
        finally:
            await consumer.stop()
    except ValueError:
        pass
    process = one(spans, f"process {topic}")
    assert process.status.status_code is StatusCode.ERROR
    assert process.attributes["error.type"] == "ValueError"
    assert [event.name for event in process.events] == ["exception"]
    assert process.events[0].attributes["exception.message"] == "cannot parse order"


async def test_http_call_in_handler_carries_process_context(producer, spans, bootstrap):
    """The handler's outgoing HTTP request carries the process span as traceparent."""
    seen: list[str] = []

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        seen.extend(v.decode() for k, v in scope["headers"] if k == b"traceparent")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    import uvicorn

    from tracebridge.broker import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor().instrument()
    topic = unique("orders")
    try:
        await producer.send_and_wait(topic, b"x")
        consumer = consumer_for(bootstrap, topic)
        await consumer.start()
        try:
            await consumer.getone()
            async with httpx.AsyncClient() as client:
                response = await client.post(f"http://127.0.0.1:{port}/sendEmail")
            assert response.status_code == 200
            before_commit = time.time_ns()
            await consumer.commit()
            after_commit = time.time_ns()
        finally:
            await consumer.stop()
    finally:
        HTTPXClientInstrumentor().uninstrument()
        server.should_exit = True
        await serving
    process = one(spans, f"process {topic}")
    client_span = one(spans, "POST")
    assert client_span.kind is SpanKind.CLIENT
    assert client_span.parent.span_id == process.context.span_id
    # sampled (0x01) and random trace id (0x02, W3C Level 2) both survive the hop
    assert seen == [f"00-{client_span.context.trace_id:032x}-{client_span.context.span_id:016x}-03"]
    # commit ended the process span first, so the commit's broker round trip is not inside it:
    # the span ended in the first half of the call, not when it returned
    assert before_commit <= process.end_time <= before_commit + (after_commit - before_commit) // 2


async def test_uninstrumented_producer_is_untouched(bootstrap, broker, spans):
    from tracebridge.messaging.kafka.aiokafka import AIOKafkaInstrumentor

    AIOKafkaInstrumentor().instrument()
    AIOKafkaInstrumentor().uninstrument()  # and back: the library is as it was
    topic = unique("plain")
    broker.create_topics([topic], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        with tracer.start_as_current_span("request"):
            await producer.send_and_wait(topic, b"x", headers=[("own", b"1")])
    finally:
        await producer.stop()
    assert [s.name for s in spans.get_finished_spans()] == ["request"]
    (record,) = await read_topic(bootstrap, topic, 1)
    assert list(record.headers) == [("own", b"1")]  # no traceparent written


async def test_suppressed_instrumentation_sends_the_record_untouched(producer, spans, broker, bootstrap):
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    topic = unique("quiet")
    broker.create_topics([topic], partitions=1)
    with tracer.start_as_current_span("request"), suppress_instrumentation():
        await producer.send_and_wait(topic, b"x", headers=[("own", b"1")])
    with tracer.start_as_current_span("request"):  # and the next record, outside it, is traced
        await producer.send_and_wait(topic, b"y")
    assert [s.name for s in spans.get_finished_spans()] == ["request", f"send {topic}", "request"]
    first, second = await read_topic(bootstrap, topic, 2)
    assert list(first.headers) == [("own", b"1")]  # no traceparent written
    assert [key for key, _ in second.headers] == ["traceparent"]


async def test_send_refused_by_the_client_marks_send_span_error(bootstrap, spans, kafka_instrumented):
    from aiokafka.errors import MessageSizeTooLargeError

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=1024)
    await producer.start()
    topic = unique("orders")
    try:
        try:
            await producer.send_and_wait(topic, b"x" * 4096)
        except MessageSizeTooLargeError:
            pass
        else:
            raise AssertionError("the oversized record was accepted")
    finally:
        await producer.stop()
    send = one(spans, f"send {topic}")
    assert send.status.status_code is StatusCode.ERROR
    assert send.attributes["error.type"] == "MessageSizeTooLargeError"
    assert "messaging.kafka.offset" not in send.attributes


async def test_record_from_the_future_is_clock_skew_not_negative_wait(producer, spans, bootstrap):
    import time

    topic = unique("orders")
    await producer.send_and_wait(topic, b"x", timestamp_ms=int(time.time() * 1000) + 60_000)
    consumer = consumer_for(bootstrap, topic)
    await consumer.start()
    try:
        await consumer.getone()
    finally:
        await consumer.stop()
    process = one(spans, f"process {topic}")
    assert process.attributes["tracebridge.clock_skew"] is True
    assert process.attributes["tracebridge.queue_wait_ms"] == 0


async def test_failed_handler_without_commit_is_redelivered_as_attempt_two(producer, spans, bootstrap):
    topic, group = unique("orders"), unique("inventory")
    await producer.send_and_wait(topic, b"poison")
    for _ in range(2):  # the worker crashes on the record, then restarts
        consumer = consumer_for(bootstrap, topic, group=group)
        try:
            async with consumer:
                async for _record in consumer:
                    raise RuntimeError("stock service unavailable")
        except RuntimeError:
            pass
    first, second = sorted(
        (s for s in spans.get_finished_spans() if s.name == f"process {topic}"), key=lambda s: s.start_time
    )
    assert [
        first.attributes["tracebridge.delivery.attempt"],
        second.attributes["tracebridge.delivery.attempt"],
    ] == [1, 2]
    assert first.status.status_code is second.status.status_code is StatusCode.ERROR
    assert first.parent.span_id == second.parent.span_id == one(spans, f"send {topic}").context.span_id

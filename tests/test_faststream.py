"""A FastStream app on Kafka — its aiokafka and its confluent broker — is one correct trace,
with and without FastStream's own ``KafkaTelemetryMiddleware``: one send and one process span
per record, the handler's work and its publish inside the process span."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from tests.conftest import PROVIDER, one, unique, wait_for_spans
from tracebridge.instrument import instrument

pytest.importorskip("faststream")

tracer = trace.get_tracer("tests")
CLIENT = {"aiokafka": "aiokafka", "confluent": "confluent_kafka"}


@pytest.fixture
def traced(request) -> Iterator[str]:
    kind = request.param
    assert set(instrument(only=(CLIENT[kind], "faststream"))) == {CLIENT[kind], "faststream"}
    yield kind
    from tracebridge.messaging.kafka.aiokafka import AIOKafkaInstrumentor
    from tracebridge.messaging.kafka.confluent_kafka import ConfluentKafkaInstrumentor
    from tracebridge.messaging.kafka.faststream import FastStreamInstrumentor

    for instrumentor in (FastStreamInstrumentor(), AIOKafkaInstrumentor(), ConfluentKafkaInstrumentor()):
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()


def faststream_broker(kind: str, bootstrap: str, middleware: bool):
    if kind == "aiokafka":
        from faststream.kafka import KafkaBroker
        from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
    else:
        from faststream.confluent import KafkaBroker
        from faststream.confluent.opentelemetry import KafkaTelemetryMiddleware
    middlewares = [KafkaTelemetryMiddleware(tracer_provider=PROVIDER)] if middleware else []
    return KafkaBroker(bootstrap, middlewares=middlewares, logger=None)


@pytest.mark.parametrize("traced", ["aiokafka", "confluent"], indirect=True)
@pytest.mark.parametrize("middleware", [False, True], ids=["plain", "with-telemetry-middleware"])
async def test_faststream_app_is_one_trace_with_one_span_per_record(
    traced, middleware, broker, bootstrap, spans
):
    orders, shipments = unique("fs-orders"), unique("fs-shipments")
    broker.create_topics([orders, shipments], partitions=1)
    app = faststream_broker(traced, bootstrap, middleware)
    shipped = asyncio.Event()
    options = {
        "auto_offset_reset": "earliest",
        "group_id": unique("fs-group"),
        # Tansu answers a JoinGroup after about half the session timeout (DESIGN §4)
        "session_timeout_ms": 3000 if traced == "aiokafka" else 6000,
        "heartbeat_interval_ms": 500,
    }

    @app.subscriber(orders, **options)
    async def on_order(body: dict) -> None:
        with tracer.start_as_current_span("reserve stock"):
            pass
        await app.publish({"id": body["id"]}, shipments)

    @app.subscriber(shipments, **{**options, "group_id": unique("fs-group")})
    async def on_shipment(body: dict) -> None:
        shipped.set()

    async with app:
        await app.start()
        with tracer.start_as_current_span("request") as request:
            await app.publish({"id": "o-1"}, orders)
        await asyncio.wait_for(shipped.wait(), 60)
        await wait_for_spans(spans, f"process {shipments}", timeout=15)

    producers = [s for s in spans.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    consumers = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert sorted(s.name for s in producers) == sorted([f"send {orders}", f"send {shipments}"])
    assert sorted(s.name for s in consumers) == sorted([f"process {orders}", f"process {shipments}"])
    send_orders, process_orders = one(spans, f"send {orders}"), one(spans, f"process {orders}")
    send_shipments, process_shipments = one(spans, f"send {shipments}"), one(spans, f"process {shipments}")
    assert send_orders.parent.span_id == request.get_span_context().span_id
    assert process_orders.parent.span_id == send_orders.context.span_id
    assert one(spans, "reserve stock").parent.span_id == process_orders.context.span_id
    assert send_shipments.parent.span_id == process_orders.context.span_id
    assert process_shipments.parent.span_id == send_shipments.context.span_id
    assert {s.context.trace_id for s in [*producers, *consumers]} == {request.get_span_context().trace_id}
    assert send_orders.attributes["messaging.kafka.offset"] == 0

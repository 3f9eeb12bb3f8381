"""Records from a fleet half-way through a migration, through the real broker: a record that
carries only B3 (single or multi) or only Jaeger's ``uber-trace-id`` continues its trace, whatever
``OTEL_PROPAGATORS`` says for injection, and ``tracebridge.context.source`` says which was read."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry import propagate

from tests.conftest import by_name, read_topic, unique
from tests.test_kafka_modes import instrumented
from tracebridge.sdk import build_propagator

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
RECORDS = {  # value -> (headers, source the consumer must report)
    b"w3c": ([("traceparent", f"00-{TRACE}-{SPAN}-01".encode())], "headers"),
    b"b3-single": ([("b3", f"{TRACE}-{SPAN}-1".encode())], "b3"),
    b"b3-multi": (
        [("X-B3-TraceId", TRACE.encode()), ("X-B3-SpanId", SPAN.encode()), ("X-B3-Sampled", b"1")],
        "b3multi",
    ),
    b"jaeger": (
        [("uber-trace-id", f"{TRACE}:{SPAN}:0:1".encode()), ("uberctx-order.id", b"o-jaeger")],
        "jaeger",
    ),
    # W3C wins over B3 when both are there; a broken W3C header falls back to the B3 one.
    b"w3c-and-b3": (
        [("traceparent", f"00-{TRACE}-{SPAN}-01".encode()), ("b3", f"{TRACE}-{'1' * 16}-1".encode())],
        "headers",
    ),
    b"bad-w3c-good-b3": ([("traceparent", b"00-nonsense"), ("b3", f"{TRACE}-{SPAN}-1".encode())], "b3"),
    b"bad-b3": ([("b3", b"not-a-context")], "none"),
}


@pytest.fixture(params=[("tracecontext", "baggage"), ("b3multi",), ("jaeger",)], ids=lambda p: "+".join(p))
def injection(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever the service injects with, it reads every format."""
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(build_propagator(request.param))
    yield
    propagate.set_global_textmap(before)


async def test_b3_and_jaeger_only_records_continue_the_trace(bootstrap, broker, spans, injection) -> None:
    topic = unique("interop")
    broker.create_topics([topic], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value, (headers, _source) in RECORDS.items():
            await producer.send_and_wait(topic, value, headers=headers)
    finally:
        await producer.stop()
    with instrumented():
        records = await read_topic(bootstrap, topic, len(RECORDS))
    assert [record.value for record in records] == list(RECORDS)  # nothing lost
    processes = sorted(
        by_name(spans, f"process {topic}"), key=lambda s: s.attributes["messaging.kafka.offset"]
    )
    assert len(processes) == len(RECORDS)
    for span, (value, (_headers, source)) in zip(processes, RECORDS.items(), strict=True):
        assert span.attributes["tracebridge.context.source"] == source, value
        if source == "none":
            assert span.parent is None and span.attributes["tracebridge.context.problem"] == "invalid-b3"
            continue
        assert span.parent is not None, value
        assert f"{span.parent.trace_id:032x}" == TRACE and f"{span.parent.span_id:016x}" == SPAN, value
        assert f"{span.context.trace_id:032x}" == TRACE  # one trace across the migration
    jaeger = processes[list(RECORDS).index(b"jaeger")]
    assert jaeger.attributes["order.id"] == "o-jaeger"  # uberctx-* baggage is business keys too

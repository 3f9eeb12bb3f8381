"""An order in flight: which expected consumer group has not processed its record, asked of the
real broker — stopped, piling up, restarted, skipped without context, unreachable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from opentelemetry import trace

from tests.conftest import RunningCollector, unique
from tracebridge.analysis.doctor import NEVER_PROCESSED, doctor
from tracebridge.analysis.kafka_offsets import KafkaOffsets
from tracebridge.analysis.model import SpanRecord, Trace
from tracebridge.analysis.pending import (
    NO_CONTEXT,
    PROCESSED,
    UNKNOWN,
    WAITING,
    Delivery,
    ExpectedGroup,
    deliveries,
    expected_groups,
)
from tracebridge.broker import free_port
from tracebridge.collector.app import CollectorConfig
from tracebridge.otlp import parse_protobuf, records
from tracebridge.otlp_wire import encode_spans


def recorded(spans) -> list[SpanRecord]:
    """The exported spans as the analysis reads them (through the real OTLP encoding)."""
    return records(parse_protobuf(encode_spans(spans.get_finished_spans())))


async def consume_and_commit(bootstrap: str, topic: str, group: str, count: int) -> None:
    """``count`` records processed by ``group`` (from its committed offset), each committed."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        for _ in range(count):
            await consumer.getone()
            await consumer.commit()
    finally:
        await consumer.stop()


async def send_one(producer: AIOKafkaProducer, topic: str, value: bytes) -> None:
    # one record a batch: the embedded broker's end offset counts batches' base offsets
    await producer.send_and_wait(topic, value, partition=0)


@pytest.fixture
def topic(broker) -> str:
    name = unique("shipments")
    broker.create_topics([name], partitions=1)
    return name


async def test_a_stopped_group_is_named_with_its_lag_then_the_restart_clears_it(
    bootstrap, topic, spans, kafka_instrumented, producer, tmp_path
) -> None:
    group = unique("logistics")
    await send_one(producer, topic, b"first")
    await consume_and_commit(bootstrap, topic, group, 1)  # the group works, then stops
    expected = expected_groups(recorded(spans))
    assert expected == {topic: [ExpectedGroup(topic, group, ("tests",))]}

    for number in range(4):  # records pile up behind the stopped group
        await send_one(producer, topic, f"filler {number}".encode())
    with trace.get_tracer("test").start_as_current_span("createOrder") as root:
        await send_one(producer, topic, b"the order")
    order_trace = root.get_span_context().trace_id
    before = time.time()
    offsets = KafkaOffsets(bootstrap)

    def story() -> Trace:
        return Trace(span for span in recorded(spans) if span.trace_id == f"{order_trace:032x}")

    (waiting,) = deliveries(story(), expected, offsets)
    assert (waiting.state, waiting.topic, waiting.partition, waiting.offset, waiting.group) == (
        WAITING,
        topic,
        0,
        5,
        group,
    )
    assert (waiting.lag, waiting.ahead) == (5, 4)
    assert waiting.oldest_wait_s is not None and 0 <= waiting.oldest_wait_s <= time.time() - before + 30
    assert waiting.text.startswith(
        f"waiting in `{topic}` partition 0 (offset 5) for group `{group}` (tests): "
        "5 records behind, 4 ahead of this one, oldest unprocessed "
    )

    # The same answer from the command line and from the collector's API (what the UI shows).
    trace_id = f"{order_trace:032x}"
    with RunningCollector(tmp_path / "traces.db", CollectorConfig(offsets=offsets)) as collector:
        collector.store.write([parse_protobuf(encode_spans(spans.get_finished_spans()))])
        command = [
            sys.executable,
            "-m",
            "tracebridge",
            "diagnose",
            trace_id,
            "--source",
            str(collector.store.path),
        ]
        cli = subprocess.run(
            [*command, "--kafka", bootstrap, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert cli.returncode == 0, cli.stderr
        answer = json.loads(cli.stdout)
        expected_headline = (
            f"in flight: waiting in `{topic}` partition 0 (offset 5) for group `{group}` (tests)"
        )
        assert answer["headline"].startswith(expected_headline + ": 5 records behind, 4 ahead of this one")
        assert [(d["state"], d["lag"], d["text"]) for d in answer["deliveries"]] == [
            (WAITING, 5, answer["headline"].removeprefix("in flight: "))
        ]
        wide = {**os.environ, "COLUMNS": "400"}  # one line per answer
        without_broker = subprocess.run(command, capture_output=True, text=True, timeout=60, env=wide)
        assert f"verdict  not processed by group `{group}` (tests) in this trace" in without_broker.stdout
        assert "no broker to ask (--kafka)" in without_broker.stdout
        api = httpx.get(f"{collector.url}/api/traces/{trace_id}/diagnosis", timeout=30).json()
        assert api["headline"].startswith(expected_headline)

    # The doctor: five records sent and never processed, the group that should have named, and
    # where it stands on the latest of them.
    (lost,) = doctor(recorded(spans), time.time_ns(), unprocessed_after_s=0, offsets=offsets)
    assert (lost.symptom, lost.topic, lost.producer, lost.consumer, lost.count) == (
        NEVER_PROCESSED,
        topic,
        "tests",
        "tests",
        5,
    )
    assert lost.example_trace_id == trace_id
    assert lost.reason.startswith(
        f"waiting in `{topic}` partition 0 (offset 5) for group `{group}` (tests): 5 records behind"
    )
    (unasked,) = doctor(recorded(spans), time.time_ns(), unprocessed_after_s=0)
    assert unasked.reason == f"group `{group}` has not processed it"

    await consume_and_commit(bootstrap, topic, group, 5)  # the group restarts and catches up
    (done,) = deliveries(story(), expected, offsets)
    assert (done.state, done.text) == (PROCESSED, f"processed by group `{group}` (tests)")


async def test_a_group_past_the_record_without_its_span_is_a_broken_chain(
    bootstrap, topic, spans, kafka_instrumented, producer
) -> None:
    group = unique("notification")
    with trace.get_tracer("test").start_as_current_span("createOrder") as root:
        await send_one(producer, topic, b"the order")
    # Something in the group processed and committed it, but no span of its continued the trace
    # (an uninstrumented consumer, a copy of the record without headers): offsets moved anyway.
    from confluent_kafka import Consumer
    from confluent_kafka import TopicPartition as ConfluentPartition

    plain = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        plain.commit(offsets=[ConfluentPartition(topic, 0, 1)], asynchronous=False)
    finally:
        plain.close()
    story = Trace(s for s in recorded(spans) if s.trace_id == f"{root.get_span_context().trace_id:032x}")
    expected = {topic: [ExpectedGroup(topic, group, ("notification-worker",))]}
    (broken,) = deliveries(story, expected, KafkaOffsets(bootstrap))
    assert broken.state == NO_CONTEXT
    assert broken.text == (
        f"processed by group `{group}` (notification-worker) without trace context: its committed "
        f"offset on `{topic}` partition 0 is past offset 0, but no span of it continues this trace"
    )


async def test_an_unreachable_or_absent_broker_answers_unknown_and_says_why(
    topic, spans, kafka_instrumented, producer
) -> None:
    with trace.get_tracer("test").start_as_current_span("createOrder"):
        await send_one(producer, topic, b"the order")
    story = Trace(recorded(spans))
    expected = {topic: [ExpectedGroup(topic, "logistics", ("logistics-worker",))]}
    dead = f"127.0.0.1:{free_port()}"
    (unreachable,) = deliveries(story, expected, KafkaOffsets(dead, timeout_s=1.0))
    assert unreachable.state == UNKNOWN
    assert f"broker {dead} did not answer for group 'logistics'" in unreachable.reason
    (no_broker,) = deliveries(story, expected, None)
    assert (no_broker.state, no_broker.reason) == (UNKNOWN, "no broker to ask (--kafka)")


def test_expected_groups_come_from_consumer_spans_only() -> None:
    def span(name: str, kind: str, service: str, **attributes: object) -> SpanRecord:
        return SpanRecord(
            trace_id="1" * 32,
            span_id=f"{abs(hash((name, service))) % (1 << 60):016x}",
            parent_span_id=None,
            name=name,
            kind=kind,
            start_ns=1,
            end_ns=2,
            service=service,
            status="UNSET",
            attributes=attributes,
        )

    found = expected_groups(
        [
            span("send orders", "PRODUCER", "order", **{"messaging.destination.name": "orders"}),
            span(
                "process orders",
                "CONSUMER",
                "inventory-worker",
                **{"messaging.destination.name": "orders", "messaging.consumer.group.name": "inventory"},
            ),
            span(
                "process orders",
                "CONSUMER",
                "inventory-worker-2",
                **{"messaging.destination.name": "orders", "messaging.consumer.group.name": "inventory"},
            ),
            # a consumer span without a group: no group to expect
            span("process orders", "CONSUMER", "audit", **{"messaging.destination.name": "orders"}),
        ]
    )
    workers = ("inventory-worker", "inventory-worker-2")
    assert found == {"orders": [ExpectedGroup("orders", "inventory", workers)]}


def test_delivery_text_for_a_group_that_never_committed() -> None:
    waiting = Delivery("orders", 1, 7, "billing", ("billing-worker",), WAITING, "ab" * 8, oldest_wait_s=48.2)
    assert waiting.text == (
        "waiting in `orders` partition 1 (offset 7) for group `billing` (billing-worker): "
        "oldest unprocessed 48 s"
    )


def test_several_records_in_flight_are_all_listed_under_the_first() -> None:
    from rich.console import Console

    from tracebridge.analysis.diagnosis import diagnose
    from tracebridge.render.report import diagnosis_view

    def send(span_id: str, topic: str, offset: int, start: int) -> SpanRecord:
        attributes = {
            "messaging.destination.name": topic,
            "messaging.destination.partition.id": "0",
            "messaging.kafka.offset": offset,
            "messaging.operation.type": "send",
        }
        return SpanRecord(
            "1" * 32,
            span_id,
            None,
            f"send {topic}",
            "PRODUCER",
            start,
            start + 5,
            "order",
            attributes=attributes,
        )

    story = Trace([send("a" * 16, "orders", 3, 1), send("b" * 16, "payments", 9, 2)])
    found = [
        Delivery("orders", 0, 3, "inventory", ("inventory-worker",), WAITING, "a" * 16, ahead=0, lag=1),
        Delivery("orders", 0, 3, "audit", ("audit-worker",), PROCESSED, "a" * 16),
        Delivery("payments", 0, 9, "ledger", ("ledger-worker",), WAITING, "b" * 16, ahead=2, lag=3),
    ]
    diagnosis = diagnose(story, deliveries=found)
    assert diagnosis.headline == (
        "in flight: waiting in `orders` partition 0 (offset 3) for group `inventory` (inventory-worker): "
        "1 record behind; already processed by `audit` (+1 more)"
    )
    console = Console(record=True, width=400)
    console.print(diagnosis_view(diagnosis))
    lines = [line for line in console.export_text().splitlines() if line.startswith("pending")]
    assert lines == [
        f"pending  {found[0].text}",
        f"pending  {found[2].text}",
    ]


def test_a_record_counts_as_processed_by_a_child_of_its_send_or_a_span_of_the_same_record() -> None:
    """Both ways a group's consumer span is matched to a sent record: as a child of the send, or
    (link-only, a new trace) by topic, partition and offset. A child on another topic, and a
    consumer span without a group, match nothing."""

    def span(span_id: str, parent: str | None, kind: str, **attributes: object) -> SpanRecord:
        return SpanRecord("1" * 32, span_id, parent, "span", kind, 1, 2, "svc", attributes=attributes)

    def record(topic: str, offset: int, group: str | None = None) -> dict[str, object]:
        found: dict[str, object] = {
            "messaging.destination.name": topic,
            "messaging.destination.partition.id": "0",
            "messaging.kafka.offset": offset,
        }
        if group is not None:
            found["messaging.consumer.group.name"] = group
        return found

    spans = [
        span("a" * 16, None, "PRODUCER", **record("orders", 1)),
        span(  # a child that names no partition or offset (another client's span)
            "b" * 16,
            "a" * 16,
            "CONSUMER",
            **{"messaging.destination.name": "orders", "messaging.consumer.group.name": "billing"},
        ),
        span("c" * 16, "a" * 16, "CONSUMER", **record("audit", 9, "audit")),  # child, other topic
        span("d" * 16, None, "PRODUCER", **record("orders", 2)),
        span("e" * 16, None, "CONSUMER", **record("orders", 2, "billing")),  # same record, no parent
        span("f" * 16, None, "PRODUCER", **record("orders", 3)),
        span("0" * 15 + "1", "f" * 16, "CONSUMER", **record("orders", 3)),  # no group
    ]
    expected = {"orders": [ExpectedGroup("orders", "billing", ("svc",))]}
    found = {(d.offset, d.group): d.state for d in deliveries(Trace(spans), expected, None)}
    assert found == {(1, "billing"): PROCESSED, (2, "billing"): PROCESSED, (3, "billing"): UNKNOWN}

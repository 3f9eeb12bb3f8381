"""The verdict names the cause, on hand-built traces of each kind: a backlog, retries, a
consumer that did nothing (not started, paused, restarted), a slow synchronous call, a slow
network, a failure at its source through the hops it crossed."""

from __future__ import annotations

import itertools
from typing import Any

from tracebridge.analysis import causes
from tracebridge.analysis.diagnosis import diagnose
from tracebridge.analysis.model import EventRecord, SpanRecord, Trace

MS = 1_000_000
T0 = 1_764_000_000_000_000_000
_ids = itertools.count(1)
ORDER = "0" * 31 + "1"


def span(
    name: str,
    kind: str,
    service: str,
    start: float,
    end: float,
    parent: SpanRecord | None = None,
    **more: Any,
) -> SpanRecord:
    return SpanRecord(
        trace_id=more.pop("trace", parent.trace_id if parent else ORDER),
        span_id=f"{next(_ids):016x}",
        parent_span_id=parent.span_id if parent else None,
        name=name,
        kind=kind,
        start_ns=T0 + int(start * MS),
        end_ns=T0 + int(end * MS),
        service=service,
        status=more.pop("status", "UNSET"),
        attributes=more.pop("attributes", {}),
        events=tuple(more.pop("events", ())),
        resource=more.pop("resource", {"service.instance.id": f"{service}-1"}),
    )


def process(
    topic: str, service: str, start: float, end: float, parent: SpanRecord | None, **more: Any
) -> SpanRecord:
    attributes = {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.operation.type": "process",
        "messaging.destination.partition.id": "0",
        "messaging.consumer.group.name": service,
        **more.pop("attributes", {}),
    }
    return span(f"process {topic}", "CONSUMER", service, start, end, parent, attributes=attributes, **more)


def order_with_hop(
    topic: str, consumer: str, wait_until: float, processing: float
) -> tuple[list[SpanRecord], SpanRecord]:
    root = span("POST /orders", "SERVER", "order", 0, 20)
    send = span(
        f"send {topic}", "PRODUCER", "order", 10, 12, root, attributes={"messaging.destination.name": topic}
    )
    handled = process(
        topic, consumer, wait_until, wait_until + processing, send, attributes={"messaging.kafka.offset": 9}
    )
    return [root, send, handled], handled


def others(topic: str, service: str, starts: list[float], each: float, **more: Any) -> list[SpanRecord]:
    """Process spans of other orders' records (each its own trace)."""
    out = []
    for number, start in enumerate(starts):
        out.append(process(topic, service, start, start + each, None, trace=f"{number + 2:032x}", **more))
    return out


def nearby_of(spans: list[SpanRecord]):  # type: ignore[no-untyped-def]
    return lambda start, end, service: [
        s for s in spans if s.end_ns >= start and s.start_ns <= end and service in (None, s.service)
    ]


def test_a_queue_wait_behind_a_busy_consumer_is_a_backlog() -> None:
    spans, _ = order_with_hop("orders", "inventory-worker", 5612, 700)
    busy = others("orders", "inventory-worker", [12 + 700 * n for n in range(8)], 700)
    diagnosis = diagnose(Trace(spans), nearby=nearby_of(spans + busy))
    assert (
        diagnosis.verdict is not None
        and diagnosis.verdict.where == "queue wait on `orders` before inventory-worker"
    )
    cause = diagnosis.verdict.cause
    assert cause is not None and cause.kind == causes.BACKLOG and cause.service == "inventory-worker"
    assert cause.text == "backlog at inventory-worker: 700 ms per record, 8 records ahead"
    assert diagnosis.headline.endswith("— backlog at inventory-worker: 700 ms per record, 8 records ahead")
    assert diagnosis.to_json()["cause"]["kind"] == "backlog"


def test_without_nearby_spans_a_queue_wait_has_no_invented_cause() -> None:
    spans, _ = order_with_hop("orders", "inventory-worker", 5612, 700)
    diagnosis = diagnose(Trace(spans))
    assert diagnosis.verdict is not None and diagnosis.verdict.cause is None
    assert "—" not in diagnosis.headline


def test_a_record_retried_against_a_failing_dependency_names_it_and_the_backoff() -> None:
    root = span("POST /orders", "SERVER", "order", 0, 20)
    send = span(
        "send shipments",
        "PRODUCER",
        "order",
        10,
        12,
        root,
        attributes={"messaging.destination.name": "shipments"},
    )
    spans = [root, send]
    start = 20.0
    for attempt in range(1, 5):
        failed = attempt < 4
        handled = process(
            "shipments",
            "notification-worker",
            start,
            start + 30,
            send,
            status="ERROR" if failed else "UNSET",
            attributes={"messaging.kafka.offset": 3, "tracebridge.delivery.attempt": attempt},
        )
        call = span(
            "POST",
            "CLIENT",
            "notification-worker",
            start + 2,
            start + 25,
            handled,
            status="ERROR" if failed else "UNSET",
            attributes={"http.response.status_code": 503 if failed else 200},
        )
        served = span(
            "POST /sendEmail",
            "SERVER",
            "notification",
            start + 3,
            start + 24,
            call,
            status="ERROR" if failed else "UNSET",
            attributes={"http.response.status_code": 503 if failed else 200},
        )
        spans += [handled, call, served]
        start += 30 + 800 * attempt  # exponential backoff between attempts: 800, 1600, 3200 ms
    diagnosis = diagnose(Trace(spans))
    assert diagnosis.verdict is not None and diagnosis.verdict.category == "queue wait"
    cause = diagnosis.verdict.cause
    assert cause is not None and cause.kind == causes.RETRIES
    assert (
        cause.text
        == "retries at notification-worker: notification answered 503 on 3 of 4 attempts, 4.8 s of backoff"
    )
    assert cause.facts["dependency"] == "notification"


def test_no_activity_says_whether_the_consumer_had_not_started_was_paused_or_restarted() -> None:
    spans, _ = order_with_hop("shipments", "logistics-worker", 6012, 15)
    cases = {
        "not yet started": [],
        "stopped, paused or rebalancing": others("shipments", "logistics-worker", [-3000, -1500], 10),
        "restarted": others(
            "shipments",
            "logistics-worker",
            [-3000],
            10,
            resource={"service.instance.id": "logistics-worker-0"},
        ),
    }
    for state, before in cases.items():
        diagnosis = diagnose(Trace(spans), nearby=nearby_of(spans + before))
        cause = diagnosis.verdict.cause if diagnosis.verdict else None
        assert cause is not None and cause.kind == causes.IDLE, state
        assert cause.facts["state"] == state
        assert cause.text.startswith("no consumer activity at logistics-worker for 6.0 s on `shipments` (")


def test_a_slow_synchronous_call_is_named_with_its_share() -> None:
    root = span("POST /graphql", "SERVER", "gateway", 0, 700)
    client = span("POST", "CLIENT", "gateway", 5, 695, root)
    order = span("POST /graphql", "SERVER", "order", 8, 690, client)
    call = span("POST", "CLIENT", "order", 20, 640, order)
    billing = span("POST /charges", "SERVER", "billing", 22, 638, call)
    diagnosis = diagnose(Trace([root, client, order, call, billing]))
    assert (
        diagnosis.verdict is not None and diagnosis.verdict.where == "processing in billing (POST /charges)"
    )
    cause = diagnosis.verdict.cause
    assert cause is not None and cause.kind == causes.SLOW_CALL and cause.service == "billing"
    assert cause.text == "slow call: order → billing POST /charges took 616 ms, 90% of order's POST /graphql"


def test_a_slow_network_is_the_time_outside_the_server_span() -> None:
    root = span("POST /orders", "SERVER", "order", 0, 330)
    call = span("GET", "CLIENT", "order", 10, 320, root)
    stock = span("GET /stock/{sku}", "SERVER", "inventory", 160, 165, call)
    diagnosis = diagnose(Trace([root, call, stock]))
    assert diagnosis.verdict is not None and diagnosis.verdict.where == "network from order to inventory"
    cause = diagnosis.verdict.cause
    assert cause is not None and cause.kind == causes.SLOW_NETWORK and cause.facts["peer"] == "inventory"
    assert (
        cause.text
        == "slow network from order to inventory: 305 ms of the 310 ms call outside inventory's 5.0 ms"
    )


def test_a_failure_is_traced_to_its_source_through_the_hops_it_crossed() -> None:
    root = span("POST /orders", "SERVER", "checkout", 0, 30)
    send = span(
        "send orders",
        "PRODUCER",
        "checkout",
        10,
        12,
        root,
        attributes={"messaging.destination.name": "orders"},
    )
    handled = process(
        "orders",
        "billing",
        100,
        300,
        send,
        status="ERROR",
        events=[
            EventRecord(
                "exception",
                T0 + 290 * MS,
                {"exception.type": "HttpRequestException", "exception.message": "503"},
            )
        ],
    )
    call = span(
        "POST",
        "CLIENT",
        "billing",
        110,
        280,
        handled,
        status="ERROR",
        attributes={"http.response.status_code": 503},
    )
    served = span(
        "POST /entries",
        "SERVER",
        "ledger",
        112,
        278,
        call,
        status="ERROR",
        attributes={"http.response.status_code": 503},
    )
    dead = span(
        "send orders.dlq",
        "PRODUCER",
        "billing",
        292,
        295,
        handled,
        attributes={"messaging.destination.name": "orders.dlq"},
    )
    diagnosis = diagnose(Trace([root, send, handled, call, served, dead]))
    cause = diagnosis.failure_cause
    assert cause is not None and cause.kind == causes.FAILURE and cause.service == "ledger"
    assert cause.text == (
        "failed at ledger (POST /entries: HTTP 503) → billing (process orders from `orders`: "
        "HttpRequestException) → dead-lettered to `orders.dlq` by billing"
    )
    assert diagnose(Trace([root, send])).failure_cause is None


def test_the_doctor_names_the_producer_that_dropped_the_context_and_how_sure_it_is() -> None:
    from tracebridge.analysis.doctor import NEVER_PROCESSED, NO_CONTEXT, doctor

    def orphan(service: str, start: float, **attributes: Any) -> SpanRecord:
        return process(
            "inventory",
            service,
            start,
            start + 5,
            None,
            trace=f"{next(_ids):032x}",
            attributes={
                "tracebridge.context.source": "none",
                "tracebridge.context.problem": "missing",
                **attributes,
            },
        )

    # 1. a traced send with the record's partition and offset: certain
    root = span("POST /orders", "SERVER", "order", 0, 20)
    send = span(
        "send inventory",
        "PRODUCER",
        "stock-sync",
        10,
        12,
        root,
        attributes={
            "messaging.destination.name": "inventory",
            "messaging.destination.partition.id": "0",
            "messaging.kafka.offset": 41,
            "messaging.kafka.message.key": "o-1",
        },
    )
    certain = orphan(
        "logistics-worker", 40, **{"messaging.kafka.offset": 41, "messaging.kafka.message.key": "o-1"}
    )
    # 2. no traced send: inventory-worker was handling order o-2 when the record was written
    handling = process(
        "orders", "inventory-worker", 100, 140, None, attributes={"messaging.kafka.message.key": "o-2"}
    )
    earlier = process(
        "orders", "notification-worker", 60, 90, None, attributes={"messaging.kafka.message.key": "o-2"}
    )
    possible = orphan(
        "logistics-worker", 160, **{"messaging.kafka.message.key": "o-2", "tracebridge.queue_wait_ms": 25.0}
    )
    chains = doctor([root, send, certain, handling, earlier, possible], now_ns=T0 + 10**12)
    named = {(c.symptom, c.producer, c.producer_confidence) for c in chains}
    assert (NO_CONTEXT, "stock-sync", "certain") in named
    assert (NO_CONTEXT, "inventory-worker", "possible") in named
    assert not any(c.symptom == NEVER_PROCESSED for c in chains)  # the send was processed, without context
    evidence = next(c.producer_evidence for c in chains if c.producer == "inventory-worker")
    assert evidence.startswith("1 of 1 records: it was handling the record's key when the record was written")
    # 3. nothing to go on: the producer stays unknown
    (unknown,) = doctor([orphan("logistics-worker", 500)], now_ns=T0 + 10**12)
    assert unknown.producer == "?" and unknown.producer_confidence == ""

"""Analysis on hand-built traces whose answers are known."""

from __future__ import annotations

import itertools

from tracebridge.analysis.critical_path import NETWORK, PROCESSING, PUBLISH, QUEUE_WAIT, critical_path
from tracebridge.analysis.diagnosis import diagnose
from tracebridge.analysis.doctor import CONSUMER_ROOT, NEVER_PROCESSED, NO_CONTEXT, doctor
from tracebridge.analysis.model import EventRecord, LinkRecord, SpanRecord, Trace

MS = 1_000_000
TRACE = "ab" * 16
_ids = itertools.count(1)


def span(
    name: str,
    service: str,
    kind: str,
    start_ms: float,
    end_ms: float,
    parent: SpanRecord | None = None,
    trace_id: str = TRACE,
    status: str = "UNSET",
    links: tuple[LinkRecord, ...] = (),
    events: tuple[EventRecord, ...] = (),
    **attributes: object,
) -> SpanRecord:
    return SpanRecord(
        trace_id=trace_id,
        span_id=f"{next(_ids):016x}",
        parent_span_id=parent.span_id if parent else None,
        name=name,
        kind=kind,
        start_ns=int(start_ms * MS),
        end_ns=int(end_ms * MS),
        service=service,
        status=status,
        attributes={key.replace("__", "."): value for key, value in attributes.items()},
        links=links,
        events=events,
    )


def consumer(
    name: str, service: str, start: float, end: float, send: SpanRecord, **attributes: object
) -> SpanRecord:
    return span(
        name,
        service,
        "CONSUMER",
        start,
        end,
        parent=send,
        links=(LinkRecord(send.trace_id, send.span_id, {"tracebridge.link.type": "follows_from"}),),
        **attributes,
    )


def three_hop_chain() -> list[SpanRecord]:
    """gateway → order (sync) → orders → inventory-worker → inventory → logistics → shipments → status."""
    gateway = span("POST /graphql", "gateway", "SERVER", 0, 40)
    call = span("POST", "gateway", "CLIENT", 2, 38, parent=gateway)
    order = span("POST /graphql", "order", "SERVER", 5, 35, parent=call)
    send1 = span(
        "send orders", "order", "PRODUCER", 20, 25, parent=order, messaging__destination__name="orders"
    )
    proc1 = consumer("process orders", "inventory-worker", 125, 140, send1, tracebridge__queue_wait_ms=100.0)
    send2 = span("send inventory", "inventory-worker", "PRODUCER", 130, 134, parent=proc1)
    proc2 = consumer(
        "process inventory", "logistics-worker", 384, 400, send2, tracebridge__queue_wait_ms=250.0
    )
    send3 = span("send shipments", "logistics-worker", "PRODUCER", 390, 392, parent=proc2)
    proc3 = consumer(
        "process shipments", "order-status-worker", 432, 440, send3
    )  # wait from timestamps: 40 ms
    return [gateway, call, order, send1, proc1, send2, proc2, send3, proc3]


def test_three_hop_queue_waits_reported_to_the_millisecond() -> None:
    diagnosis = diagnose(Trace(three_hop_chain()))
    assert [(h.topic, h.producer, h.consumer) for h in diagnosis.hops] == [
        ("orders", "order", "inventory-worker"),
        ("inventory", "inventory-worker", "logistics-worker"),
        ("shipments", "logistics-worker", "order-status-worker"),
    ]
    assert [round(h.queue_wait_ns / MS) for h in diagnosis.hops] == [100, 250, 40]
    assert [round(h.publish_ns / MS) for h in diagnosis.hops] == [5, 4, 2]
    assert [round(h.processing_ns / MS) for h in diagnosis.hops] == [15, 16, 8]
    assert not any(h.clock_skew for h in diagnosis.hops)
    assert diagnosis.end_to_end_ns == 440 * MS  # first start to last end, not the root's 40 ms


def test_critical_path_covers_end_to_end_exactly_and_follows_async_hops() -> None:
    trace = Trace(three_hop_chain())
    path = critical_path(trace)
    assert path.span_ids == {span.span_id for span in trace.spans}  # the root's own tail aside, all on it
    segments = path.segments
    assert sum(s.duration_ns for s in segments) == 440 * MS
    assert all(a.end_ns == b.start_ns for a, b in itertools.pairwise(segments))  # contiguous
    waits = [(s.topic, s.service, round(s.duration_ns / MS)) for s in segments if s.category == QUEUE_WAIT]
    assert waits == [
        ("orders", "inventory-worker", 100),
        ("inventory", "logistics-worker", 250),
        ("shipments", "order-status-worker", 40),
    ]
    network = [(s.service, s.peer, round(s.duration_ns / MS)) for s in segments if s.category == NETWORK]
    assert network == [("gateway", "order", 3)]
    assert {s.category for s in segments} == {PROCESSING, NETWORK, PUBLISH, QUEUE_WAIT}


def test_queue_wait_dominates_the_verdict() -> None:
    diagnosis = diagnose(Trace(three_hop_chain()))
    assert diagnosis.verdict is not None
    assert (diagnosis.verdict.category, diagnosis.verdict.topic, diagnosis.verdict.service) == (
        QUEUE_WAIT,
        "inventory",
        "logistics-worker",
    )
    assert round(diagnosis.verdict.share, 3) == round(250 / 440, 3)
    assert diagnosis.headline == "57% of 440 ms: queue wait on `inventory` before logistics-worker"


def test_slow_consumer_is_named_as_the_verdict() -> None:
    root = span("POST /orders", "web", "SERVER", 0, 10)
    send = span("send orders", "web", "PRODUCER", 5, 6, parent=root)
    slow = consumer("process orders", "logistics-worker", 8, 608, send, tracebridge__queue_wait_ms=2.0)
    call = span("POST", "logistics-worker", "CLIENT", 10, 20, parent=slow)
    callee = span("POST /ship", "carrier", "SERVER", 11, 19, parent=call)
    diagnosis = diagnose(Trace([root, send, slow, call, callee]))
    assert diagnosis.verdict is not None
    assert (diagnosis.verdict.category, diagnosis.verdict.service) == (PROCESSING, "logistics-worker")
    assert diagnosis.verdict.span_name == "process orders"
    assert round(diagnosis.verdict.duration_ns / MS) == 600 - 10  # own time: the 10 ms HTTP call excluded
    assert diagnosis.verdict.where == "processing in logistics-worker (process orders)"
    assert diagnosis.headline.endswith(
        "— slow processing in logistics-worker: process orders took 600 ms per record, "
        "98% of it in its own code"
    )


def test_negative_gap_without_measurement_is_clock_skew_not_negative_wait() -> None:
    send = span("send orders", "web", "PRODUCER", 100, 110)
    early = consumer("process orders", "worker", 95, 120, send)  # consumer clock behind
    (hop,) = diagnose(Trace([send, early])).hops
    assert hop.clock_skew and hop.queue_wait_ns == 0


def test_failures_retries_and_dead_letters_are_reported() -> None:
    root = span("POST /orders", "web", "SERVER", 0, 10)
    send = span("send orders", "web", "PRODUCER", 1, 2, parent=root)
    boom = EventRecord(
        "exception", 5 * MS, {"exception.type": "SmtpError", "exception.message": "relay refused"}
    )

    def failed_delivery(start: float, end: float) -> SpanRecord:
        """The same record (orders[0]@7, group notification) failing again."""
        return consumer(
            "process orders",
            "notification-worker",
            start,
            end,
            send,
            status="ERROR",
            events=(boom,),
            messaging__kafka__offset=7,
            messaging__destination__partition__id="0",
            messaging__consumer__group__name="notification",
        )

    first, second = failed_delivery(3, 5), failed_delivery(20, 22)
    dlq = span(
        "send orders.dlq",
        "notification-worker",
        "PRODUCER",
        21,
        22,
        parent=second,
        messaging__destination__name="orders.dlq",
    )
    diagnosis = diagnose(Trace([root, send, first, second, dlq]))
    assert [(f.service, f.error_type, f.message) for f in diagnosis.failures] == [
        ("notification-worker", "SmtpError", "relay refused")
    ] * 2
    (retry,) = diagnosis.retries
    assert (retry.topic, retry.offset, retry.group, retry.deliveries) == ("orders", 7, "notification", 2)
    assert [(d.topic, d.service) for d in diagnosis.dead_letters] == [("orders.dlq", "notification-worker")]


def test_doctor_finds_each_kind_of_broken_chain() -> None:
    now = 10_000 * MS
    ok_send = span("send orders", "order", "PRODUCER", 0, 1, trace_id="01" * 16)
    ok_process = consumer(
        "process orders", "inventory-worker", 5, 6, ok_send, tracebridge__context__source="headers"
    )
    lost_send = span("send orders", "order", "PRODUCER", 0, 1, trace_id="02" * 16)
    recent_send = span("send orders", "order", "PRODUCER", 9_990, 9_991, trace_id="03" * 16)
    no_context = span(
        "process shipments",
        "notification-worker",
        "CONSUMER",
        10,
        11,
        trace_id="04" * 16,
        tracebridge__context__source="none",
        messaging__destination__name="shipments",
    )
    also_no_context = span(
        "process shipments",
        "notification-worker",
        "CONSUMER",
        12,
        13,
        trace_id="05" * 16,
        tracebridge__context__source="none",
        messaging__destination__name="shipments",
    )
    foreign_root = span(
        "shipments receive",
        "legacy-worker",
        "CONSUMER",
        10,
        11,
        trace_id="06" * 16,
        messaging__destination__name="shipments",
    )
    dlq_send = span("send orders.dlq", "order", "PRODUCER", 0, 1, trace_id="07" * 16)
    chains = doctor(
        [ok_send, ok_process, lost_send, recent_send, no_context, also_no_context, foreign_root, dlq_send],
        now_ns=now,
        unprocessed_after_s=5,  # lost_send ended 10 s ago; recent_send 9 ms ago
    )
    found = {(c.symptom, c.topic, c.producer, c.consumer): (c.count, c.example_trace_id) for c in chains}
    assert found == {
        (NO_CONTEXT, "shipments", "?", "notification-worker"): (2, "05" * 16),  # reason: missing
        (NEVER_PROCESSED, "orders", "order", "?"): (1, "02" * 16),
        (CONSUMER_ROOT, "shipments", "?", "legacy-worker"): (1, "06" * 16),
    }
    assert chains[0].symptom == NO_CONTEXT  # most frequent first


def test_doctor_groups_records_without_context_by_why() -> None:
    def orphan(number: int, problem: str | None, service: str = "notification-worker"):
        extra = {} if problem is None else {"tracebridge__context__problem": problem}
        return span(
            "process shipments",
            service,
            "CONSUMER",
            number,
            number + 1,
            trace_id=f"{number:032x}",
            tracebridge__context__source="none",
            messaging__destination__name="shipments",
            **extra,
        )

    spans = [
        orphan(1, "duplicated-traceparent"),
        orphan(2, "duplicated-traceparent"),
        orphan(3, "duplicated-traceparent"),
        orphan(4, "invalid-traceparent"),
        orphan(5, "envelope-unparsable"),
        orphan(6, None),  # written before the problem attribute existed
        orphan(7, "duplicated-traceparent", service="order-status-worker"),
    ]
    chains = doctor(spans, now_ns=10_000 * MS)
    assert [(c.reason, c.consumer, c.count) for c in chains] == [
        ("duplicated-traceparent", "notification-worker", 3),
        ("duplicated-traceparent", "order-status-worker", 1),
        ("envelope-unparsable", "notification-worker", 1),
        ("invalid-traceparent", "notification-worker", 1),
        ("missing", "notification-worker", 1),
    ]
    assert all(c.symptom == NO_CONTEXT and c.topic == "shipments" for c in chains)
    assert chains[0].example_trace_id == f"{3:032x}"


def test_link_only_consumer_in_its_own_trace_is_not_broken() -> None:
    send = span("send orders", "order", "PRODUCER", 0, 1, trace_id="0a" * 16)
    linked = span(
        "process orders",
        "worker",
        "CONSUMER",
        5,
        6,
        trace_id="0b" * 16,
        links=(LinkRecord(send.trace_id, send.span_id),),
        tracebridge__context__source="headers",
    )
    assert doctor([send, linked], now_ns=10_000 * MS) == []


def test_deep_chain_does_not_hit_the_recursion_limit() -> None:
    spans = [span("root", "svc", "SERVER", 0, 1)]
    for number in range(5000):
        spans.append(span(f"hop {number}", "svc", "INTERNAL", number, number + 2, parent=spans[-1]))
    path = critical_path(Trace(spans))
    assert sum(s.duration_ns for s in path.segments) == 5001 * MS
    assert len(path.span_ids) == 5001

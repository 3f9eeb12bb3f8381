"""Injected faults on the real eshop stack, and what the analysis makes of them: a slow worker
is named by the verdict (a backlog when orders pile up), a failing REST service shows retries
and a dead letter, with the cause at its source, a producer that drops trace context is named
by the doctor, and a slow call, a slow network link and a paused consumer are told apart."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator

import httpx
import pytest

from tracebridge.analysis import causes
from tracebridge.analysis.diagnosis import diagnose
from tracebridge.analysis.doctor import NO_CONTEXT, doctor
from tracebridge.analysis.model import Trace
from tracebridge.analysis.story import story
from tracebridge.collector.source import StoreSource
from tracebridge.collector.store import SpanStore
from tracebridge.demo import runner, shop
from tracebridge.demo.stack import Faults, Stack

CARD = "4111111111111111"


def place_one(stack: Stack, sku: str = "MUG-7") -> str:
    async def go() -> str:
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
            order = {"email": "buyer@example.com", "cardNumber": CARD, "lines": [{"sku": sku, "quantity": 1}]}
            placed = await shop.place_order(client, order)
            assert await shop.wait_final(client, [placed.id], 60) == {placed.id: "SHIPPED"}
            return placed.id

    return asyncio.run(go())


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("slow"), Faults(slow={"logistics-worker": 500})) as stack:
        yield stack


@pytest.fixture(scope="module")
def broken_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    faults = Faults(fail={"notification": 1.0}, break_context={"inventory-worker"})
    with Stack(tmp_path_factory.mktemp("broken"), faults) as stack:
        yield stack


def test_a_worker_slowed_by_500ms_is_named_by_the_verdict(slow_stack: Stack) -> None:
    for _ in range(2):  # one at a time: no backlog, so the slowness is processing, not queueing
        order_id = place_one(slow_stack)
        trace = runner.wait_traces(slow_stack.db, [order_id], timeout=30)[order_id]
        assert runner.is_complete_shipped_trace(trace)
        verdict = diagnose(trace).verdict
        assert verdict is not None
        assert (verdict.category, verdict.service) == ("processing", "logistics-worker"), verdict
        assert verdict.duration_ns >= 500_000_000
        process = next(s for s in trace.spans if s.service == "logistics-worker" and s.kind == "CONSUMER")
        assert process.duration_ns >= 500_000_000


def wait_for(predicate, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_a_failing_rest_service_shows_retries_then_the_dead_letter_send(broken_stack: Stack) -> None:
    order_id = place_one(broken_stack)
    store = SpanStore(broken_stack.db)

    def dead_lettered() -> Trace | None:
        trace = runner.order_trace(store, order_id)
        names = [s.name for s in trace.spans] if trace else []
        # (the shipment mail's dead letter is in another trace: inventory-worker broke the chain)
        # Services export on their own schedules: wait for the notification service's four
        # answers too, not only for the worker's dead-letter send.
        served = [s for s in trace.spans if s.service == "notification"] if trace else []
        return trace if "send orders.dlq" in names and len(served) >= 4 else None

    trace = wait_for(dead_lettered)
    store.close()
    attempts = sorted(
        (s for s in trace.spans if s.service == "notification-worker" and s.name == "process orders"),
        key=lambda s: s.start_ns,
    )
    assert [s.attributes["tracebridge.delivery.attempt"] for s in attempts] == [1, 2, 3, 4]
    for attempt in attempts:
        # the worker logged each failure; tracebridge recorded it on the attempt's span
        assert attempt.status == "ERROR"
        # (notification-worker calls with requests: raise_for_status() raises its HTTPError)
        assert [e.attributes["exception.type"] for e in attempt.events if e.name == "exception"] == [
            "HTTPError"
        ]
        call = next(s for s in trace.spans if s.parent_span_id == attempt.span_id and s.kind == "CLIENT")
        assert call.status == "ERROR" and call.attributes["http.response.status_code"] == 503
        server = next(s for s in trace.spans if s.parent_span_id == call.span_id)
        assert (server.service, server.name, server.status) == ("notification", "POST /sendEmail", "ERROR")
    # the backoff (100, 200, 400 ms) lies between the attempts, not inside the failed ones
    for index, (this, following) in enumerate(itertools.pairwise(attempts)):
        assert following.start_ns - this.end_ns >= 0.9 * 100e6 * 2**index
    dlq = next(s for s in trace.spans if s.name == "send orders.dlq")
    assert dlq.kind == "PRODUCER" and dlq.parent_span_id == attempts[-1].span_id
    diagnosis = diagnose(trace)
    assert any(
        r.topic == "orders" and r.group == "notification" and r.deliveries == 4 for r in diagnosis.retries
    )
    assert {(d.topic, d.service) for d in diagnosis.dead_letters} >= {("orders.dlq", "notification-worker")}
    assert any(f.service == "notification" and f.error_type == "HTTP 503" for f in diagnosis.failures)


def test_a_producer_that_drops_context_is_reported_by_the_doctor(broken_stack: Stack) -> None:
    place_one(broken_stack, sku="BOOK-42")
    store = SpanStore(broken_stack.db)

    def broken() -> list:
        now = time.time_ns()
        chains = [c for c in doctor(store.spans_between(0), now) if c.symptom == NO_CONTEXT]
        return chains if {c.consumer for c in chains} >= {"logistics-worker", "order-status-worker"} else []

    chains = wait_for(broken)
    assert {(c.topic, c.consumer) for c in chains} == {
        ("inventory", "logistics-worker"),
        ("inventory", "order-status-worker"),
    }
    # and names the producer: no send was traced, but inventory-worker was handling the same
    # order (the record key) when the record was written
    assert {(c.producer, c.producer_confidence) for c in chains} == {("inventory-worker", "possible")}
    assert all(
        "it was handling the record's key when the record was written" in c.producer_evidence for c in chains
    )
    # The chain breaks exactly there: inventory-worker's processing is still in the order's trace.
    spans = store.spans_between(0)
    assert not any(s.service == "inventory-worker" and s.kind == "PRODUCER" for s in spans)
    processed = [s for s in spans if s.service == "inventory-worker" and s.kind == "CONSUMER"]
    # (order publishes with AIOProducer: the context reaches inventory-worker in the envelope)
    assert processed and all(s.attributes["tracebridge.context.source"] == "envelope" for s in processed)


def diagnose_order(stack: Stack, order_id: str):  # type: ignore[no-untyped-def]
    """What the CLI and the UI answer for one order: its story, with the store to look around in."""
    trace = runner.wait_traces(stack.db, [order_id], timeout=30)[order_id]
    source = StoreSource(stack.db)
    return diagnose(story(source, trace.spans[0].trace_id), nearby=source.spans_between)


def test_orders_piling_up_at_a_slow_worker_are_a_backlog(slow_stack: Stack) -> None:
    ids = asyncio.run(runner.place_orders(slow_stack.gateway_url, 6, concurrency=6, seed=5))
    asyncio.run(runner.wait_final(slow_stack.gateway_url, ids, timeout=60))
    diagnoses = [diagnose_order(slow_stack, order_id) for order_id in ids]
    last = max(diagnoses, key=lambda d: d.end_to_end_ns)
    assert (
        last.verdict is not None and last.verdict.where == "queue wait on `inventory` before logistics-worker"
    )
    cause = last.verdict.cause
    assert cause is not None and cause.kind == causes.BACKLOG and cause.service == "logistics-worker", cause
    assert cause.facts["records_ahead"] >= 3 and 450e6 <= cause.facts["per_record_ns"] <= 900e6
    assert cause.text in last.headline


def test_a_refusing_rest_service_is_the_cause_and_the_failures_source(broken_stack: Stack) -> None:
    order_id = place_one(broken_stack)
    store = SpanStore(broken_stack.db)

    def dead_lettered() -> Trace | None:
        trace = runner.order_trace(store, order_id)
        served = [s for s in trace.spans if s.service == "notification"] if trace else []
        # the last attempt ends after its dead-letter send: wait for all four attempts too
        handled = (
            [s for s in trace.spans if s.service == "notification-worker" and s.name == "process orders"]
            if trace
            else []
        )
        return (
            trace
            if trace
            and len(served) >= 4
            and len(handled) >= 4
            and any(s.name == "send orders.dlq" for s in trace.spans)
            else None
        )

    trace = wait_for(dead_lettered)
    store.close()
    diagnosis = diagnose(trace)
    # the record's last attempt waited behind the three failed ones and their backoff
    last = max(
        (s for s in trace.spans if s.service == "notification-worker" and s.name == "process orders"),
        key=lambda s: s.start_ns,
    )
    wait = next(s for s in diagnosis.segments if s.category == "queue wait" and s.span_id == last.span_id)
    retried = causes.verdict_cause(trace, wait, 0)
    assert retried is not None and retried.kind == causes.RETRIES
    assert retried.text.startswith(
        "retries at notification-worker: notification answered 503 on 4 of 4 attempts, "  # then the DLQ
    )
    assert retried.facts["dependency"] == "notification"
    failure = diagnosis.failure_cause
    assert failure is not None and failure.service == "notification"
    assert failure.text.startswith(
        "failed at notification (POST /sendEmail: HTTP 503) → notification-worker ("
    )
    assert failure.text.endswith("→ dead-lettered to `orders.dlq` by notification-worker")


@pytest.fixture(scope="module")
def mixed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    faults = Faults(slow={"billing": 400}, slow_network={"order:inventory": 250})
    with Stack(tmp_path_factory.mktemp("mixed"), faults) as stack:
        yield stack


def test_a_slow_call_and_a_slow_link_are_told_apart(mixed_stack: Stack) -> None:
    diagnosis = diagnose_order(mixed_stack, place_one(mixed_stack))
    assert (
        diagnosis.verdict is not None and diagnosis.verdict.where == "processing in billing (POST /charges)"
    )
    cause = diagnosis.verdict.cause
    assert cause is not None and cause.kind == causes.SLOW_CALL and cause.facts["callee"] == "billing"
    assert cause.facts["caller"] == "order" and cause.facts["call_ns"] >= 400e6
    # the second-costliest stretch is the wire between order and inventory, not inventory itself
    network = max(
        (
            s
            for s in diagnosis.segments
            if s.category == "network" and s.service == "order" and s.peer == "inventory"
        ),
        key=lambda s: s.duration_ns,
    )
    whole = story(StoreSource(mixed_stack.db), diagnosis.trace_id)
    link = causes.verdict_cause(whole, network, diagnosis.end_to_end_ns)
    assert link is not None and link.kind == causes.SLOW_NETWORK and link.facts["peer"] == "inventory"
    assert link.facts["call_ns"] - link.facts["server_ns"] >= 240e6


def test_a_paused_consumer_is_no_activity_not_a_slow_one(mixed_stack: Stack) -> None:
    mixed_stack.pause("logistics-worker")
    try:
        ids = asyncio.run(runner.place_orders(mixed_stack.gateway_url, 1, seed=9))
        time.sleep(4)
    finally:
        mixed_stack.resume("logistics-worker")
    asyncio.run(runner.wait_final(mixed_stack.gateway_url, ids, timeout=60))
    diagnosis = diagnose_order(mixed_stack, ids[0])
    assert (
        diagnosis.verdict is not None
        and diagnosis.verdict.where == "queue wait on `inventory` before logistics-worker"
    )
    cause = diagnosis.verdict.cause
    assert cause is not None and cause.kind == causes.IDLE and cause.service == "logistics-worker", cause
    assert cause.facts["state"] == "stopped, paused or rebalancing" and cause.facts["idle_ns"] >= 2.5e9

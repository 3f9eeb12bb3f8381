"""The eshop stack as real processes under `tracebridge run` — real broker, real HTTP, real
SQLite, a real collector: every order ships as one trace through all nine services, with the
right parents, and nothing is lost or duplicated when a worker is killed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tracebridge.analysis.model import SpanRecord, Trace
from tracebridge.collector.store import SpanStore
from tracebridge.demo import runner, shop
from tracebridge.demo.stack import SERVICE_NAMES, Faults, Stack

ORDERS = 4
CARD = "4111111111111111"


class Placed:
    def __init__(
        self, stack: Stack, order_ids: list[str], statuses: dict[str, str], traces: dict[str, Trace]
    ):
        self.stack, self.order_ids, self.statuses, self.traces = stack, order_ids, statuses, traces
        self.doctor: dict = {}


@pytest.fixture(scope="module")
def eshop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Placed]:
    # notification-worker is slowed a little, so a SIGKILL lands while it still has work to do.
    # Headers that upstream instrumentations record only when asked: asked, so the redaction
    # test can plant credentials and addresses in them.
    capture = {
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "authorization,x-customer-email",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST": "authorization,x-customer-email",
    }
    stack = Stack(
        tmp_path_factory.mktemp("eshop"), Faults(slow={"notification-worker": 150}), extra_env=capture
    )
    with stack:
        ids = asyncio.run(runner.place_orders(stack.gateway_url, ORDERS))
        statuses = asyncio.run(runner.wait_final(stack.gateway_url, ids, timeout=60))
        traces = runner.wait_traces(stack.db, ids, timeout=30)
        placed = Placed(stack, ids, statuses, traces)
        # The doctor's view of the healthy stack, taken before any test feeds it hand-made
        # records without trace context (so no test depends on running first).
        placed.doctor = cli(stack, "doctor", "--since", "1h")
        yield placed


def only(trace: Trace, service: str, name: str) -> SpanRecord:
    found = [s for s in trace.spans if s.service == service and s.name == name]
    assert len(found) == 1, f"{service}:{name} in {[(s.service, s.name) for s in trace.spans]}"
    return found[0]


def parent(trace: Trace, span: SpanRecord) -> SpanRecord:
    assert span.parent_span_id in trace.by_id, f"{span.service}:{span.name} has no parent in the trace"
    return trace.by_id[span.parent_span_id]


def gql(stack: Stack, query: str, variables: dict) -> dict:
    response = httpx.post(
        f"{stack.gateway_url}/graphql", json={"query": query, "variables": variables}, timeout=30
    )
    return response.json()


def test_every_order_ships_as_one_trace_through_all_nine_services(eshop: Placed) -> None:
    assert eshop.statuses == {order_id: "SHIPPED" for order_id in eshop.order_ids}
    for order_id in eshop.order_ids:
        trace = eshop.traces[order_id]
        assert runner.is_complete_shipped_trace(trace), [(s.service, s.name) for s in trace.spans]
        assert len(trace.trace_ids) == 1
        assert {s.service for s in trace.spans} == set(SERVICE_NAMES)
        assert [(r.service, r.name, r.kind) for r in trace.roots] == [("gateway", "POST /graphql", "SERVER")]
        # The only failures: a shipment mail that overtook the order's confirmation fails
        # ("no recipient known yet"), is recorded on its process span, and is delivered again.
        for span in (s for s in trace.spans if s.status == "ERROR"):
            assert (span.service, span.name) == ("notification-worker", "process shipments")
            assert [e.attributes["exception.type"] for e in span.events] == ["RecipientUnknown"]
            attempt = span.attributes["tracebridge.delivery.attempt"]
            later = [
                s
                for s in trace.spans
                if s.name == span.name and s.attributes["tracebridge.delivery.attempt"] > attempt
            ]
            assert later


def test_each_hop_has_the_right_parent(eshop: Placed) -> None:
    for trace in eshop.traces.values():
        edge = only(trace, "gateway", "POST /graphql")
        proxy = only(trace, "gateway", "POST")
        assert parent(trace, proxy) is edge and proxy.kind == "CLIENT"
        order_server = only(trace, "order", "POST /graphql")
        assert parent(trace, order_server) is proxy
        for server in [s for s in trace.spans if s.service in ("inventory", "billing")]:
            caller = parent(trace, server)
            assert (caller.service, caller.kind) == ("order", "CLIENT")
        send_orders = only(trace, "order", "send orders")
        ancestor = send_orders
        while ancestor.parent_span_id in trace.by_id:
            ancestor = trace.by_id[ancestor.parent_span_id]
        assert ancestor is edge
        hops = {
            ("inventory-worker", "process orders"): send_orders,
            ("notification-worker", "process orders"): send_orders,
        }
        send_inventory = only(trace, "inventory-worker", "send inventory")
        assert parent(trace, send_inventory) is only(trace, "inventory-worker", "process orders")
        hops[("logistics-worker", "process inventory")] = send_inventory
        hops[("order-status-worker", "process inventory")] = send_inventory
        send_shipments = only(trace, "logistics-worker", "send shipments")
        assert parent(trace, send_shipments) is only(trace, "logistics-worker", "process inventory")
        hops[("order-status-worker", "process shipments")] = send_shipments
        hops[("notification-worker", "process shipments")] = send_shipments
        for (service, name), send in hops.items():
            # More than one when a delivery was retried: a shipment mail can overtake the
            # order's confirmation, wait for it (backoff) and be delivered again.
            attempts = [s for s in trace.spans if s.service == service and s.name == name]
            assert [a.attributes["tracebridge.delivery.attempt"] for a in attempts] == list(
                range(1, len(attempts) + 1)
            ), f"{service}:{name}"
            for process in attempts:
                assert process.kind == "CONSUMER" and send.kind == "PRODUCER"
                assert parent(trace, process) is send, f"{service}:{name}"
                # order publishes with confluent's AIOProducer, which can't send headers: its
                # records carry the context in the JSON envelope, every other hop in headers.
                carrier = "envelope" if name == "process orders" else "headers"
                assert process.attributes["tracebridge.context.source"] == carrier
                assert [link.span_id for link in process.links] == [send.span_id]
        for mail in [s for s in trace.spans if s.service == "notification"]:
            call = parent(trace, mail)
            assert (call.service, call.kind) == ("notification-worker", "CLIENT")
            assert parent(trace, call).name in ("process orders", "process shipments")


def test_order_id_is_on_every_span_even_those_started_before_the_order_existed(eshop: Placed) -> None:
    for order_id, trace in eshop.traces.items():
        missing = [(s.service, s.name) for s in trace.spans if s.attributes.get("order.id") != order_id]
        assert missing == []


def test_card_numbers_and_email_addresses_never_reach_span_attributes(eshop: Placed) -> None:
    store = SpanStore(eshop.stack.db)
    spans = store.spans_between(0)
    store.close()
    assert len(spans) >= 20 * ORDERS
    for span in spans:
        text = json.dumps([span.attributes, [e.attributes for e in span.events]], default=str)
        assert CARD not in text and "@example.com" not in text, (span.service, span.name)


def test_planted_secrets_never_leave_any_service(eshop: Placed) -> None:
    """Secrets planted where the upstream instrumentations record them — URL query strings
    (FastAPI, Flask, the gateway), captured Authorization and custom headers, a card number in
    a path, an e-mail address in an order — appear in no exported span of any service: not in
    names, attributes, events, links or status messages.  The redacted attributes exist."""
    stack = eshop.stack
    planted_card = "5555555555554444"
    secrets = ("PLANTED-KEY", "PLANTED-TOKEN", "@plantedsecret.com", planted_card)
    headers = {"Authorization": "Bearer PLANTED-TOKEN-1", "X-Customer-Email": "planted.one@plantedsecret.com"}
    with httpx.Client(timeout=10, headers=headers) as client:
        client.get(
            f"{stack.url('inventory')}/stock/MUG-7?api_key=PLANTED-KEY-2&mail=planted.two@plantedsecret.com"
        )
        client.get(f"{stack.url('inventory')}/stock/{planted_card}")
        client.post(f"{stack.url('notification')}/sendEmail?token=PLANTED-KEY-3", json={})
        order = {
            "email": "planted.three@plantedsecret.com",
            "cardNumber": planted_card,
            "lines": [{"sku": "MUG-7", "quantity": 1}],
        }
        placed = client.post(
            f"{stack.gateway_url}/graphql?debug=PLANTED-KEY-4",
            json={
                "query": shop.CREATE_ORDER,
                "variables": {"input": order},
            },
        ).json()
    order_id = placed["data"]["createOrder"]["id"]
    asyncio.run(runner.wait_final(stack.gateway_url, [order_id], timeout=60))
    runner.wait_traces(stack.db, [order_id], timeout=30)

    def redacted_headers() -> list[SpanRecord]:
        store = SpanStore(stack.db)
        try:
            spans = store.spans_between(0)
        finally:
            store.close()
        return [s for s in spans if "http.request.header.authorization" in s.attributes]

    deadline = time.monotonic() + 30
    while len(redacted_headers()) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    store = SpanStore(stack.db)
    spans = store.spans_between(0)
    store.close()
    leaks = []
    for span in spans:
        text = json.dumps(
            [
                span.name,
                span.status_message,
                span.attributes,
                [(e.name, e.attributes) for e in span.events],
                [link.attributes for link in span.links],
            ],
            default=str,
        )
        leaks += [(span.service, span.name, secret) for secret in secrets if secret in text]
    assert leaks == []
    with_header = redacted_headers()
    assert {s.service for s in with_header} >= {"inventory", "notification", "gateway"}
    assert all(s.attributes["http.request.header.authorization"] == ["REDACTED"] for s in with_header)
    emails = {(s.service, k): v for s in with_header for k, v in s.attributes.items() if "customer" in k}
    assert emails and set(map(tuple, emails.values())) == {("REDACTED",)}, emails
    targets = [
        str(v)
        for s in spans
        for k, v in s.attributes.items()
        if k in ("http.target", "http.url", "url.path", "url.query", "url.full")
    ]
    assert any("api_key=REDACTED&mail=REDACTED" in t for t in targets), targets
    assert any("token=REDACTED" in t for t in targets) and any("debug=REDACTED" in t for t in targets)
    assert any("/stock/REDACTED" in t for t in targets)


def test_logs_of_every_service_carry_the_trace_id(eshop: Placed) -> None:
    order_id = eshop.order_ids[0]
    trace_id = eshop.traces[order_id].spans[0].trace_id
    for service in (
        "order",
        "inventory-worker",
        "logistics-worker",
        "notification-worker",
        "order-status-worker",
    ):
        # log records only (a logged exception's traceback lines follow its record)
        records = [line for line in eshop.stack.log(service).read_text().splitlines() if line[:4].isdigit()]
        lines = [line for line in records if order_id in line]
        assert lines, f"{service} logged nothing about {order_id}"
        assert all(f"trace_id={trace_id}" in line for line in lines), lines


def cli(stack: Stack, *args: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "tracebridge", *args, "--source", str(stack.db), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_doctor_finds_no_broken_chain_in_the_healthy_stack(eshop: Placed) -> None:
    data = eshop.doctor
    assert data["spans_examined"] >= 20 * ORDERS
    assert data["broken"] == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lines": [{"sku": "NOPE-1", "quantity": 1}]}, "unknown SKU 'NOPE-1'"),
        ({"lines": [{"sku": "MUG-7", "quantity": 0}]}, "quantity of MUG-7 must be positive"),
        ({"email": "not-an-address"}, "invalid e-mail address"),
        ({"cardNumber": "12ab"}, "card number must be 12 to 19 digits"),
    ],
)
def test_invalid_input_is_a_graphql_error_and_publishes_nothing(
    eshop: Placed, change: dict, message: str
) -> None:
    before = _end_offset(eshop.stack, "orders")
    order = {"email": "buyer@example.com", "cardNumber": CARD, "lines": [{"sku": "MUG-7", "quantity": 1}]}
    body = gql(eshop.stack, shop.CREATE_ORDER, {"input": {**order, **change}})
    assert body["data"] is None
    assert message in body["errors"][0]["message"]
    assert _end_offset(eshop.stack, "orders") == before


def _end_offset(stack: Stack, topic: str) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def read() -> int:
        assert stack.broker is not None
        consumer = AIOKafkaConsumer(bootstrap_servers=stack.broker.bootstrap_servers)
        await consumer.start()
        try:
            partition = TopicPartition(topic, 0)
            return int((await consumer.end_offsets([partition]))[partition])
        finally:
            await consumer.stop()

    return asyncio.run(read())


def _records(stack: Stack, topic: str) -> list:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def read() -> list:
        assert stack.broker is not None
        consumer = AIOKafkaConsumer(
            bootstrap_servers=stack.broker.bootstrap_servers, enable_auto_commit=False
        )
        await consumer.start()
        try:
            partition = TopicPartition(topic, 0)
            consumer.assign([partition])
            end = (await consumer.end_offsets([partition]))[partition]
            await consumer.seek_to_beginning(partition)
            records = []
            while len(records) < end:
                batch = await consumer.getmany(partition, timeout_ms=1000)
                records += batch.get(partition, [])
            return records
        finally:
            await consumer.stop()

    return asyncio.run(read())


def _produce(stack: Stack, topic: str, values: list[bytes], key: bytes | None = None) -> None:
    from aiokafka import AIOKafkaProducer

    async def send() -> None:
        assert stack.broker is not None
        producer = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap_servers)
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(topic, value, key=key)
        finally:
            await producer.stop()

    asyncio.run(send())


def _mails(stack: Stack, order_id: str) -> list[dict]:
    return httpx.get(f"{stack.url('notification')}/mails", params={"order_id": order_id}, timeout=10).json()


def _stock(stack: Stack) -> dict[str, int]:
    return {
        sku: httpx.get(f"{stack.url('inventory')}/stock/{sku}", timeout=10).json()["available"]
        for sku in shop.SKUS
    }


def _place_and_ship(stack: Stack, lines: list[dict]) -> str:
    async def go() -> str:
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
            placed = await shop.place_order(
                client, {"email": "later@example.com", "cardNumber": CARD, "lines": lines}
            )
            assert await shop.wait_final(client, [placed.id], 60) == {placed.id: "SHIPPED"}
            return placed.id

    return asyncio.run(go())


def _mail_deliveries(stack: Stack, order_id: str) -> dict[str, list[str]]:
    """What the notification service answered to each POST /sendEmail for the order, in order."""
    outcomes: dict[str, list[str]] = {}
    for line in stack.log("notification").read_text().splitlines():
        words = line.split()
        if "mail" in words and order_id in words and words[-1] in ("sent", "duplicate"):
            key = words[words.index("mail") + 1]
            outcomes.setdefault(key, []).append(words[-1])
    return outcomes


def _wait_mails(stack: Stack, order_id: str, count: int, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while len(mails := _mails(stack, order_id)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return mails


def test_poison_records_and_unknown_versions_are_dead_lettered_and_workers_go_on(eshop: Placed) -> None:
    stack = eshop.stack
    dlq_before = len(_records(stack, "orders.dlq"))
    future = json.dumps({"type": "OrderCreated", "version": 99, "event_id": "x", "order_id": "o-future"})
    _produce(stack, "orders", [b"\xff not json", future.encode()])
    later = _place_and_ship(stack, [{"sku": "PEN-9", "quantity": 1}])
    assert len(_wait_mails(stack, later, 2)) == 2  # every worker survived both
    dead = _records(stack, "orders.dlq")[dlq_before:]
    reasons = sorted(
        (dict(record.headers)["dlq.consumer.group"].decode(), dict(record.headers)["dlq.reason"].decode())
        for record in dead
    )
    assert [group for group, _ in reasons] == ["inventory", "inventory", "notification", "notification"]
    assert sum("not JSON" in reason for _, reason in reasons) == 2
    assert sum("unsupported OrderCreated version '99'" in reason for _, reason in reasons) == 2
    assert {record.value for record in dead} == {b"\xff not json", future.encode()}


def test_a_redelivered_event_never_reserves_or_mails_twice(eshop: Placed) -> None:
    stack = eshop.stack
    order_id = eshop.order_ids[0]
    originals = {
        topic: next(r for r in _records(stack, topic) if r.key == order_id.encode())
        for topic in ("orders", "shipments")
    }
    stock_before = _stock(stack)
    for topic, record in originals.items():
        _produce(stack, topic, [record.value], key=record.key)
    # One partition per topic: once a later order is shipped and mailed, the duplicates were handled.
    later = _place_and_ship(stack, [{"sku": "LAMP-3", "quantity": 2}])
    assert len(_wait_mails(stack, later, 2)) == 2
    stock_after = _stock(stack)
    assert stock_after == {**stock_before, "LAMP-3": stock_before["LAMP-3"] - 2}
    # The re-published events did reach the notification service again, which answered them as
    # duplicates: each mail was sent once.  (GET /mails can't show a duplicate: its key is unique.)
    # (more duplicates are fine: at-least-once delivery may hand a worker a record again)
    deliveries = _mail_deliveries(stack, order_id)
    assert set(deliveries) == {f"{order_id}:created", f"{order_id}:shipped"}
    for outcomes in deliveries.values():
        assert outcomes[0] == "sent" and outcomes[1:] and set(outcomes[1:]) == {"duplicate"}, outcomes


def test_a_worker_killed_mid_run_loses_no_order_and_sends_no_duplicate_mail(eshop: Placed) -> None:
    stack = eshop.stack

    async def place() -> list[str]:
        return await runner.place_orders(stack.gateway_url, 8, seed=99)

    order_ids = asyncio.run(place())
    time.sleep(0.5)
    pending = [o for o in order_ids if len(_mails(stack, o)) < 2]
    assert pending, "the worker finished before it could be killed: the test proves nothing"
    stack.kill("notification-worker")
    stack.restart("notification-worker")
    statuses = asyncio.run(runner.wait_final(stack.gateway_url, order_ids, timeout=60))
    assert set(statuses.values()) == {"SHIPPED"}
    for order_id in order_ids:
        mails = _wait_mails(stack, order_id, 2)
        assert sorted(m["idempotency_key"] for m in mails) == [f"{order_id}:created", f"{order_id}:shipped"]
        # however often the killed worker's records were delivered again, each mail went out once
        for outcomes in _mail_deliveries(stack, order_id).values():
            assert outcomes.count("sent") == 1 and set(outcomes) <= {"sent", "duplicate"}, outcomes


def test_diagnose_command_breaks_down_every_async_hop(eshop: Placed) -> None:
    order_id = eshop.order_ids[0]
    data = cli(eshop.stack, "diagnose", "--order", order_id)
    # (a set: a retried delivery is a second hop on the same edge, see the first test)
    assert {(h["topic"], h["producer"], h["consumer"]) for h in data["hops"]} == {
        ("inventory", "inventory-worker", "logistics-worker"),
        ("inventory", "inventory-worker", "order-status-worker"),
        ("orders", "order", "inventory-worker"),
        ("orders", "order", "notification-worker"),
        ("shipments", "logistics-worker", "notification-worker"),
        ("shipments", "logistics-worker", "order-status-worker"),
    }
    assert sum(s["end_ns"] - s["start_ns"] for s in data["segments"]) == data["end_to_end_ns"]
    assert data["dead_letters"] == []
    # the only failure possible: a shipment mail that overtook the confirmation, retried
    assert all(
        (f["service"], f["error_type"]) == ("notification-worker", "RecipientUnknown")
        for f in data["failures"]
    )


def test_stack_dirs_hold_one_log_per_service(eshop: Placed) -> None:
    names = {path.stem for path in Path(eshop.stack.directory).glob("*.log")}
    assert names >= {*SERVICE_NAMES, "collector"}


def test_the_edge_ignores_client_trace_context_and_returns_the_business_key(eshop: Placed) -> None:
    stack = eshop.stack
    foreign = "00-11111111111111111111111111111111-2222222222222222-01"
    order = {"email": "edge@example.com", "cardNumber": CARD, "lines": [{"sku": "PEN-9", "quantity": 1}]}
    response = httpx.post(
        f"{stack.gateway_url}/graphql",
        json={"query": shop.CREATE_ORDER, "variables": {"input": order}},
        headers={"traceparent": foreign, "baggage": "order.id=o-forged"},
        timeout=30,
    )
    order_id = response.json()["data"]["createOrder"]["id"]
    assert response.headers["baggage"] == f"order.id={order_id}"
    trace = runner.wait_traces(stack.db, [order_id], timeout=30)[order_id]
    assert trace.trace_ids != {"11111111111111111111111111111111"}
    assert [(r.service, r.parent_span_id) for r in trace.roots] == [("gateway", None)]
    assert {s.attributes.get("order.id") for s in trace.spans} == {order_id}

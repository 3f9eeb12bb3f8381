"""One order through every client and web stack we support, each a real process started
unchanged under ``tracebridge run``: Flask + confluent ``Producer`` → kafka-python consumer →
``requests`` → aiohttp server → confluent ``AIOProducer`` (envelope) → confluent ``consume()``.

The apps in ``tests/apps/chain/`` contain no tracing code.  The result must be one trace with
exactly the expected parents, and the batch consumer's receive span linked to its record.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import unique
from tracebridge.analysis.model import SpanRecord
from tracebridge.broker import free_port

pytest.importorskip("confluent_kafka")
pytest.importorskip("kafka")
pytest.importorskip("aiohttp")

APPS = Path(__file__).parent / "apps" / "chain"


def launch(app: str, service: str, collector, **env: str) -> subprocess.Popen[str]:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEBRIDGE_"))},
        "OTEL_SERVICE_NAME": service,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        **env,
    }
    command = [sys.executable, "-m", "tracebridge", "run", "--", sys.executable, str(APPS / app)]
    return subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_healthy(url: str, process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not become healthy")


def finish(process: subprocess.Popen[str], timeout: float = 60) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return out


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)


def only(spans: list[SpanRecord], service: str, name: str) -> SpanRecord:
    found = [s for s in spans if s.service == service and s.name == name]
    assert len(found) == 1, f"{service}:{name} in {sorted((s.service, s.name) for s in spans)}"
    return found[0]


def test_one_order_is_one_trace_through_every_client(broker, bootstrap, collector) -> None:
    orders, shipments = unique("chain-orders"), unique("chain-shipments")
    broker.create_topics([orders, shipments], partitions=1)
    front_port, back_port = free_port(), free_port()
    back = launch(
        "back_aiohttp.py",
        "back",
        collector,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        TOPIC=shipments,
        PORT=str(back_port),
    )
    front = launch(
        "front_flask.py",
        "front",
        collector,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        TOPIC=orders,
        PORT=str(front_port),
    )
    try:
        wait_healthy(f"http://127.0.0.1:{back_port}", back)
        wait_healthy(f"http://127.0.0.1:{front_port}", front)
        relay = launch(
            "relay_kafka_python.py",
            "relay",
            collector,
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            TOPIC=orders,
            BACK_URL=f"http://127.0.0.1:{back_port}",
        )
        response = httpx.post(f"http://127.0.0.1:{front_port}/orders", json={"id": "o-chain-1"}, timeout=10)
        assert response.status_code == 202
        finish(relay)
        batch = launch(
            "batch_confluent.py", "batch", collector, KAFKA_BOOTSTRAP_SERVERS=bootstrap, TOPIC=shipments
        )
        assert finish(batch).strip() == "1"
    finally:
        stop(front)
        stop(back)

    deadline = time.monotonic() + 15
    while True:
        spans = collector.store.spans_between(0)
        services = {s.service for s in spans}
        if {"front", "relay", "back", "batch"} <= services and any(
            s.name.startswith("receive") for s in spans
        ):
            break
        assert time.monotonic() < deadline, sorted((s.service, s.name) for s in spans)
        time.sleep(0.1)

    server_front = only(spans, "front", "POST /orders")
    send_orders = only(spans, "front", f"send {orders}")
    process_orders = only(spans, "relay", f"process {orders}")
    call_back = only(spans, "relay", "POST")
    server_back = only(spans, "back", "POST /ship")
    send_shipments = only(spans, "back", f"send {shipments}")
    receive = only(spans, "batch", f"receive {shipments}")

    chain = [server_front, send_orders, process_orders, call_back, server_back, send_shipments]
    assert server_front.parent_span_id is None and server_front.kind == "SERVER"
    for child, parent in zip(chain[1:], chain, strict=False):
        assert child.parent_span_id == parent.span_id, f"{child.service}:{child.name} ← {parent.name}"
    assert len({s.trace_id for s in chain}) == 1
    assert [s.kind for s in chain] == ["SERVER", "PRODUCER", "CONSUMER", "CLIENT", "SERVER", "PRODUCER"]
    assert process_orders.attributes["tracebridge.context.source"] == "headers"
    assert send_orders.attributes["messaging.kafka.offset"] == 0
    assert send_shipments.attributes["tracebridge.context.carrier"] == "envelope"
    assert send_shipments.attributes["messaging.kafka.offset"] == 0
    # The batch is its own trace, linked to the record's producer.
    assert receive.parent_span_id is None and receive.kind == "CONSUMER"
    assert [(link.trace_id, link.span_id) for link in receive.links] == [
        (send_shipments.trace_id, send_shipments.span_id)
    ]
    # Every record traced once: no second send or consumer span from another layer.
    assert len([s for s in spans if s.kind == "PRODUCER"]) == 2
    assert len([s for s in spans if s.kind == "CONSUMER"]) == 2

"""A chain across Node.js and Python, every process real: a Node.js gateway with stock
OpenTelemetry JS (http + kafkajs instrumentations, pinned in tests/node/package-lock.json) sends
an order to Kafka; a Python service under ``tracebridge run`` forwards it; a Node.js consumer
handles it — with kafkajs ``eachMessage`` (parented: one trace) and with ``eachBatch`` (its process
span starts a new trace under a ``poll`` span and only *links* to the producer).  Either way the
order's story is one answer: both hops, their queue waits, the consumer's HTTP call."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import unique
from tests.test_client_chain import stop, wait_healthy
from tracebridge.analysis.diagnosis import diagnose
from tracebridge.analysis.doctor import doctor
from tracebridge.analysis.service_map import service_map
from tracebridge.analysis.story import story
from tracebridge.broker import free_port
from tracebridge.collector.source import StoreSource

NODE = Path(__file__).parent / "node"
APPS = Path(__file__).parent / "apps"


def node_environment(service: str, collector, **env: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEBRIDGE_"))},
        "OTEL_SERVICE_NAME": service,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        **env,
    }


def node(script: str, service: str, collector, **env: str) -> subprocess.Popen[str]:  # type: ignore[no-untyped-def]
    node_binary = shutil.which("node")
    assert node_binary, "the mixed-language tests need Node.js (make test checks for it)"
    assert (NODE / "node_modules" / ".installed").exists(), (
        "run `make test`: it installs tests/node with npm ci"
    )
    return subprocess.Popen(
        [node_binary, str(NODE / script)],
        env=node_environment(service, collector, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def python_relay(collector, **env: str) -> subprocess.Popen[str]:  # type: ignore[no-untyped-def]
    environment = {
        **node_environment("py-relay", collector, **env),
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    command = [sys.executable, "-m", "tracebridge", "run", "--", sys.executable, str(APPS / "relay.py")]
    return subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen[str], timeout: float = 90) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return out


@pytest.mark.parametrize("mode", ["message", "batch"])
def test_one_answer_across_node_and_python(broker, bootstrap, collector, mode: str) -> None:
    orders, shipments = unique("node-orders"), unique("node-shipments")
    broker.create_topics([orders, shipments], partitions=1)
    port = free_port()
    gateway = node(
        "gateway.js",
        "node-gateway",
        collector,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        TOPIC=orders,
        PORT=str(port),
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", gateway)
        order_id = f"o-node-{mode}"
        response = httpx.post(f"http://127.0.0.1:{port}/orders", json={"id": order_id}, timeout=10)
        assert response.status_code == 202
        finish(
            python_relay(collector, KAFKA_BOOTSTRAP_SERVERS=bootstrap, IN_TOPIC=orders, OUT_TOPIC=shipments)
        )
        consumer = node(
            "consumer.js",
            "node-consumer",
            collector,
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            TOPIC=shipments,
            GROUP=unique("node-group"),
            MODE=mode,
            EXPECT="1",
            NOTIFY_URL=f"http://127.0.0.1:{port}/notify",
        )
        assert finish(consumer).strip() == order_id
    finally:
        stop(gateway)

    deadline = time.monotonic() + 20
    while True:
        spans = collector.store.spans_between(0)
        names = {(s.service, s.name) for s in spans}
        if (
            {("node-consumer", f"process {shipments}"), ("node-gateway", "POST")} <= names
            and (
                "node-gateway",
                f"send {orders}",
            )
            in names
            and ("py-relay", f"process {orders}") in names
        ):
            break
        assert time.monotonic() < deadline, sorted(names)
        time.sleep(0.2)

    def one(service: str, name: str):  # type: ignore[no-untyped-def]
        found = [s for s in spans if s.service == service and s.name == name]
        assert len(found) == 1, (service, name, sorted(names))
        return found[0]

    send_orders = one("node-gateway", f"send {orders}")
    relay_process = one("py-relay", f"process {orders}")
    relay_send = one("py-relay", f"send {shipments}")
    node_process = one("node-consumer", f"process {shipments}")
    assert relay_process.parent_span_id == send_orders.span_id  # Python continues Node's trace
    assert relay_process.attributes["tracebridge.context.source"] == "headers"
    assert relay_send.parent_span_id == relay_process.span_id
    if mode == "message":
        assert node_process.parent_span_id == relay_send.span_id
        assert node_process.trace_id == send_orders.trace_id
    else:
        poll = one("node-consumer", f"poll {shipments}")
        assert poll.kind == "CLIENT" and poll.parent_span_id is None
        assert node_process.parent_span_id == poll.span_id and node_process.trace_id != send_orders.trace_id
        assert [(link.trace_id, link.span_id) for link in node_process.links] == [
            (relay_send.trace_id, relay_send.span_id)
        ]

    # The same answer in both modes, asked from the order's trace or from the consumer's.
    source = StoreSource(store=collector.store)
    for entry in {send_orders.trace_id, node_process.trace_id}:
        whole = story(source, entry)
        diagnosis = diagnose(whole)
        assert diagnosis.trace_id == send_orders.trace_id
        assert [(h.topic, h.producer, h.consumer) for h in diagnosis.hops] == [
            (orders, "node-gateway", "py-relay"),
            (shipments, "py-relay", "node-consumer"),
        ]
        assert diagnosis.hops[1].linked is (mode == "batch")
        assert all(hop.queue_wait_ns > 0 for hop in diagnosis.hops)
        assert {"node-gateway", "py-relay", "node-consumer"} <= set(diagnosis.services)
        assert node_process.span_id in diagnosis.critical_span_ids
        notify = [
            s for s in whole.spans if s.service == "node-consumer" and s.kind == "CLIENT" and s.name == "POST"
        ]
        assert len(notify) == 1
        # the consumer's call hangs under the hop: under its process span (eachMessage) or
        # under the poll that eachBatch runs the handler in, which hangs under the send
        ancestors, step = [], whole.parent(notify[0])
        while step is not None:
            ancestors.append(step.span_id)
            step = whole.parent(step)
        assert relay_send.span_id in ancestors and send_orders.span_id in ancestors
        assert (node_process.span_id in ancestors) is (mode == "message")
    assert doctor(spans, now_ns=time.time_ns() + 120 * 10**9) == []
    edges = {(e["source"], e["target"], e["type"], e["topic"]) for e in service_map(spans)}
    assert {
        ("node-gateway", "py-relay", "async", orders),
        ("py-relay", "node-consumer", "async", shipments),
    } <= edges
    command = [sys.executable, "-m", "tracebridge", "diagnose", "--source", str(collector.store.path)]
    report = subprocess.run(
        [*command, send_orders.trace_id, "--json"], capture_output=True, text=True, timeout=60
    )
    assert report.returncode == 0, report.stderr
    assert len(json.loads(report.stdout)["hops"]) == 2
    # what a user reads (README's "mixed-language fleets" shows this output)
    text = subprocess.run(
        [*command, node_process.trace_id],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "110"},
    )
    assert text.returncode == 0, text.stderr
    print(text.stdout)
    assert "node-gateway → py-relay" in text.stdout and "py-relay → node-consumer" in text.stdout
    assert ("linked" in text.stdout) is (mode == "batch")

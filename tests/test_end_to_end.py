"""The demo chain as real processes under `tracebridge run`, exporting to a real collector:
one trace per order with the exact tree, and the CLI's answers about it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tracebridge.analysis.model import SpanRecord, Trace
from tracebridge.demo.runner import DemoResult, run_chain


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> DemoResult:
    return run_chain(orders=3, timeout=90, log_dir=tmp_path_factory.mktemp("demo"))


def cli(demo: DemoResult, *args: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "tracebridge", *args, "--source", str(demo.db), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def only(trace: Trace, service: str, name: str) -> SpanRecord:
    found = [s for s in trace.spans if s.service == service and s.name == name]
    assert len(found) == 1, f"{service}:{name} in {[(s.service, s.name) for s in trace.spans]}"
    return found[0]


def test_every_order_is_one_complete_trace(demo: DemoResult) -> None:
    assert set(demo.traces) == set(demo.order_ids)
    for order_id, trace in demo.traces.items():
        assert len(trace.trace_ids) == 1
        assert {s.attributes["order.id"] for s in trace.spans} == {order_id}


def test_trace_has_exactly_the_expected_spans_and_parents(demo: DemoResult) -> None:
    for trace in demo.traces.values():
        assert len(trace.spans) == 7
        request = only(trace, "web", "POST /orders")
        send_orders = only(trace, "web", "send orders")
        process_orders = only(trace, "worker", "process orders")
        email_call = only(trace, "worker", "POST")
        email_server = only(trace, "mailer", "POST /sendEmail")
        send_shipments = only(trace, "worker", "send shipments")
        process_shipments = only(trace, "shipper", "process shipments")
        assert trace.roots == [request]
        expected = [
            (request, "SERVER", None),
            (send_orders, "PRODUCER", request),
            (process_orders, "CONSUMER", send_orders),
            (email_call, "CLIENT", process_orders),
            (email_server, "SERVER", email_call),
            (send_shipments, "PRODUCER", process_orders),
            (process_shipments, "CONSUMER", send_shipments),
        ]
        for span, kind, parent in expected:
            assert span.kind == kind, span.name
            assert span.parent_span_id == (parent.span_id if parent else None), span.name
            assert span.status != "ERROR", span.name


def test_consumer_spans_link_to_their_producer_and_report_the_hop(demo: DemoResult) -> None:
    for trace in demo.traces.values():
        for topic, consumer in (("orders", "worker"), ("shipments", "shipper")):
            send = next(s for s in trace.spans if s.name == f"send {topic}")
            process = only(trace, consumer, f"process {topic}")
            assert [(link.span_id, dict(link.attributes)) for link in process.links] == [
                (send.span_id, {"tracebridge.link.type": "follows_from"})
            ]
            assert process.attributes["tracebridge.context.source"] == "headers"
            assert process.attributes["tracebridge.delivery.attempt"] == 1
            assert process.attributes["messaging.consumer.group.name"] == consumer
            assert process.attributes["tracebridge.queue_wait_ms"] >= 0
            assert process.attributes["messaging.kafka.offset"] == send.attributes["messaging.kafka.offset"]
            # the process span covers the whole handler, including the calls it made
            children = [s for s in trace.spans if s.parent_span_id == process.span_id]
            assert all(process.start_ns <= c.start_ns and c.end_ns <= process.end_ns for c in children)


def test_business_key_is_on_every_span(demo: DemoResult) -> None:
    for trace in demo.traces.values():
        order_ids = {span.attributes.get("order.id") for span in trace.spans}
        assert len(order_ids) == 1 and None not in order_ids


def test_each_service_reports_its_own_service_name(demo: DemoResult) -> None:
    for trace in demo.traces.values():
        assert {s.service for s in trace.spans} == {"web", "worker", "mailer", "shipper"}
        assert all(s.resource.get("telemetry.distro.name") == "tracebridge" for s in trace.spans)


def test_trace_command_finds_the_order_and_marks_the_whole_chain_critical(demo: DemoResult) -> None:
    order_id = demo.order_ids[0]
    data = cli(demo, "trace", "--order", order_id)
    assert data["trace_id"] == demo.traces[order_id].spans[0].trace_id
    assert len(data["spans"]) == 7
    critical = {span["name"] for span in data["spans"] if span["critical"]}
    assert {
        "POST /orders",
        "send orders",
        "process orders",
        "send shipments",
        "process shipments",
    } <= critical


def test_diagnose_command_breaks_down_both_hops(demo: DemoResult) -> None:
    data = cli(demo, "diagnose", "--order", demo.order_ids[-1])
    assert [(h["topic"], h["producer"], h["consumer"]) for h in data["hops"]] == [
        ("orders", "web", "worker"),
        ("shipments", "worker", "shipper"),
    ]
    trace = demo.traces[demo.order_ids[-1]]
    assert data["end_to_end_ns"] == max(s.end_ns for s in trace.spans) - min(s.start_ns for s in trace.spans)
    assert (
        sum(segment["end_ns"] - segment["start_ns"] for segment in data["segments"]) == data["end_to_end_ns"]
    )
    assert data["failures"] == [] and data["retries"] == [] and data["dead_letters"] == []
    assert data["verdict"]["share"] > 0


def test_doctor_finds_no_broken_chain_in_the_demo(demo: DemoResult) -> None:
    data = cli(demo, "doctor", "--since", "1h", "--unprocessed-after", "0s")
    assert data["spans_examined"] >= 21
    assert data["broken"] == []

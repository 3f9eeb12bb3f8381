"""Pure logic of eshop and the demo's option parsing, and the business-keys processor's
ordering rules (unit tests: no broker or HTTP needed to decide these)."""

from __future__ import annotations

import json

import pytest
import typer
from opentelemetry import baggage, context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from eshop import events
from eshop.config import Config, ConfigError
from tracebridge.business_keys import BusinessKeysProcessor
from tracebridge.demo.commands import parse_faults


def test_events_round_trip_with_a_deterministic_id() -> None:
    created = events.OrderCreated.for_order(
        "o-1", "a@example.com", [events.Line(sku="MUG-7", quantity=2)], 2400
    )
    decoded = events.decode(created.encode())
    assert decoded == created and decoded.event_id == "o-1:created" and decoded.version == 1


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty payload"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"type": "OrderDeleted", "version": 1}', "unknown event type 'OrderDeleted'"),
        (b'{"type": "OrderCreated", "version": 2}', "unsupported OrderCreated version '2'"),
        (
            b'{"type": "ShipmentScheduled", "version": 1, "event_id": "e", "order_id": "o"}',
            "invalid ShipmentScheduled",
        ),
        (json.dumps({"type": "x" * 10_000}).encode(), "unknown event type"),
        (b"[" * 100_000, "nested deeper than the parser allows"),  # found by the soak: it killed every worker
    ],
)
def test_undecodable_events_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(events.UndecodableEvent) as raised:
        events.decode(payload)
    assert reason in raised.value.reason and len(raised.value.reason) < 300


def test_config_reads_its_environment_and_names_the_bad_variable() -> None:
    config = Config.from_env(
        {"PORT": "9000", "ESHOP_FAULT_ERROR_RATE": "0.5", "ESHOP_FAULT_DROP_CONTEXT": "yes"}
    )
    assert config.port == 9000 and config.faults.error_rate == 0.5 and config.faults.drop_context
    for env, message in [
        ({"PORT": "eighty"}, "PORT='eighty' is not a number"),
        ({"ESHOP_FAULT_ERROR_RATE": "2"}, "ESHOP_FAULT_ERROR_RATE='2' must be between 0 and 1"),
        ({"BILLING_URL": "billing:8080"}, "BILLING_URL='billing:8080' is not an http(s) URL"),
        ({"ESHOP_FAULT_DROP_CONTEXT": "maybe"}, "must be true or false"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            Config.from_env(env)


def test_fault_flags_parse_and_reject_unknown_services_and_bad_values() -> None:
    faults = parse_faults(["logistics-worker=800"], ["notification=0.3"], ["inventory-worker"])
    assert faults.env("logistics-worker") == {"ESHOP_FAULT_LATENCY_MS": "800"}
    assert faults.env("notification") == {"ESHOP_FAULT_ERROR_RATE": "0.3"}
    assert faults.env("inventory-worker") == {"ESHOP_FAULT_DROP_CONTEXT": "true"}
    for slow, fail, broken, message in [
        (["shipping=10"], None, None, "unknown service 'shipping'"),
        (["order"], None, None, "expected SERVICE=NUMBER"),
        (None, ["notification=1.5"], None, "between 0 and 1"),
        (None, None, ["nobody"], "--break-context: unknown service 'nobody'"),
    ]:
        with pytest.raises(typer.BadParameter, match=message):
            parse_faults(slow, fail, broken)


def keyed_provider(
    max_held: int = 10_000,
) -> tuple[TracerProvider, InMemorySpanExporter, BusinessKeysProcessor]:
    exporter = InMemorySpanExporter()
    processor = BusinessKeysProcessor(("order.id",), SimpleSpanProcessor(exporter), max_held=max_held)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    return provider, exporter, processor


def test_spans_that_ended_before_the_key_existed_are_held_then_get_it() -> None:
    provider, exporter, _ = keyed_provider()
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("request"):
        with tracer.start_as_current_span("parse"):
            pass
        assert exporter.get_finished_spans() == ()  # held: its trace's key may still come
        token = context.attach(baggage.set_baggage("order.id", "o-7"))
        with tracer.start_as_current_span("charge"):
            pass
        context.detach(token)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"request", "parse", "charge"}
    assert {name: span.attributes.get("order.id") for name, span in spans.items()} == dict.fromkeys(
        spans, "o-7"
    )


def test_a_trace_that_never_gets_a_key_is_released_when_its_last_local_span_ends() -> None:
    provider, exporter, _ = keyed_provider()
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("health"):
        with tracer.start_as_current_span("inner"):
            pass
        assert exporter.get_finished_spans() == ()
    assert [span.name for span in exporter.get_finished_spans()] == ["inner", "health"]
    assert all("order.id" not in span.attributes for span in exporter.get_finished_spans())


def test_held_spans_are_bounded_and_flushed_never_dropped() -> None:
    provider, exporter, _ = keyed_provider(max_held=2)
    tracer = provider.get_tracer("t")
    root = tracer.start_span("long-running")
    with _current(root):
        for index in range(4):
            tracer.start_span(f"child-{index}").end()
    assert [s.name for s in exporter.get_finished_spans()] == ["child-2", "child-3"]  # past the bound
    provider.force_flush()
    assert len(exporter.get_finished_spans()) == 4  # flush releases the held ones
    root.end()
    assert len(exporter.get_finished_spans()) == 5


def _current(span):  # type: ignore[no-untyped-def]
    from opentelemetry import trace

    return trace.use_span(span, end_on_exit=False)


def test_adopted_keys_reach_open_spans_and_are_written_to_responses() -> None:
    from tracebridge import business_keys

    provider, exporter, processor = keyed_provider()
    tracer = provider.get_tracer("t")
    business_keys.set_active(processor)
    try:
        with tracer.start_as_current_span("server") as server:
            with tracer.start_as_current_span("client") as client:
                business_keys.adopt_from_response(client, [(b"baggage", b"order.id=o-9,secret=x")])
            carrier: dict[str, str] = {}
            business_keys.BusinessKeysResponsePropagator().inject(carrier)
        assert carrier == {"baggage": "order.id=o-9"}
        assert server.attributes["order.id"] == "o-9"
        assert all("secret" not in span.attributes for span in exporter.get_finished_spans())
    finally:
        business_keys.set_active(None)

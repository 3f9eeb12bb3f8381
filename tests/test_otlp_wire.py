"""The hand-written OTLP encoder writes exactly what the SDK's encoder does: both decoded with
the standard ``opentelemetry-proto`` schema and compared, for every kind of span we export."""

from __future__ import annotations

import time

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from tests.conftest import unique
from tracebridge.messaging.spans import ClientInfo, MessagingSpans, Record
from tracebridge.otlp_wire import encode_spans

REMOTE = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
LOCAL = SpanContext(0xABC, 0x123, is_remote=False, trace_flags=TraceFlags(1))


def decoded(data: bytes) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(data)


def assert_same_as_sdk(spans) -> None:
    ours = decoded(encode_spans(spans))
    theirs = decoded(sdk_encode(spans).SerializeToString())
    assert ours == theirs, f"\nours:   {ours}\ntheirs: {theirs}"


def handmade(name: str, **overrides) -> ReadableSpan:
    fields = {
        "name": name,
        "context": SpanContext(
            2**127 + 5,
            2**63 + 7,
            is_remote=False,
            trace_flags=TraceFlags(1),
            trace_state=TraceState([("vendor", "x1"), ("t@sys", "2")]),
        ),
        "parent": REMOTE,
        "resource": Resource({"service.name": "orders", "process.pid": 42, "ratio": 0.5}, "https://schema/1"),
        "attributes": {
            "text": "héllo ✓",
            "empty": "",
            "yes": True,
            "no": False,
            "zero": 0,
            "negative": -17,
            "big": 2**62,
            "float": -1.25,
            "strings": ("a", "b"),
            "ints": (1, -2, 3),
            "bools": (True, False),
            "nothing": (),
        },
        "events": (
            Event(
                "exception",
                {"exception.type": "ValueError", "exception.message": "bad"},
                1_700_000_000_000_000_001,
            ),
            Event("plain", None, 5),
        ),
        "links": (Link(REMOTE, {"tracebridge.link.type": "follows_from"}), Link(LOCAL)),
        "kind": SpanKind.CONSUMER,
        "status": Status(StatusCode.ERROR, "ValueError: bad"),
        "start_time": 1_700_000_000_000_000_000,
        "end_time": 1_700_000_000_123_456_789,
        "instrumentation_scope": InstrumentationScope(
            "tracebridge.messaging", "0.1.0", "https://opentelemetry.io/schemas/1.37.0"
        ),
    }
    fields.update(overrides)
    return ReadableSpan(**fields)


def test_every_field_and_value_type_encodes_as_the_sdk_does() -> None:
    assert_same_as_sdk([handmade("process orders")])


def test_defaults_unset_fields_and_every_kind() -> None:
    spans = [
        handmade(
            f"span {kind.name}",
            kind=kind,
            parent=None,
            attributes=None,
            events=(),
            links=(),
            status=Status(StatusCode.UNSET),
            context=SpanContext(1, 2, False),
        )
        for kind in SpanKind
    ]
    spans.append(handmade("ok", status=Status(StatusCode.OK), parent=LOCAL))
    assert_same_as_sdk(spans)


def test_spans_are_grouped_by_resource_then_scope_in_first_seen_order() -> None:
    other_resource = Resource({"service.name": "billing"})
    other_scope = InstrumentationScope("opentelemetry.instrumentation.flask", "0.66b1")
    spans = [
        handmade("a"),
        handmade("b", resource=other_resource),
        handmade("c", instrumentation_scope=other_scope),
        handmade("d", resource=other_resource, instrumentation_scope=None),
        handmade("e"),
    ]
    for span in spans[1:]:  # the same Resource object, as the SDK hands them over
        if span.resource.attributes.get("service.name") == "orders":
            span._resource = spans[0].resource
    spans[3]._resource = spans[1].resource
    assert_same_as_sdk(spans)


def test_real_light_spans_from_the_kafka_path_encode_as_the_sdk_does(spans) -> None:
    from opentelemetry import trace

    messaging = MessagingSpans(trace.get_tracer("tracebridge.test"))
    client = ClientInfo("kafka", "c-1", "127.0.0.1", 9092, "billing")
    topic = unique("wire")
    send, headers, _ = messaging.start_send(
        client, topic, partition=None, key=b"o-1", value=b"{}", headers=None
    )
    MessagingSpans.end_send(send, partition=0, offset=41)
    process, _ = messaging.start_process(
        client, Record(topic, 0, 41, b"o-1", int(time.time() * 1000), headers, b"{}", 2), "billing"
    )
    process.end()
    finished = spans.get_finished_spans()
    assert len(finished) == 2
    assert_same_as_sdk(finished)


def test_sdk_spans_that_dropped_attributes_events_and_links_encode_as_the_sdk_does() -> None:
    # The SDK's own spans are read field by field (not through their properties): the counts
    # its bounded containers dropped must still reach the wire.
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    kept = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=2, max_events=1, max_links=1))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    tracer = provider.get_tracer("tracebridge.test", "1.0")
    span = tracer.start_span(
        "bounded", attributes={"a": 1, "b": "two", "c": 3.0}, links=[Link(REMOTE), Link(LOCAL)]
    )
    span.add_event("first", {"n": 1})
    span.add_event("second")
    span.end()
    finished = kept.get_finished_spans()
    assert (finished[0].dropped_attributes, finished[0].dropped_events, finished[0].dropped_links) == (
        1,
        1,
        1,
    )
    live = [span]  # the SDK's live Span object, as a batch processor hands it to the exporter
    assert_same_as_sdk(live)
    ours = decoded(encode_spans(live)).resource_spans[0].scope_spans[0].spans[0]
    assert (ours.dropped_attributes_count, ours.dropped_events_count, ours.dropped_links_count) == (1, 1, 1)


def test_equal_values_of_different_types_keep_their_own_encoding_across_batches() -> None:
    # Encoded pairs are cached by (key, value): True == 1 == 1.0, but each is its own AnyValue.
    values = [True, 1, 1.0, "1", 8000, "8000", False, 0]
    spans = [handmade(f"v{n}", attributes={"flag": value}) for n, value in enumerate(values)]
    for _ in range(2):  # the second batch is served from the cache
        assert_same_as_sdk(spans)
        attributes = [
            span.attributes[0].value
            for span in decoded(encode_spans(spans)).resource_spans[0].scope_spans[0].spans
        ]
        assert [value.WhichOneof("value") for value in attributes] == [
            "bool_value",
            "int_value",
            "double_value",
            "string_value",
            "int_value",
            "string_value",
            "bool_value",
            "int_value",
        ]

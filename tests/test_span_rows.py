"""The collector's rows read off a request's bytes (C scanner) are the rows the decoded request
gives (the Python reference) — for every request shape here, for generated ones, for mutated
bodies — and the store's many-rows-a-statement inserts and checkpointer keep every span."""

from __future__ import annotations

import random
import sqlite3
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from opentelemetry.trace import SpanKind

from tests.test_otlp_wire import handmade
from tracebridge.collector import span_rows
from tracebridge.collector.span_rows import Indexed, PreparedBatch, rows_from_message
from tracebridge.collector.store import DEFAULT_INDEXED_ATTRIBUTES, SpanStore
from tracebridge.otlp_wire import encode_spans

INDEXED = Indexed(frozenset(DEFAULT_INDEXED_ATTRIBUTES) | {"tenant.id", "héllo"})


def test_the_scanner_is_built() -> None:
    """``make`` builds it (setup.py marks it optional, for installs without a compiler): a
    build that failed here must fail the suite, not slow the collector down unnoticed."""
    assert span_rows.scanner_built()


def scanned(body: bytes) -> PreparedBatch:
    """The scanner's rows, asserting it did not hand the body to the Python path."""
    assert span_rows._span_scan is not None
    found = span_rows._span_scan.scan(
        body, INDEXED.encoded, span_rows.MAX_INDEXED_VALUE, span_rows._resource_id_of_bytes
    )
    spans, attributes, links, resources, accepted, rejected, reason = found
    return PreparedBatch(
        spans, attributes, links, resources, span_rows.WriteResult(accepted, rejected, reason)
    )


def assert_same_rows(body: bytes) -> PreparedBatch:
    reference = rows_from_message(ExportTraceServiceRequest.FromString(body), INDEXED.keys)
    fast = scanned(body)
    assert fast.result == reference.result
    assert [row[:11] for row in fast.span_rows] == [row[:11] for row in reference.span_rows]
    # Stored bytes: as they came (the scanner) or encoded again (the reference): the same span.
    assert [Span.FromString(row[11]) for row in fast.span_rows] == [
        Span.FromString(row[11]) for row in reference.span_rows
    ]
    assert fast.attribute_rows == reference.attribute_rows
    assert fast.link_rows == reference.link_rows
    assert fast.resource_rows == reference.resource_rows
    return fast


def key_value(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def a_span(number: int, **fields: object) -> Span:
    span = Span(
        trace_id=number.to_bytes(16, "big"),
        span_id=(number + 1).to_bytes(8, "big"),
        name=f"span {number}",
        kind=2,
        start_time_unix_nano=1_700_000_000_000_000_000 + number,
        end_time_unix_nano=1_700_000_000_000_900_000 + number,
    )
    for name, value in fields.items():
        if name == "attributes":
            span.attributes.extend(value)  # type: ignore[arg-type]
        elif name == "links":
            span.links.extend(value)  # type: ignore[arg-type]
        elif name == "status":
            span.status.CopyFrom(value)  # type: ignore[arg-type]
        else:
            setattr(span, name, value)
    return span


def request(*spans: Span, service: AnyValue | None = None, scope: str = "s") -> bytes:
    resource = Resource()
    if service is not None:
        resource.attributes.append(key_value("service.name", service))
    resource.attributes.append(key_value("host.name", AnyValue(string_value="h1")))
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(resource=resource, scope_spans=[ScopeSpans(scope={"name": scope}, spans=spans)])
        ]
    ).SerializeToString()


def field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field, to build bodies in orders encoders do not use."""

    def varint(value: int) -> bytes:
        out = bytearray()
        while True:
            out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
            value >>= 7
            if not value:
                return bytes(out)

    return varint(number << 3 | 2) + varint(len(payload)) + payload


def test_sdk_and_our_encoders_outputs_give_the_reference_rows() -> None:
    spans = [
        handmade("first"),
        handmade("second", attributes={"order.id": "o-1", "customer.id": 7, "error.type": "ValueError"}),
        handmade(
            "third", parent=None, kind=SpanKind.INTERNAL, attributes={"order.id": "ö" * 300, "user.id": 2.5}
        ),
    ]
    for body in (encode_spans(spans), sdk_encode(spans).SerializeToString()):
        rows = assert_same_rows(body)
        assert rows.result.accepted == 3
        assert {(key, value) for key, value, _ in rows.attribute_rows} == {
            ("order.id", "o-1"),
            ("customer.id", "7"),
            ("error.type", "ValueError"),
            ("user.id", "2.5"),
        }  # the 300-character order.id is past MAX_INDEXED_VALUE: stored, not indexed
        assert len(rows.link_rows) == 6  # two links a span


def test_indexed_values_of_every_type_and_repeated_keys() -> None:
    values = [
        ("order.id", AnyValue(string_value="o-1")),
        ("customer.id", AnyValue(int_value=-42)),
        ("user.id", AnyValue(bool_value=True)),
        ("tenant.id", AnyValue(double_value=1e20)),
        ("error.type", AnyValue(double_value=float("inf"))),
        ("messaging.kafka.message.key", AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1)]))),
        ("héllo", AnyValue(bytes_value=b"\x00")),
        ("order.id", AnyValue(string_value="o-2")),  # a key twice: both values indexed
        ("not.indexed", AnyValue(string_value="x")),
        ("order.id", AnyValue()),  # unset: not indexed
    ]
    rows = assert_same_rows(request(a_span(1, attributes=[key_value(k, v) for k, v in values])))
    assert {(key, value) for key, value, _ in rows.attribute_rows} == {
        ("order.id", "o-1"),
        ("order.id", "o-2"),
        ("customer.id", "-42"),
        ("user.id", "true"),
        ("tenant.id", "1e+20"),
        ("error.type", "inf"),
    }


def test_rejected_spans_and_their_first_reason() -> None:
    spans = [
        a_span(1, trace_id=bytes(16)),
        a_span(2, span_id=b"\x01" * 7),
        a_span(3, parent_span_id=b"\x01" * 3),
        a_span(4, end_time_unix_nano=5),
        a_span(5, start_time_unix_nano=2**63, end_time_unix_nano=0),
        a_span(6, end_time_unix_nano=0),  # still running: stored with end = start
        a_span(7, kind=-1, status=Status(code=2, message="boom")),
    ]
    rows = assert_same_rows(request(*spans, service=AnyValue(string_value="orders")))
    assert (rows.result.accepted, rows.result.rejected, rows.result.reason) == (2, 5, "invalid trace_id")
    still_running, failed = rows.span_rows
    assert still_running[6] == still_running[7]
    assert (failed[3], failed[5], failed[8]) == ("orders", -1, 2)


def test_service_names_that_are_missing_empty_or_not_text() -> None:
    for service, expected in (
        (None, "unknown_service"),
        (AnyValue(string_value=""), "unknown_service"),
        (AnyValue(int_value=3), "unknown_service"),
        (AnyValue(string_value="billing"), "billing"),
    ):
        rows = assert_same_rows(request(a_span(1), service=service))
        assert rows.span_rows[0][3] == expected


def test_protobuf_merge_rules_and_field_orders_encoders_do_not_use() -> None:
    span = a_span(9, links=[Span.Link(trace_id=b"\x02" * 16, span_id=b"\x03" * 8)]).SerializeToString()
    later_name = field(5, b"renamed")
    status_a, status_b = (
        field(15, Status(message="m").SerializeToString()),
        field(15, Status(code=2).SerializeToString()),
    )
    unknown = field(99, b"from a newer schema")
    kind_as_bytes = field(6, b"\x05")  # kind with the wrong wire type: an unknown field, skipped
    spans_bytes = field(2, span + later_name + status_a + unknown + status_b + kind_as_bytes)
    scope = field(1, field(1, b"late.scope"))
    resource = field(1, field(1, field(1, b"service.name") + field(2, field(1, b"late-service"))))
    # scope_spans before their scope, and resource_spans' scope_spans before the resource
    body = field(
        1, field(2, spans_bytes + scope) + resource + field(1, field(1, field(1, b"other") + field(2, b"")))
    )
    rows = assert_same_rows(body)
    (row,) = rows.span_rows
    assert (row[3], row[4], row[8], row[10]) == ("late-service", "renamed", 2, "late.scope")
    assert rows.link_rows == [(row[0], row[1], "02" * 16, "03" * 8)]


def test_several_resources_and_scopes_keep_their_own_service_and_scope() -> None:
    body = ExportTraceServiceRequest.FromString(
        request(a_span(1), a_span(2), service=AnyValue(string_value="a"), scope="x")
    ).SerializeToString() + request(
        a_span(3), service=AnyValue(string_value="b"), scope="y"
    )  # two requests' bytes one after another are one request of both
    rows = assert_same_rows(body)
    assert [(row[3], row[10]) for row in rows.span_rows] == [("a", "x"), ("a", "x"), ("b", "y")]
    assert len(rows.resource_rows) == 2


any_values = st.one_of(
    st.builds(lambda text: AnyValue(string_value=text), st.text(max_size=300)),
    st.builds(lambda number: AnyValue(int_value=number), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda number: AnyValue(double_value=number), st.floats()),
    st.builds(lambda flag: AnyValue(bool_value=flag), st.booleans()),
    st.just(AnyValue()),
)
generated_spans = st.builds(
    lambda trace, span_id, parent, start, length, kind, attrs: Span(
        trace_id=trace,
        span_id=span_id,
        parent_span_id=parent,
        name="g",
        kind=kind,
        start_time_unix_nano=start,
        end_time_unix_nano=max(0, min(2**64 - 1, start + length)),
        attributes=[KeyValue(key=key, value=value) for key, value in attrs],
        links=[Span.Link(trace_id=trace, span_id=parent)] if parent else [],
    ),
    st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=20)),
    st.one_of(st.binary(min_size=8, max_size=8), st.binary(max_size=9)),
    st.one_of(st.just(b""), st.binary(min_size=8, max_size=8), st.binary(max_size=9)),
    st.integers(0, 2**64 - 1),
    st.integers(-(10**9), 10**12),
    st.integers(-(2**31), 2**31 - 1),
    st.lists(
        st.tuples(st.sampled_from(["order.id", "user.id", "tenant.id", "other", ""]), any_values), max_size=6
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(spans=st.lists(generated_spans, max_size=6))
def test_generated_requests_give_the_reference_rows(spans: list[Span]) -> None:
    assert_same_rows(request(*spans, service=AnyValue(string_value="svc")))


def test_mutated_bodies_give_the_reference_rows_or_go_the_python_way() -> None:
    """Bytes flipped, cut and inserted in real bodies: what upb decodes, the scanner reads the
    same, or refuses (ValueError) and the store takes the Python path — never a crash."""
    rng = random.Random(20261204)
    bases = [
        encode_spans([handmade("m", attributes={"order.id": "o-9", "user.id": 3})]),
        request(
            a_span(1, attributes=[key_value("order.id", AnyValue(string_value="o-1"))]),
            service=AnyValue(string_value="x"),
        ),
    ]
    decoded = refused = 0
    for _ in range(4000):
        body = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 4)):
            where = rng.randrange(len(body))
            what = rng.random()
            if what < 0.6:
                body[where] = rng.randrange(256)
            elif what < 0.8:
                del body[where:]
                if not body:
                    body.append(0)
            else:
                body[where:where] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
        try:
            ExportTraceServiceRequest.FromString(bytes(body))
        except Exception:
            continue  # the collector answers 400 before any rows are built
        decoded += 1
        try:
            assert_same_rows(bytes(body))
        except ValueError:
            refused += 1
            prepared = span_rows.prepare(
                ExportTraceServiceRequest.FromString(bytes(body)), bytes(body), INDEXED
            )
            assert (
                prepared.result
                == rows_from_message(ExportTraceServiceRequest.FromString(bytes(body)), INDEXED.keys).result
            )
    print(f"{decoded} of 4000 mutated bodies decoded; the scanner refused {refused}")
    assert decoded > 300, decoded  # the mutations reached the scanner, not only upb's refusals
    assert refused < decoded / 2


def test_without_the_scanner_the_python_path_gives_the_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    body = request(a_span(1, attributes=[key_value("order.id", AnyValue(string_value="o-1"))]))
    monkeypatch.setattr(span_rows, "_span_scan", None)
    prepared = span_rows.prepare(ExportTraceServiceRequest.FromString(body), body, INDEXED)
    assert prepared.attribute_rows == {("order.id", "o-1", (1).to_bytes(16, "big").hex())}
    assert Span.FromString(prepared.span_rows[0][11]) == a_span(
        1, attributes=[key_value("order.id", AnyValue(string_value="o-1"))]
    )


def test_the_scanner_keeps_no_memory_between_requests() -> None:
    body = encode_spans([handmade(f"x{i}", attributes={"order.id": f"o-{i}"}) for i in range(50)])
    for _ in range(200):
        scanned(body)
    tracemalloc.start()
    try:
        for _ in range(200):
            scanned(body)
        first, _ = tracemalloc.get_traced_memory()
        for _ in range(2000):
            scanned(body)
        second, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert second - first < 64 * 1024, (first, second)


@pytest.mark.parametrize("count", [1, 255, 256, 257, 700])
def test_many_rows_a_statement_store_every_span_and_attribute(tmp_path: Path, count: int) -> None:
    store = SpanStore(tmp_path / "t.db")
    try:
        # a low host-parameter limit, as some SQLite builds have: fewer rows a statement
        store._writer.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 40)
        spans = [
            a_span(n, attributes=[key_value("order.id", AnyValue(string_value=f"o-{n}"))])
            for n in range(1, count + 1)
        ]
        body = request(*spans, service=AnyValue(string_value="orders"))
        store.commit([store.prepare(ExportTraceServiceRequest.FromString(body), body)])
        assert store.span_count() == count
        assert store.trace_ids_with("order.id", f"o-{count}") == [count.to_bytes(16, "big").hex()]
        (record,) = store.trace(count.to_bytes(16, "big").hex())
        assert (record.service, record.name, record.attributes["order.id"]) == (
            "orders",
            f"span {count}",
            f"o-{count}",
        )
    finally:
        store.close()


def test_the_checkpointer_copies_the_log_into_the_database(tmp_path: Path) -> None:
    """Below the writer's own automatic checkpoint (10 000 pages), only the checkpointer
    thread copies committed pages into the database file."""
    store = SpanStore(tmp_path / "t.db")
    try:
        before = (tmp_path / "t.db").stat().st_size
        spans = [a_span(n) for n in range(1, 2001)]
        body = request(*spans)
        store.commit([store.prepare(ExportTraceServiceRequest.FromString(body), body)])
        deadline = time.monotonic() + 10
        while (tmp_path / "t.db").stat().st_size <= before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "t.db").stat().st_size > before + 400_000
        assert store.span_count() == 2000
    finally:
        store.close()
    assert store._checkpointer is not None and not store._checkpointer.thread.is_alive()

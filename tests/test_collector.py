"""The collector over real sockets and a real SQLite file: ingestion, limits, query API."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest
from google.rpc import status_pb2
from opentelemetry import baggage, context
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from tests.conftest import RunningCollector
from tracebridge.business_keys import BusinessKeysProcessor
from tracebridge.collector.app import CollectorConfig


def export_with(exporter, service: str = "order") -> tuple[str, str]:
    """Three spans (server → producer, and an internal child) through a real SDK + exporter."""
    provider = TracerProvider(resource=Resource({"service.name": service}))
    provider.add_span_processor(BusinessKeysProcessor(("order.id",), SimpleSpanProcessor(exporter)))
    tracer = provider.get_tracer("tests")
    token = context.attach(baggage.set_baggage("order.id", "o-77"))
    try:
        with tracer.start_as_current_span("POST /graphql", kind=SpanKind.SERVER) as root:
            with tracer.start_as_current_span("send orders", kind=SpanKind.PRODUCER) as send:
                send.set_attribute("messaging.destination.name", "orders")
            with tracer.start_as_current_span("validate"):
                pass
    finally:
        context.detach(token)
    provider.shutdown()
    return f"{root.get_span_context().trace_id:032x}", f"{root.get_span_context().span_id:016x}"


def assert_stored(collector: RunningCollector, trace_id: str, root_id: str) -> None:
    body = httpx.get(f"{collector.url}/api/traces/{trace_id}").json()
    spans = {span["name"]: span for span in body["spans"]}
    assert set(spans) == {"POST /graphql", "send orders", "validate"}
    assert spans["POST /graphql"]["parent_span_id"] is None and spans["POST /graphql"]["span_id"] == root_id
    assert spans["send orders"]["parent_span_id"] == root_id and spans["send orders"]["kind"] == "PRODUCER"
    assert {span["service"] for span in spans.values()} == {"order"}
    assert all(span["attributes"]["order.id"] == "o-77" for span in spans.values())


def test_standard_protobuf_exporter_round_trip(collector) -> None:
    trace_id, root_id = export_with(OTLPSpanExporter(endpoint=f"{collector.url}/v1/traces"))
    assert_stored(collector, trace_id, root_id)


def test_standard_exporter_with_gzip(collector) -> None:
    exporter = OTLPSpanExporter(endpoint=f"{collector.url}/v1/traces", compression=Compression.Gzip)
    assert_stored(collector, *export_with(exporter))


def test_standard_json_exporter_keeps_hex_ids(collector) -> None:
    from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter as JsonExporter

    assert_stored(collector, *export_with(JsonExporter(endpoint=f"{collector.url}/v1/traces")))


def test_search_by_attribute_service_and_services_list(collector) -> None:
    trace_id, _ = export_with(OTLPSpanExporter(endpoint=f"{collector.url}/v1/traces"))
    export_with(OTLPSpanExporter(endpoint=f"{collector.url}/v1/traces"), service="billing")
    found = httpx.get(
        f"{collector.url}/api/traces", params={"attr": "order.id=o-77", "service": "order"}
    ).json()
    assert [t["trace_id"] for t in found["traces"]] == [trace_id]
    summary = found["traces"][0]
    assert (summary["root_name"], summary["span_count"], summary["error_count"]) == ("POST /graphql", 3, 0)
    assert httpx.get(f"{collector.url}/api/services").json() == {"services": ["billing", "order"]}
    assert httpx.get(f"{collector.url}/api/traces", params={"attr": "order.id=nope"}).json() == {"traces": []}
    assert httpx.get(f"{collector.url}/api/traces", params={"attr": "no-equals"}).status_code == 400


def _request(*, trace_id: bytes, span_id: bytes, name: str = "s", start: int = 1_000, end: int = 2_000):
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    attribute = resource_spans.resource.attributes.add()
    attribute.key, attribute.value.string_value = "service.name", "unit"
    span = resource_spans.scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = trace_id, span_id, name
    span.start_time_unix_nano, span.end_time_unix_nano = start, end
    return request


def _post(
    collector, body: bytes, content_type: str = "application/x-protobuf", **headers: str
) -> httpx.Response:
    return httpx.post(
        f"{collector.url}/v1/traces", content=body, headers={"Content-Type": content_type, **headers}
    )


def test_invalid_spans_are_rejected_with_partial_success(collector) -> None:
    request = _request(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    bad = request.resource_spans[0].scope_spans[0].spans.add()
    bad.trace_id, bad.span_id, bad.name = bytes(16), b"\x03" * 8, "zero trace id"
    response = _post(collector, request.SerializeToString())
    assert response.status_code == 200
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 1
    assert "invalid trace_id" in answer.partial_success.error_message
    assert collector.store.span_count() == 1


def test_spans_of_one_trace_arriving_apart_join_one_trace(collector) -> None:
    first = _request(trace_id=b"\x07" * 16, span_id=b"\x01" * 8, name="send orders")
    later = _request(
        trace_id=b"\x07" * 16, span_id=b"\x02" * 8, name="process orders", start=60 * 10**9, end=61 * 10**9
    )
    later.resource_spans[0].scope_spans[0].spans[0].parent_span_id = b"\x01" * 8
    assert _post(collector, first.SerializeToString()).status_code == 200
    assert _post(collector, later.SerializeToString()).status_code == 200
    spans = httpx.get(f"{collector.url}/api/traces/{'07' * 16}").json()["spans"]
    assert [(s["name"], s["parent_span_id"]) for s in spans] == [
        ("send orders", None),
        ("process orders", "01" * 8),
    ]


def test_malformed_protobuf_is_400_with_rpc_status_and_stores_nothing(collector) -> None:
    response = _post(collector, b"\xff\xff\xff garbage")
    assert response.status_code == 400
    status = status_pb2.Status.FromString(response.content)
    assert status.code == 3 and "malformed" in status.message
    assert collector.store.span_count() == 0


def test_malformed_json_is_400_in_json(collector) -> None:
    response = _post(
        collector,
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
        "application/json",
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert "not hex" in response.json()["message"]
    assert collector.store.span_count() == 0


def test_wrong_content_type_is_415(collector) -> None:
    response = _post(collector, b"hello", "text/plain")
    assert response.status_code == 415 and collector.store.span_count() == 0


def test_oversized_body_is_413(tmp_path) -> None:
    with RunningCollector(tmp_path / "t.db", CollectorConfig(max_body_bytes=10_000)) as small:
        response = _post(
            small, _request(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="x" * 20_000).SerializeToString()
        )
        assert response.status_code == 413
        assert small.store.span_count() == 0


def test_gzip_bomb_is_413_after_decompression(tmp_path) -> None:
    bomb = gzip.compress(b"\x00" * 50_000_000)
    assert len(bomb) < 100_000
    with RunningCollector(tmp_path / "t.db", CollectorConfig(max_body_bytes=1_000_000)) as small:
        response = _post(small, bomb, **{"Content-Encoding": "gzip"})
        assert response.status_code == 413
        assert status_pb2.Status.FromString(response.content).code == 8
        assert small.store.span_count() == 0


def test_truncated_gzip_is_400(collector) -> None:
    body = gzip.compress(_request(trace_id=b"\x01" * 16, span_id=b"\x02" * 8).SerializeToString())[:-8]
    assert _post(collector, body, **{"Content-Encoding": "gzip"}).status_code == 400


def test_overloaded_writer_answers_429_with_retry_after(tmp_path) -> None:
    with RunningCollector(
        tmp_path / "t.db", CollectorConfig(max_pending_requests=0, retry_after_s=3)
    ) as busy:
        response = _post(busy, _request(trace_id=b"\x01" * 16, span_id=b"\x02" * 8).SerializeToString())
        assert response.status_code == 429 and response.headers["retry-after"] == "3"
        assert busy.store.span_count() == 0


def test_requests_beyond_the_pending_limit_get_429_and_those_within_it_are_stored(tmp_path) -> None:
    """The writer is held (another connection owns SQLite's write lock): the request it took
    waits, two more queue — the limit — and the next is turned away; once the lock goes,
    every accepted request is stored."""
    import sqlite3
    import threading
    import time

    with RunningCollector(
        tmp_path / "t.db", CollectorConfig(max_pending_requests=2, retry_after_s=1)
    ) as busy:
        blocker = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        answers: dict[int, int] = {}

        def post(number: int) -> None:
            body = _request(trace_id=bytes([number]) * 16, span_id=b"\x02" * 8).SerializeToString()
            answers[number] = httpx.post(
                f"{busy.url}/v1/traces",
                content=body,
                headers={"Content-Type": "application/x-protobuf"},
                timeout=30,
            ).status_code

        threads = [threading.Thread(target=post, args=(1,))]
        threads[0].start()
        time.sleep(0.5)  # the writer has taken request 1 and waits for the lock
        for number in (2, 3):
            threads.append(threading.Thread(target=post, args=(number,)))
            threads[-1].start()
        time.sleep(0.5)  # requests 2 and 3 wait in the queue: the limit
        post(4)
        assert answers == {4: 429}
        blocker.execute("ROLLBACK")
        blocker.close()
        for thread in threads:
            thread.join(30)
        assert answers == {1: 200, 2: 200, 3: 200, 4: 429}
        assert busy.store.span_count() == 3


def test_bearer_token_guards_ingestion_and_api(tmp_path) -> None:
    with RunningCollector(tmp_path / "t.db", CollectorConfig(token="s3cret")) as guarded:
        body = _request(trace_id=b"\x01" * 16, span_id=b"\x02" * 8).SerializeToString()
        assert _post(guarded, body).status_code == 401
        assert httpx.get(f"{guarded.url}/api/services").status_code == 401
        assert _post(guarded, body, Authorization="Bearer s3cret").status_code == 200
        response = httpx.get(f"{guarded.url}/api/services", headers={"Authorization": "Bearer s3cret"})
        assert response.json() == {"services": ["unit"]}


def test_unknown_and_invalid_trace_ids(collector) -> None:
    assert httpx.get(f"{collector.url}/api/traces/{'ab' * 16}").status_code == 404
    assert httpx.get(f"{collector.url}/api/traces/not-a-trace").status_code == 400


def _trace(trace_id: bytes, starts: list[int], order: str) -> bytes:
    """One trace of ``len(starts)`` spans (the first the root), every span carrying order.id."""
    request = _request(trace_id=trace_id, span_id=b"\x10" * 8, start=starts[0], end=starts[0] + 1)
    spans = request.resource_spans[0].scope_spans[0].spans
    for number, start in enumerate(starts[1:], start=1):
        span = spans.add()
        span.trace_id, span.span_id, span.name = trace_id, bytes([0x10 + number]) * 8, f"hop {number}"
        span.parent_span_id = b"\x10" * 8
        span.start_time_unix_nano, span.end_time_unix_nano = start, start + 1
    for span in spans:
        attribute = span.attributes.add()
        attribute.key, attribute.value.string_value = "order.id", order
    return request.SerializeToString()


def test_retention_deletes_whole_old_traces(collector) -> None:
    import time

    now = time.time_ns()
    day = 86400 * 10**9
    # An old order whose last async hop arrived recently: the whole trace goes, not just its
    # old spans (a half trace would read as a broken chain).
    assert (
        _post(
            collector, _trace(b"\x01" * 16, [now - 10 * day, now - 9 * day, now - 1000], "o-old")
        ).status_code
        == 200
    )
    assert _post(collector, _trace(b"\x03" * 16, [now, now + 5], "o-new")).status_code == 200
    assert collector.store.apply_retention(max_age_s=86400, max_bytes=None) == 3
    assert httpx.get(f"{collector.url}/api/traces/{'01' * 16}").status_code == 404
    assert collector.store.trace_ids_with("order.id", "o-old") == []  # its index rows too
    kept = httpx.get(f"{collector.url}/api/traces/{'03' * 16}").json()["spans"]
    assert len(kept) == 2


def test_size_retention_deletes_the_oldest_traces_until_the_store_fits(collector) -> None:
    import time

    now = time.time_ns()
    for number in range(1, 201):
        starts = [now - (300 - number) * 10**9 + hop for hop in range(5)]
        body = _trace(number.to_bytes(2, "big") * 8, starts, f"o-{number}")
        assert _post(collector, body).status_code == 200
    before = collector.store.size_bytes()
    deleted = collector.store.apply_retention(max_age_s=None, max_bytes=before // 2)
    assert deleted > 0 and deleted % 5 == 0  # whole traces only
    assert collector.store.size_bytes() <= before // 2
    remaining = [n for n in range(1, 201) if collector.store.trace_ids_with("order.id", f"o-{n}")]
    assert remaining and remaining == list(range(remaining[0], 201))  # the oldest went first


@pytest.mark.parametrize("content_type", ["application/x-protobuf", "application/json"])
def test_success_answers_in_the_request_encoding(collector, content_type) -> None:
    request = _request(trace_id=b"\x05" * 16, span_id=b"\x06" * 8)
    if content_type == "application/json":
        from tracebridge.otlp import to_json

        body = to_json(request).encode()
    else:
        body = request.SerializeToString()
    response = _post(collector, body, content_type)
    assert response.status_code == 200 and response.headers["content-type"].startswith(content_type)
    if content_type == "application/json":
        assert json.loads(response.content) == {}


def test_any_attribute_is_searchable_indexed_or_not(collector) -> None:
    trace_id, _ = export_with(OTLPSpanExporter(endpoint=f"{collector.url}/v1/traces"))
    assert "messaging.destination.name" not in collector.store.indexed_attributes  # found by scanning
    found = httpx.get(
        f"{collector.url}/api/traces", params={"attr": "messaging.destination.name=orders"}
    ).json()
    assert [t["trace_id"] for t in found["traces"]] == [trace_id]
    assert collector.store.trace_ids_with("order.id", "o-77") == [trace_id]  # found by the index


def test_readers_use_the_indexed_keys_the_collector_chose(tmp_path) -> None:
    from tracebridge.collector.store import SpanStore

    SpanStore(tmp_path / "t.db", indexed_attributes=["tenant.id", "order.id"]).close()
    assert SpanStore(tmp_path / "t.db").indexed_attributes == {"tenant.id", "order.id"}


def test_a_collector_started_without_index_attributes_keeps_the_stored_choice(tmp_path) -> None:
    import os

    from tracebridge.collector.process import CollectorProcess
    from tracebridge.collector.store import DEFAULT_INDEXED_ATTRIBUTES, SpanStore

    db = tmp_path / "t.db"
    for flags in (["--index-attribute", "tenant.id"], []):
        with CollectorProcess(db, tmp_path / "collector.log", os.environ, args=flags):
            pass
        assert SpanStore(db).indexed_attributes == {"tenant.id"}
    assert SpanStore(tmp_path / "new.db").indexed_attributes == set(DEFAULT_INDEXED_ATTRIBUTES)


def test_api_sees_spans_stored_after_its_first_query(collector) -> None:
    """A reader connection that answered before any span arrived must not keep that view."""
    for _ in range(8):  # touch the reader threads the API uses
        assert httpx.get(f"{collector.url}/api/health").json()["spans_received"] == 0
    trace_id, _ = export_with(OTLPSpanExporter(endpoint=f"{collector.url}/v1/traces"))
    for _ in range(8):
        assert httpx.get(f"{collector.url}/api/health").json()["spans_received"] == 3
        found = httpx.get(f"{collector.url}/api/traces", params={"attr": "order.id=o-77"}).json()["traces"]
        assert [t["trace_id"] for t in found] == [trace_id]


def _chain_request() -> ExportTraceServiceRequest:
    """web SERVER → web PRODUCER → worker CONSUMER → worker CLIENT → mailer SERVER, plus a
    link-only consumer in a trace of its own."""
    request = ExportTraceServiceRequest()
    spans = {}
    plan = [
        ("web", "POST /orders", 2, None, 0, 10, "11", {}),
        ("web", "send orders", 4, "POST /orders", 2, 3, "11", {}),
        (
            "worker",
            "process orders",
            5,
            "send orders",
            50,
            80,
            "11",
            {"messaging.destination.name": "orders"},
        ),
        ("worker", "POST", 3, "process orders", 55, 70, "11", {}),
        ("mailer", "POST /sendEmail", 2, "POST", 56, 69, "11", {}),
        ("audit", "process orders", 5, None, 90, 95, "22", {"messaging.destination.name": "orders"}),
    ]
    for number, (service, name, kind, parent, start, end, trace, attributes) in enumerate(plan, start=1):
        resource_spans = request.resource_spans.add()
        attribute = resource_spans.resource.attributes.add()
        attribute.key, attribute.value.string_value = "service.name", service
        span = resource_spans.scope_spans.add().spans.add()
        span.trace_id = bytes.fromhex(trace * 16)
        span.span_id = number.to_bytes(8, "big")
        span.name, span.kind = name, kind
        span.start_time_unix_nano, span.end_time_unix_nano = start * 1_000_000, end * 1_000_000
        if parent:
            span.parent_span_id = spans[parent].span_id
        for key, value in attributes.items():
            item = span.attributes.add()
            item.key, item.value.string_value = key, value
        spans.setdefault(name, span)
    audit = request.resource_spans[-1].scope_spans[0].spans[0]
    link = audit.links.add()
    link.trace_id, link.span_id = spans["send orders"].trace_id, spans["send orders"].span_id
    return request


def test_service_map_has_sync_and_async_edges(collector) -> None:
    assert _post(collector, _chain_request().SerializeToString()).status_code == 200
    edges = httpx.get(f"{collector.url}/api/service-map").json()["edges"]
    found = {(e["source"], e["target"], e["type"], e["topic"]): e for e in edges}
    assert set(found) == {
        ("web", "worker", "async", "orders"),
        ("web", "audit", "async", "orders"),  # a link-only consumer, found through its link
        ("worker", "mailer", "sync", None),
    }
    hop = found[("web", "worker", "async", "orders")]
    assert (hop["count"], hop["p50_ms"], hop["error_rate"]) == (1, 48.0, 0.0)  # send start → process start
    assert found[("worker", "mailer", "sync", None)]["p95_ms"] == 13.0  # the callee's duration

"""Hostile input to the collector and the analysis, over real sockets: random and malformed
OTLP bodies (protobuf and JSON), 1 MB attribute values, a 10 000-span trace that is one
10 000-deep parent chain, parent cycles, duplicated span ids, spans from the future and times
past what a signed 64-bit integer holds.  Every one gets the right HTTP answer and a correct
analysis — no 500, no crash, no hang (each request has a timeout), and the collector still
answers afterwards."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from tests.conftest import RunningCollector
from tracebridge.analysis.diagnosis import diagnose
from tracebridge.analysis.model import SpanRecord, Trace
from tracebridge.render.waterfall import tree_order

PROTOBUF = {"content-type": "application/x-protobuf"}
JSON = {"content-type": "application/json"}
NOW = time.time_ns()
TIMEOUT = 60  # s: a hang fails the test instead of stalling the suite


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with RunningCollector(tmp_path_factory.mktemp("hostile") / "traces.db") as running:
        yield running


def post(collector: RunningCollector, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{collector.url}/v1/traces", content=body, headers=headers, timeout=TIMEOUT)


def alive(collector: RunningCollector) -> None:
    assert httpx.get(f"{collector.url}/api/services", timeout=TIMEOUT).status_code == 200


def request_of(spans: list[Span], service: str = "hostile") -> ExportTraceServiceRequest:
    resource = ResourceSpans()
    resource.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=service)))
    resource.scope_spans.append(ScopeSpans(spans=spans))
    return ExportTraceServiceRequest(resource_spans=[resource])


def span(
    trace: bytes, span_id: bytes, parent: bytes = b"", start: int = NOW, end: int | None = None, **attrs
) -> Span:  # type: ignore[no-untyped-def]
    out = Span(
        trace_id=trace,
        span_id=span_id,
        parent_span_id=parent,
        name=attrs.pop("name", "op"),
        kind=attrs.pop("kind", 1),
        start_time_unix_nano=start,
        end_time_unix_nano=start + 1_000 if end is None else end,
    )
    for key, value in attrs.items():
        out.attributes.append(
            KeyValue(key=key, value=value if isinstance(value, AnyValue) else AnyValue(string_value=value))
        )
    return out


def ids(number: int, size: int) -> bytes:
    return number.to_bytes(size, "big")


def stored(collector: RunningCollector, trace_hex: str) -> list[dict]:
    response = httpx.get(f"{collector.url}/api/traces/{trace_hex}", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()["spans"]


def diagnosis(collector: RunningCollector, trace_hex: str) -> dict:
    response = httpx.get(f"{collector.url}/api/traces/{trace_hex}/diagnosis", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()


# -- random bodies -------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.binary(max_size=2000), as_json=st.booleans())
def test_random_bytes_get_400_or_200_never_500(hostile: RunningCollector, body: bytes, as_json: bool) -> None:
    response = post(hostile, body, JSON if as_json else PROTOBUF)
    # Random bytes are sometimes a valid (empty-ish) protobuf message: then 200.
    assert response.status_code in (200, 400), response.text
    if response.status_code == 200 and not as_json:
        ExportTraceServiceResponse.FromString(response.content)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=30,
)
otlp_keys = st.sampled_from(
    [
        "resourceSpans",
        "scopeSpans",
        "spans",
        "traceId",
        "spanId",
        "parentSpanId",
        "attributes",
        "links",
        "startTimeUnixNano",
        "endTimeUnixNano",
        "kind",
        "status",
        "value",
        "stringValue",
        "intValue",
    ]
)
otlp_like = st.recursive(
    json_values,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(otlp_keys, inner, max_size=5),
    max_leaves=40,
)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(document=otlp_like)
def test_random_json_documents_get_400_or_200_never_500(hostile: RunningCollector, document: object) -> None:
    response = post(hostile, json.dumps(document).encode(), JSON)
    assert response.status_code in (200, 400), response.text


trace_ids = st.binary(min_size=0, max_size=20)
any_values = st.recursive(
    st.builds(AnyValue, string_value=st.text(max_size=40))
    | st.builds(AnyValue, int_value=st.integers(-(2**63), 2**63 - 1))
    | st.builds(AnyValue, double_value=st.floats())  # NaN and ±inf included
    | st.builds(AnyValue, bool_value=st.booleans())
    | st.builds(AnyValue, bytes_value=st.binary(max_size=20))
    | st.just(AnyValue()),
    lambda inner: (
        st.lists(inner, max_size=3).map(lambda vs: AnyValue(array_value={"values": vs}))
        | st.lists(st.tuples(st.text(max_size=8), inner), max_size=3).map(
            lambda kvs: AnyValue(kvlist_value={"values": [KeyValue(key=k, value=v) for k, v in kvs]})
        )
    ),
    max_leaves=10,
)
hostile_spans = st.builds(
    lambda trace, span_id, parent, start, length, kind, attrs: _hostile_span(
        trace, span_id, parent, start, length, kind, attrs
    ),
    trace=st.sampled_from([b"\x01" * 16, b"\x00" * 16]) | trace_ids,
    span_id=st.binary(min_size=8, max_size=8) | st.binary(min_size=0, max_size=10),
    parent=st.just(b"") | st.binary(min_size=8, max_size=8) | st.binary(min_size=0, max_size=10),
    start=st.integers(0, 2**64 - 1) | st.just(NOW),
    length=st.integers(-(10**9), 10**12),
    kind=st.integers(0, 2**31 - 1),
    attrs=st.lists(st.tuples(st.text(max_size=10), any_values), max_size=5),
)


def _hostile_span(trace, span_id, parent, start, length, kind, attrs) -> Span:  # type: ignore[no-untyped-def]
    end = max(0, min(2**64 - 1, start + length))
    out = Span(
        trace_id=trace,
        span_id=span_id,
        parent_span_id=parent,
        name="h",
        kind=kind,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
    )
    for key, value in attrs:
        out.attributes.append(KeyValue(key=key, value=value))
    return out


def storable(s: Span) -> bool:
    """Independent oracle for what the collector must accept."""
    return (
        len(s.trace_id) == 16
        and any(s.trace_id)
        and len(s.span_id) == 8
        and any(s.span_id)
        and (not s.parent_span_id or len(s.parent_span_id) == 8)
        and not (s.end_time_unix_nano and s.end_time_unix_nano < s.start_time_unix_nano)
        and s.start_time_unix_nano < 2**63
        and s.end_time_unix_nano < 2**63
    )


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(spans=st.lists(hostile_spans, min_size=1, max_size=8), as_json=st.booleans())
def test_structurally_valid_requests_of_hostile_spans_are_stored_or_rejected_per_span(
    hostile: RunningCollector, spans: list[Span], as_json: bool
) -> None:
    request = request_of(spans)
    if as_json:
        from tracebridge.otlp import to_json

        response = post(hostile, to_json(request).encode(), JSON)
    else:
        response = post(hostile, request.SerializeToString(), PROTOBUF)
    assert response.status_code == 200, response.text
    rejected = sum(1 for s in spans if not storable(s))
    if as_json:
        body = response.json()
        assert int(body.get("partialSuccess", {}).get("rejectedSpans", 0)) == rejected
    else:
        assert (
            ExportTraceServiceResponse.FromString(response.content).partial_success.rejected_spans == rejected
        )
    for s in spans:
        if storable(s):
            found = stored(hostile, s.trace_id.hex())
            assert s.span_id.hex() in {x["span_id"] for x in found}
            json.dumps(found, allow_nan=False)  # the API's JSON is JSON (NaN/inf are not)
            diagnosis(hostile, s.trace_id.hex())


def test_json_nested_past_any_parser_limit_is_a_400(hostile: RunningCollector) -> None:
    assert post(hostile, b"[" * 200_000, JSON).status_code == 400
    deep = (
        b'{"resourceSpans": [{"resource": {"attributes": [{"key": "k", "value": '
        + b'{"arrayValue": {"values": [' * 5000
    )
    assert post(hostile, deep, JSON).status_code == 400
    alive(hostile)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2)."""
    from tracebridge.otlp_wire import _varint

    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_protobuf_nested_past_the_parser_limit_is_a_400(hostile: RunningCollector) -> None:
    # Written by hand: the protobuf library refuses to build what it can't parse.
    value = AnyValue(string_value="leaf").SerializeToString()
    for _ in range(150):
        value = _field(5, _field(1, value))  # AnyValue.array_value → ArrayValue.values
    attribute = _field(1, b"k") + _field(2, value)  # KeyValue
    span_bytes = span(b"\x07" * 16, b"\x07" * 8).SerializeToString() + _field(9, attribute)
    body = _field(1, _field(2, _field(2, span_bytes)))  # request → resource_spans → scope_spans → spans
    response = post(hostile, body, PROTOBUF)
    assert response.status_code == 400, response.text
    alive(hostile)


# -- big, deep, broken and odd traces ------------------------------------------------------------


def test_a_1_mb_attribute_value_is_stored_and_served_whole(hostile: RunningCollector) -> None:
    big = "x" * (1024 * 1024)
    trace = b"\x11" * 16
    request = request_of([span(trace, b"\x11" * 8, note=big, **{"order.id": "o-big"})])
    assert post(hostile, request.SerializeToString(), PROTOBUF).status_code == 200
    (found,) = stored(hostile, trace.hex())
    assert found["attributes"]["note"] == big
    assert diagnosis(hostile, trace.hex())["span_count"] == 1


def test_non_finite_numbers_are_served_as_valid_json(hostile: RunningCollector) -> None:
    trace = b"\x13" * 16
    nan, inf = AnyValue(double_value=math.nan), AnyValue(double_value=-math.inf)
    request = request_of(
        [
            span(
                trace,
                b"\x13" * 8,
                nan=nan,
                inf=inf,
                nested=AnyValue(
                    array_value={
                        "values": [nan, AnyValue(kvlist_value={"values": [KeyValue(key="x", value=inf)]})]
                    }
                ),
            )
        ]
    )
    assert post(hostile, request.SerializeToString(), PROTOBUF).status_code == 200
    response = httpx.get(f"{hostile.url}/api/traces/{trace.hex()}", timeout=TIMEOUT)
    assert response.status_code == 200
    (found,) = json.loads(
        response.text, parse_constant=lambda name: pytest.fail(f"{name} in the API's JSON")
    )["spans"]
    assert found["attributes"] == {"nan": "NaN", "inf": "-Infinity", "nested": ["NaN", {"x": "-Infinity"}]}
    assert diagnosis(hostile, trace.hex())["span_count"] == 1


def test_a_body_over_the_limit_is_a_413(hostile: RunningCollector) -> None:
    huge = "x" * (9 * 1024 * 1024)
    request = request_of([span(b"\x12" * 16, b"\x12" * 8, note=huge)])
    assert post(hostile, request.SerializeToString(), PROTOBUF).status_code == 413
    alive(hostile)


DEEP = 10_000
DEEP_TRACE = b"\x21" * 16


def deep_chain() -> list[Span]:
    """One trace of 10 000 spans, each the parent of the next."""
    return [
        span(
            DEEP_TRACE,
            ids(n + 1, 8),
            ids(n, 8) if n else b"",
            start=NOW + n * 1000,
            end=NOW + 2 * DEEP * 1000 - n,
            name=f"hop {n}",
        )
        for n in range(DEEP)
    ]


@pytest.fixture(scope="module")
def deep(hostile: RunningCollector) -> str:
    chain = deep_chain()
    for chunk in range(0, DEEP, 2000):
        assert (
            post(hostile, request_of(chain[chunk : chunk + 2000]).SerializeToString(), PROTOBUF).status_code
            == 200
        )
    return DEEP_TRACE.hex()


def test_a_10000_deep_chain_is_stored_served_and_diagnosed(hostile: RunningCollector, deep: str) -> None:
    assert len(stored(hostile, deep)) == DEEP
    result = diagnosis(hostile, deep)
    assert result["span_count"] == DEEP
    assert result["end_to_end_ns"] == 2 * DEEP * 1000
    assert len(result["critical_span_ids"]) == DEEP


def test_a_10000_deep_chain_renders_in_the_terminal(hostile: RunningCollector, deep: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tracebridge", "trace", deep, "--source", str(hostile.store.path)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        env={**os.environ, "COLUMNS": "140"},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if "│" in line and "hop " in line]
    assert len(lines) == DEEP
    assert max(len(line) for line in lines) <= 200  # indentation is capped, not 20 kB a row


def test_parent_cycles_and_self_parents_are_cut_and_every_span_is_shown(hostile: RunningCollector) -> None:
    trace = b"\x31" * 16
    a, b, c, selfish = ids(1, 8), ids(2, 8), ids(3, 8), ids(4, 8)
    request = request_of(
        [
            span(trace, a, c, start=NOW, end=NOW + 30, name="a"),  # a → c → b → a
            span(trace, b, a, start=NOW + 10, end=NOW + 20, name="b"),
            span(trace, c, b, start=NOW + 12, end=NOW + 18, name="c"),
            span(trace, selfish, selfish, start=NOW + 40, end=NOW + 50, name="self"),
        ]
    )
    assert post(hostile, request.SerializeToString(), PROTOBUF).status_code == 200
    found = diagnosis(hostile, trace.hex())
    assert found["span_count"] == 4 and found["end_to_end_ns"] == 50
    model = Trace(_records(stored(hostile, trace.hex())))
    assert model.cycles_broken == 2  # the three-span cycle and the span that is its own parent
    assert [(s.name, d) for s, d in tree_order(model)] == [("a", 0), ("b", 1), ("c", 2), ("self", 0)]


def test_duplicated_span_ids_are_analysed_once(hostile: RunningCollector) -> None:
    trace = b"\x41" * 16
    root, child = ids(1, 8), ids(2, 8)
    # The same span twice (a retried export), and a second span reusing the child's id whose
    # parent is itself — an SDK bug that must not make any walk loop.
    request = request_of(
        [
            span(trace, root, start=NOW, end=NOW + 100, name="root"),
            span(trace, child, root, start=NOW + 10, end=NOW + 20, name="child"),
            span(trace, child, root, start=NOW + 10, end=NOW + 20, name="child"),
            span(trace, child, child, start=NOW + 30, end=NOW + 40, name="impostor"),
        ]
    )
    assert post(hostile, request.SerializeToString(), PROTOBUF).status_code == 200
    served = stored(hostile, trace.hex())
    assert sorted((s["name"], s["parent_span_id"]) for s in served) == [("child", root.hex()), ("root", None)]
    found = diagnosis(hostile, trace.hex())
    assert found["span_count"] == 2 and found["end_to_end_ns"] == 100
    # The model on its own, given all four (a source that doesn't deduplicate).
    records = _records(
        [*served, {**served[-1]}, {**served[-1], "name": "impostor", "parent_span_id": child.hex()}]
    )
    model = Trace(records)
    assert model.duplicate_spans == 2
    assert [(s.name, d) for s, d in tree_order(model)] == [("root", 0), ("child", 1)]
    assert diagnose(model).span_count == 2


def test_spans_from_the_future_are_kept_and_times_past_int64_rejected_alone(
    hostile: RunningCollector,
) -> None:
    trace = b"\x51" * 16
    year = 365 * 24 * 3600 * 10**9
    request = request_of(
        [
            span(trace, ids(1, 8), start=NOW, end=NOW + 1000, name="now"),
            span(trace, ids(2, 8), ids(1, 8), start=NOW + year, end=NOW + year + 1000, name="next year"),
            span(trace, ids(3, 8), ids(1, 8), start=2**63, end=2**63 + 5, name="past int64"),
            span(trace, ids(4, 8), ids(1, 8), start=2**64 - 2, end=2**64 - 1, name="max fixed64"),
        ]
    )
    response = post(hostile, request.SerializeToString(), PROTOBUF)
    assert response.status_code == 200
    answer = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert answer.rejected_spans == 2 and "2262" in answer.error_message
    assert {s["name"] for s in stored(hostile, trace.hex())} == {"now", "next year"}
    assert diagnosis(hostile, trace.hex())["end_to_end_ns"] == year + 1000


def test_one_poisoned_request_does_not_fail_the_requests_committed_with_it(hostile: RunningCollector) -> None:
    """Requests that arrive together are committed together; if the group fails, each is
    committed alone, so only the request that really can't be stored fails."""
    from tracebridge.collector.span_rows import PreparedBatch

    good = hostile.store.prepare(request_of([span(b"\x61" * 16, ids(1, 8), name="good")]))
    poisoned = hostile.store.prepare(request_of([span(b"\x62" * 16, ids(1, 8), name="poisoned")]))
    rows = list(poisoned.span_rows[0])
    rows[6] = 2**64  # what a future bug in row building could produce
    poisoned = PreparedBatch(
        [tuple(rows)], poisoned.attribute_rows, poisoned.link_rows, poisoned.resource_rows, poisoned.result
    )
    from tracebridge.collector.app import CollectorConfig
    from tracebridge.collector.intake import Writer as _Writer

    writer = _Writer(hostile.store, CollectorConfig(retention_every_s=3600))
    try:
        import asyncio

        async def both() -> list[object]:
            futures = [writer.submit(good), writer.submit(poisoned)]
            return await asyncio.gather(*futures, return_exceptions=True)

        results = asyncio.run(both())
    finally:
        writer.stop()
    assert not isinstance(results[0], BaseException)
    assert isinstance(results[1], OverflowError)
    assert [s["name"] for s in stored(hostile, (b"\x61" * 16).hex())] == ["good"]


def _records(spans: list[dict]) -> list[SpanRecord]:
    return [
        SpanRecord(
            trace_id=s["trace_id"],
            span_id=s["span_id"],
            parent_span_id=s["parent_span_id"],
            name=s["name"],
            kind=s["kind"],
            start_ns=s["start_ns"],
            end_ns=s["end_ns"],
            service=s["service"],
        )
        for s in spans
    ]


def test_analysis_of_hand_built_hostile_traces_terminates() -> None:
    """The model on its own: cycles of every length, duplicates, and a long chain."""
    for length in (1, 2, 3, 50):
        spans = [
            SpanRecord(
                "ab" * 16,
                f"{n + 1:016x}",
                f"{(n + 1) % length + 1:016x}",
                f"s{n}",
                "INTERNAL",
                n,
                n + 10,
                "svc",
            )
            for n in range(length)
        ]
        model = Trace(spans)
        assert model.cycles_broken == 1 and len(tree_order(model)) == length
        assert math.isclose(diagnose(model).end_to_end_ns, length + 9)

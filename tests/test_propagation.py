"""Strict W3C Trace Context Level 2, baggage limits, B3/Jaeger, carriers: pure logic."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from tracebridge.messaging.record_context import extract_record_context
from tracebridge.propagation.carriers import (
    KAFKA_HEADERS_GETTER,
    KAFKA_HEADERS_SETTER,
    read_envelope,
    write_envelope,
)
from tracebridge.propagation.w3c import StrictTraceContextPropagator, parse_tracestate
from tracebridge.sdk import build_propagator

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
VALID = f"00-{TRACE_ID}-{SPAN_ID}-01"
strict = StrictTraceContextPropagator()


def extracted(carrier: dict[str, list[str]]) -> SpanContext:
    context = strict.extract(carrier, Context(), getter=_ListGetter())
    return trace.get_current_span(context).get_span_context()


class _ListGetter:
    def get(self, carrier: dict[str, list[str]], key: str) -> list[str] | None:
        return carrier.get(key)

    def keys(self, carrier: dict[str, list[str]]) -> list[str]:
        return list(carrier)


def test_valid_traceparent_is_extracted_as_remote_parent() -> None:
    span_context = extracted({"traceparent": [VALID]})
    assert span_context.is_valid and span_context.is_remote
    assert (f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}") == (TRACE_ID, SPAN_ID)
    assert span_context.trace_flags == 0x01


@pytest.mark.parametrize(
    "value",
    [
        VALID.upper(),  # hex must be lowercase
        f"ff-{TRACE_ID}-{SPAN_ID}-01",  # version ff is forbidden
        f"00-{TRACE_ID}-{SPAN_ID}-01-extra",  # version 00 is exactly 55 characters
        f"01-{TRACE_ID}-{SPAN_ID}-01extra",  # future fields must follow a dash
        f"00-{'0' * 32}-{SPAN_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE_ID[:-1]}-{SPAN_ID}-01",  # short trace id
        f"00-{TRACE_ID}-{SPAN_ID}-0g",  # non-hex flags
        f"0x-{TRACE_ID}-{SPAN_ID}-01",  # non-hex version
        f"00_{TRACE_ID}_{SPAN_ID}_01",  # wrong delimiters
        "",
        "garbage",
    ],
)
def test_invalid_traceparent_starts_a_new_trace(value: str) -> None:
    assert not extracted({"traceparent": [value]}).is_valid


def test_future_version_with_more_fields_is_accepted() -> None:
    assert extracted({"traceparent": [f"cc-{TRACE_ID}-{SPAN_ID}-01-what-the-future-holds"]}).is_valid


def test_duplicated_traceparent_starts_a_new_trace_even_when_both_are_valid() -> None:
    assert not extracted({"traceparent": [VALID, VALID]}).is_valid


def test_random_flag_is_kept_on_extract_and_inject() -> None:
    span_context = extracted({"traceparent": [f"00-{TRACE_ID}-{SPAN_ID}-03"]})
    assert span_context.trace_flags.random_trace_id and span_context.trace_flags.sampled
    carrier: dict[str, str] = {}
    strict.inject(carrier, trace.set_span_in_context(NonRecordingSpan(span_context)))
    assert carrier["traceparent"] == f"00-{TRACE_ID}-{SPAN_ID}-03"


def test_tracestate_keeps_multi_tenant_keys_and_first_of_duplicates() -> None:
    span_context = extracted(
        {"traceparent": [VALID], "tracestate": ["tenant@vendor=a,rojo=1", "rojo=2, congo=t61rcWkgMzE"]}
    )
    assert list(span_context.trace_state.items()) == [
        ("tenant@vendor", "a"),
        ("rojo", "1"),
        ("congo", "t61rcWkgMzE"),
    ]


def test_tracestate_drops_only_illegal_members() -> None:
    state = parse_tracestate(["good=1,BAD=2,=x,novalue=,also-good=3,x@Y=4,ok=a b"])
    assert list(state.items()) == [("good", "1"), ("also-good", "3"), ("ok", "a b")]


def test_tracestate_keeps_at_most_32_members() -> None:
    state = parse_tracestate([",".join(f"k{i}=v{i}" for i in range(40))])
    assert len(state) == 32 and list(state.keys())[-1] == "k31"


def test_tracestate_is_ignored_when_traceparent_is_invalid() -> None:
    assert extracted({"traceparent": ["nope"], "tracestate": ["a=b"]}).trace_state == TraceState()


def test_baggage_limits_are_enforced_on_inject() -> None:
    propagator = build_propagator(("baggage",))
    context = Context()
    for i in range(200):
        context = baggage.set_baggage(f"k{i}", "v", context)
    carrier: dict[str, str] = {}
    propagator.inject(carrier, context)
    assert len(carrier["baggage"].split(",")) == 180


def test_oversized_baggage_is_not_extracted() -> None:
    propagator = build_propagator(("baggage",))
    context = propagator.extract({"baggage": "k=" + "v" * 9000})
    assert baggage.get_all(context) == {}


@pytest.mark.parametrize(
    ("names", "header"),
    [
        (("b3",), "b3"),
        (("b3multi",), "x-b3-traceid"),
        (("jaeger",), "uber-trace-id"),
        (("tracecontext",), "traceparent"),
    ],
)
def test_otel_propagators_choose_the_wire_format(names: tuple[str, ...], header: str) -> None:
    span = NonRecordingSpan(SpanContext(int(TRACE_ID, 16), int(SPAN_ID, 16), True, TraceFlags(1)))
    carrier: dict[str, str] = {}
    build_propagator(names).inject(carrier, trace.set_span_in_context(span))
    assert header in carrier
    back = build_propagator(names).extract(carrier)
    assert f"{trace.get_current_span(back).get_span_context().trace_id:032x}" == TRACE_ID


def test_kafka_getter_handles_bytes_none_repeats_and_bad_utf8() -> None:
    headers = [("traceparent", VALID.encode()), ("x", None), ("x", b""), ("TraceParent", b"\xff\xfe")]
    assert KAFKA_HEADERS_GETTER.get(headers, "x") == ["", ""]
    values = KAFKA_HEADERS_GETTER.get(headers, "traceparent")
    assert values is not None and len(values) == 2  # the corrupt one still counts: duplicate
    context, source = extract_record_context(headers, None)
    assert source == "none" and not trace.get_current_span(context).get_span_context().is_valid


def test_kafka_setter_replaces_a_forwarded_records_context() -> None:
    headers = [("traceparent", b"old"), ("keep", b"1")]
    KAFKA_HEADERS_SETTER.set(headers, "traceparent", VALID)
    assert headers == [("keep", b"1"), ("traceparent", VALID.encode())]


def test_envelope_round_trip_keeps_body_type_and_content() -> None:
    fields = {"traceparent": VALID}
    as_bytes = write_envelope(b'{"order": 1}', fields)
    assert isinstance(as_bytes, bytes) and json.loads(as_bytes) == {"order": 1, "trace_context": fields}
    assert read_envelope(as_bytes) == fields
    original = {"order": 1}
    as_dict = write_envelope(original, fields)
    assert original == {"order": 1} and read_envelope(as_dict) == fields
    assert write_envelope(b"[1, 2]", fields) is None
    assert write_envelope(b"not json", fields) is None
    assert read_envelope(b'{"trace_context": "not an object"}') is None


def test_headers_win_over_envelope() -> None:
    other = f"00-{'1' * 32}-{'2' * 16}-01"
    context, source = extract_record_context(
        [("traceparent", VALID.encode())], json.dumps({"trace_context": {"traceparent": other}}).encode()
    )
    assert source == "headers"
    assert f"{trace.get_current_span(context).get_span_context().trace_id:032x}" == TRACE_ID


header_key = st.sampled_from(["traceparent", "tracestate", "baggage", "TRACEPARENT", "b3", "x"]) | st.text(
    max_size=20
)
header_value = (
    st.none()
    | st.binary(max_size=300)
    | st.builds(lambda n, b: b * n, st.integers(9000, 20000), st.binary(min_size=1, max_size=3))
)
hostile_headers = st.lists(st.tuples(header_key, header_value), max_size=12)
hostile_body = (
    st.none()
    | st.binary(max_size=200)
    | st.builds(
        lambda tc: json.dumps({"trace_context": tc}).encode(),
        st.dictionaries(
            st.sampled_from(["traceparent", "baggage", "x"]), st.text(max_size=80) | st.integers()
        ),
    )
)


# A valid context, to mix into the garbage: it must survive whatever surrounds it.
valid_ids = st.tuples(
    st.integers(1, 2**128 - 1).map(lambda n: f"{n:032x}"),
    st.integers(1, 2**64 - 1).map(lambda n: f"{n:016x}"),
)
valid_traceparent = valid_ids.map(lambda ids: f"00-{ids[0]}-{ids[1]}-01")
noise = st.lists(
    st.tuples(
        st.sampled_from(["tracestate", "baggage", "b3", "x", "TRACESTATE"]) | st.text(max_size=20),
        header_value,
    ),
    max_size=8,
).map(lambda pairs: [(k, v) for k, v in pairs if k.lower() != "traceparent"])


@settings(max_examples=400, deadline=None)
@given(headers=hostile_headers, body=hostile_body)
def test_extraction_never_raises_and_never_invents_a_parent(headers, body) -> None:
    context, source = extract_record_context(headers, body)
    span_context = trace.get_current_span(context).get_span_context()
    assert source in ("headers", "envelope", "none")
    assert span_context.is_valid == (source != "none")


@settings(max_examples=300, deadline=None)
@given(traceparent=valid_traceparent, before=noise, after=noise, body=hostile_body, as_bytes=st.booleans())
def test_a_valid_context_survives_any_garbage_around_it(traceparent, before, after, body, as_bytes) -> None:
    value = traceparent.encode() if as_bytes else traceparent
    context, source = extract_record_context([*before, ("traceparent", value), *after], body)
    span_context = trace.get_current_span(context).get_span_context()
    assert source == "headers"
    assert f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-01" == traceparent


@settings(max_examples=300, deadline=None)
@given(value=st.text(max_size=80))
def test_random_traceparent_text_is_valid_only_if_well_formed(value: str) -> None:
    import re

    well_formed = re.fullmatch(r"[ \t]*00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}[ \t]*", value) is not None
    if not well_formed:
        assert not extracted({"traceparent": [value]}).is_valid

"""Strict W3C Trace Context Level 2, baggage limits, B3/Jaeger, carriers: pure logic."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from tracebridge.messaging.record_context import extract_record_context, extract_record_parent
from tracebridge.propagation.carriers import (
    KAFKA_HEADERS_GETTER,
    KAFKA_HEADERS_SETTER,
    read_envelope,
    write_envelope,
)
from tracebridge.propagation.w3c import StrictTraceContextPropagator
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


def state_of(*lines: str) -> list[tuple[str, str]]:
    """The tracestate members a request with these header lines propagates."""
    return list(extracted({"traceparent": [VALID], "tracestate": list(lines)}).trace_state.items())


@pytest.mark.parametrize(
    "key",
    ["foo", "foo@", "foo@@bar", "foo@bar@baz", "t@vvvvvvvvvvvvvvv", "1vendor", "a_-*/@9", "k" * 256],
)
def test_tracestate_key_of_current_grammar_is_kept(key: str) -> None:
    assert state_of(f"{key}=1,other=2") == [(key, "1"), ("other", "2")]


@pytest.mark.parametrize("key", ["@foo", "FOO", "foo.bar", "foo ", " foo@\tx", "_foo", "k" * 257, ""])
def test_tracestate_with_an_illegal_key_is_discarded_whole(key: str) -> None:
    assert state_of(f"good=1,{key}=2,also=3") == []


@pytest.mark.parametrize(
    "value",
    ["", " ", "a,b", "a=b", "tab\there", "caf\u00e9", "x" * 257, "trailing\x7f", "\x00"],
)
def test_tracestate_with_an_illegal_value_is_discarded_whole(value: str) -> None:
    assert state_of(f"good=1,bad={value}") == []


@pytest.mark.parametrize("value", ["a b", " leading", "!#$%&'()*+-./:;<>?@[]^_`{|}~", "v" * 256])
def test_tracestate_value_of_the_grammar_is_kept_unchanged(value: str) -> None:
    assert state_of(f"k={value}") == [("k", value)]


def test_tracestate_with_a_duplicated_key_is_discarded_whole() -> None:
    assert state_of("foo=1,foo=2") == []
    assert state_of("foo=1", "bar=2,foo=1") == []  # across header lines too


def test_tracestate_of_32_members_is_kept_and_of_33_discarded() -> None:
    members = [f"k{i}=v{i}" for i in range(33)]
    assert len(state_of(",".join(members[:16]), ",".join(members[16:32]))) == 32
    assert state_of(",".join(members[:16]), ",".join(members[16:])) == []


def test_tracestate_lines_are_one_list_in_order_with_empty_members_and_white_space() -> None:
    assert state_of("rojo=00f067aa0ba902b7, ,\t", "", " congo=t61rcWkgMzE ,, x@y=1") == [
        ("rojo", "00f067aa0ba902b7"),
        ("congo", "t61rcWkgMzE"),
        ("x@y", "1"),
    ]


def test_hostile_tracestate_length_is_discarded_without_splitting() -> None:
    assert state_of("a=1" + " " * 40_000 + ",b=2") == []


def test_new_grammar_members_survive_the_sdk_on_the_way_out() -> None:
    """The SDK's TraceState would drop these keys (old grammar); a span's own tracestate,
    handed on by the sampler, and what the propagator injects must keep them."""
    from opentelemetry.sdk.trace import TracerProvider

    header = "foo@bar@baz=1,9abc=2,t@vvvvvvvvvvvvvvv=3,foo@=4"
    parent = trace.set_span_in_context(
        NonRecordingSpan(extracted({"traceparent": [VALID], "tracestate": [header]}))
    )
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("child", context=parent) as child:
        carrier: dict[str, str] = {}
        strict.inject(carrier)
        state = child.get_span_context().trace_state
        assert state.to_header() == header
        assert carrier["tracestate"] == header
        # Modifying it keeps the grammar and the type.
        assert state.add("new@vendor", "x").to_header() == "new@vendor=x," + header
        assert state.update("9abc", "z").to_header().startswith("9abc=z,foo@bar@baz=1")
        assert state.delete("foo@").to_header() == "foo@bar@baz=1,9abc=2,t@vvvvvvvvvvvvvvv=3"
        assert state.add("BAD", "x") is state and state.add("k", "a,b") is state


def test_tracestate_on_kafka_records_follows_the_same_rules() -> None:
    def through_headers(*lines: bytes) -> list[tuple[str, str]]:
        headers = [("traceparent", VALID.encode()), *(("tracestate", line) for line in lines)]
        context, _source = extract_record_context(headers, None)
        return list(trace.get_current_span(context).get_span_context().trace_state.items())

    assert through_headers(b"foo@bar=1", b"z=2") == [("foo@bar", "1"), ("z", "2")]
    assert through_headers(b"foo=1,BAD=2") == []
    assert through_headers(b"foo=1", b"foo=2") == []


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


@pytest.mark.parametrize(
    ("headers", "body", "problem"),
    [
        ([], None, "missing"),
        ([("x", b"1")], b'{"order": 1}', "missing"),
        ([("traceparent", VALID.encode()), ("traceparent", VALID.encode())], None, "duplicated-traceparent"),
        ([("traceparent", VALID.encode()), ("TraceParent", b"\xff")], None, "duplicated-traceparent"),
        ([("traceparent", b"00-nope")], None, "invalid-traceparent"),
        ([("traceparent", None)], None, "invalid-traceparent"),
        ([], b'{"trace_context": {"traceparent": "00-nope"}}', "envelope-invalid-traceparent"),
        ([], b'{"trace_context": {"baggage": "a=b"}}', "envelope-missing-traceparent"),
        ([], b'{"trace_context": {"traceparent": ', "envelope-unparsable"),
        ([], '{"trace_context": "not an object"}', "envelope-unparsable"),
        # Headers are read first, so their problem is the one named.
        ([("traceparent", b"bad")], b'{"trace_context": [', "invalid-traceparent"),
    ],
)
def test_a_record_without_usable_context_says_why(headers, body, problem: str) -> None:
    parent, _carried, source, found = extract_record_parent(headers, body)
    assert (parent, source, found) == (None, "none", problem)


def test_a_record_with_usable_context_has_no_problem() -> None:
    envelope = json.dumps({"trace_context": {"traceparent": VALID}}).encode()
    assert extract_record_parent([("traceparent", VALID.encode())], None)[2:] == ("headers", None)
    assert extract_record_parent([("traceparent", b"bad")], envelope)[2:] == ("envelope", None)


def test_problem_names_the_field_of_other_propagators() -> None:
    from opentelemetry import propagate

    before = propagate.get_global_textmap()
    propagate.set_global_textmap(build_propagator(("b3multi",)))
    try:
        assert extract_record_parent([("x-b3-traceid", b"zz")], None)[3] == "invalid-x-b3-traceid"
        assert extract_record_parent([("X-B3-SpanId", b"1"), ("x-b3-spanid", b"2")], None)[3] == (
            "duplicated-x-b3-spanid"
        )
        assert extract_record_parent([], None)[3] == "missing"
    finally:
        propagate.set_global_textmap(before)


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

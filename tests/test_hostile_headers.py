"""Hostile and malformed record headers through the real broker: nothing raises, nothing is
lost, and every record without a usable context is a new trace marked context.source=none."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import by_name, read_topic, unique
from tests.test_kafka_modes import instrumented

header_key = st.sampled_from(
    ["traceparent", "tracestate", "baggage", "TraceParent", "tracebridge-attempt"]
) | st.text(min_size=1, max_size=16)
header_value = (
    st.none()
    | st.binary(max_size=120)
    | st.builds(lambda n, b: b * n, st.integers(5000, 20000), st.binary(min_size=1, max_size=3))  # oversized
    | st.sampled_from([b"\xff\xfe\xfd", b"00-" + b"f" * 32 + b"-" + b"0" * 16 + b"-01", b"-1", b"9" * 40])
)
record_headers = st.lists(st.tuples(header_key, header_value), max_size=8)
# Valid contexts with garbage around them (but no second traceparent): they must survive.
valid_traceparent = st.tuples(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1)).map(
    lambda ids: f"00-{ids[0]:032x}-{ids[1]:016x}-01".encode()
)
garbage = st.lists(st.tuples(header_key, header_value), max_size=4).map(
    lambda pairs: [(k, v) for k, v in pairs if k.lower() != "traceparent"]
)
valid_record = st.tuples(garbage, valid_traceparent, garbage).map(
    lambda t: [*t[0], ("traceparent", t[1]), *t[2]]
)
batch = st.tuples(
    st.lists(valid_record, min_size=3, max_size=3), st.lists(record_headers, min_size=12, max_size=12)
).flatmap(lambda parts: st.permutations([*parts[0], *parts[1]]))


def has_usable_traceparent(headers: list[tuple[str, bytes | None]]) -> bool:
    """Independent oracle: exactly one traceparent-named header that is a valid v00 value."""
    import re

    values = [v for k, v in headers if k.lower() == "traceparent"]
    if len(values) != 1 or values[0] is None:
        return False
    text = values[0].decode("utf-8", "replace").strip(" \t")
    match = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}", text)
    return bool(match) and match.group(1) != "0" * 32 and match.group(2) != "0" * 16


def expected_problem(headers: list[tuple[str, bytes | None]]) -> str:
    """Independent oracle for why a record without a usable traceparent has none."""
    count = sum(1 for k, _v in headers if k.lower() == "traceparent")
    return {0: "missing", 1: "invalid-traceparent"}.get(count, "duplicated-traceparent")


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(headers_per_record=batch)
async def test_hostile_headers_never_raise_and_lose_no_record(bootstrap, broker, spans, headers_per_record):
    spans.clear()
    topic = unique("hostile")
    broker.create_topics([topic], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for number, headers in enumerate(headers_per_record):
            await producer.send_and_wait(topic, f"order {number}".encode(), headers=headers)
    finally:
        await producer.stop()
    with instrumented():
        values = [record.value for record in await read_topic(bootstrap, topic, len(headers_per_record))]
    assert values == [f"order {n}".encode() for n in range(len(headers_per_record))]
    processes = sorted(
        by_name(spans, f"process {topic}"), key=lambda s: s.attributes["messaging.kafka.offset"]
    )
    assert len(processes) == len(headers_per_record)
    for span, headers in zip(processes, headers_per_record, strict=True):
        if has_usable_traceparent(headers):
            assert span.attributes["tracebridge.context.source"] == "headers"
            assert span.parent is not None
        else:
            assert span.attributes["tracebridge.context.source"] == "none"
            assert span.parent is None and span.links == ()
            assert span.attributes["tracebridge.context.problem"] == expected_problem(headers)
        assert 1 <= span.attributes["tracebridge.delivery.attempt"] <= 1_000_000
    survived = [s for s in processes if s.attributes["tracebridge.context.source"] == "headers"]
    assert len(survived) >= 3  # the valid contexts mixed into the garbage came through

"""Every mainstream instrumentation's messaging spans give the same answer (tests/messaging_shapes.py):
one hop, its queue wait and processing, the verdict, no broken chain — from the order's trace and
from the consumer's, whether the consumer is parented or only linked."""

from __future__ import annotations

import pytest

from tests.messaging_shapes import MS, SHAPES, T0, Shape, _flow, kafkajs_new_each_batch
from tracebridge.analysis import messaging
from tracebridge.analysis.diagnosis import diagnose
from tracebridge.analysis.doctor import doctor
from tracebridge.analysis.model import LinkRecord, SpanRecord
from tracebridge.analysis.service_map import service_map
from tracebridge.analysis.sources import SpanListSource
from tracebridge.analysis.story import story


@pytest.fixture(params=SHAPES, ids=lambda build: build.__name__)
def shape(request: pytest.FixtureRequest) -> Shape:
    built: Shape = request.param()
    return built


def entry_points(shape: Shape) -> list[str]:
    """The order's trace and, for a link-only consumer, the consumer's own trace."""
    by_id = {span.span_id: span for span in shape.spans}
    return sorted({by_id[shape.send_span].trace_id, by_id[shape.consumer_span].trace_id})


def test_the_recogniser_reads_each_shape(shape: Shape) -> None:
    by_id = {span.span_id: span for span in shape.spans}
    send, consumer = by_id[shape.send_span], by_id[shape.consumer_span]
    assert messaging.role(send) == messaging.SEND
    assert messaging.is_consumer(consumer)
    assert messaging.topic(send) == messaging.topic(consumer) == "orders"
    assert messaging.partition(consumer) == shape.partition
    assert messaging.offset(consumer) == shape.offset
    assert messaging.group(consumer) == shape.group
    http = [span for span in shape.spans if span.name.startswith("POST")]
    assert all(messaging.role(span) is None for span in http)  # HTTP spans are not messaging


def test_one_hop_its_queue_wait_and_the_verdict_from_either_trace(shape: Shape) -> None:
    source = SpanListSource(shape.spans)
    for trace_id in entry_points(shape):
        whole = story(source, trace_id)
        diagnosis = diagnose(whole)
        assert len(diagnosis.hops) == 1, (shape.name, diagnosis.hops)
        hop = diagnosis.hops[0]
        assert (hop.topic, hop.producer, hop.consumer) == ("orders", "api", "worker"), shape.name
        assert (hop.send_span_id, hop.process_span_id) == (shape.send_span, shape.consumer_span)
        assert abs(hop.queue_wait_ns - shape.queue_wait_ms * MS) < MS, shape.name
        assert abs(hop.processing_ns - 100 * MS) < MS
        assert hop.linked is shape.linked and not hop.clock_skew
        assert diagnosis.verdict is not None
        assert diagnosis.verdict.where == "queue wait on `orders` before worker", shape.name
        assert shape.consumer_span in diagnosis.critical_span_ids
        assert diagnosis.trace_id == whole.spans[0].trace_id  # the order's trace leads
        assert diagnosis.retries == () and diagnosis.failures == () and diagnosis.broken_hops == 0
        assert {"api", "worker", "notification"} <= set(diagnosis.services)


def test_no_shape_is_a_broken_chain(shape: Shape) -> None:
    assert doctor(shape.spans, now_ns=T0 + 3600 * 10**9) == []


def test_the_service_map_has_the_async_and_the_sync_edge(shape: Shape) -> None:
    edges = {(e["source"], e["target"], e["type"], e["topic"]) for e in service_map(shape.spans)}
    assert ("api", "worker", "async", "orders") in edges
    assert ("worker", "notification", "sync", None) in edges


def test_a_batch_that_holds_other_orders_stays_one_orders_answer() -> None:
    """kafkajs eachBatch: one poll trace processes three orders' records. Each order's story
    has its own hop, and the critical path starts at that order, not at the poll."""
    first = kafkajs_new_each_batch()
    spans = list(first.spans)
    poll = next(s for s in spans if s.name == "poll orders")
    others = []
    for number in range(2):
        more = _flow(
            "kafkajs batch sibling",
            "send orders",
            dict(first.spans[1].attributes),
            "",
            "CONSUMER",
            {},
            "parent",
        )
        root, send = more.spans[0], more.spans[1]
        process = SpanRecord(
            trace_id=poll.trace_id,
            span_id=f"{0xB00 + number:016x}",
            parent_span_id=poll.span_id,
            name="process orders",
            kind="CONSUMER",
            start_ns=T0 + 512 * MS,
            end_ns=T0 + 612 * MS,
            service="worker",
            attributes=dict(next(s for s in first.spans if s.span_id == first.consumer_span).attributes),
            links=(LinkRecord(send.trace_id, send.span_id),),
        )
        spans += [root, send, process]
        others.append((send.trace_id, process.span_id))
    source = SpanListSource(spans)
    order_trace = spans[0].trace_id
    diagnosis = diagnose(story(source, order_trace))
    assert diagnosis.trace_id == order_trace
    assert [hop.process_span_id for hop in diagnosis.hops] == [first.consumer_span]
    assert diagnosis.verdict is not None and diagnosis.verdict.where == "queue wait on `orders` before worker"
    for trace_id, process_id in others:
        theirs = diagnose(story(source, trace_id))
        assert theirs.trace_id == trace_id and [h.process_span_id for h in theirs.hops] == [process_id]
    # asked from the poll's trace, the story is every order in the batch
    batch = story(source, poll.trace_id)
    assert batch.trace_ids == {poll.trace_id, order_trace, *(t for t, _ in others)}
    assert len(diagnose(batch).hops) == 3


def test_a_story_is_bounded() -> None:
    """A chain of link-only hops longer than the bound stops there and says how much it left out."""
    spans: list[SpanRecord] = []
    previous: SpanRecord | None = None
    for number in range(8):
        trace_id = f"{number + 1:032x}"
        consumer = SpanRecord(
            trace_id,
            f"{number * 2 + 1:016x}",
            None,
            "process hops",
            "CONSUMER",
            T0 + number * MS,
            T0 + number * MS + MS // 2,
            f"svc{number}",
            links=(LinkRecord(previous.trace_id, previous.span_id),) if previous else (),
        )
        send = SpanRecord(
            trace_id,
            f"{number * 2 + 2:016x}",
            consumer.span_id,
            "send hops",
            "PRODUCER",
            T0 + number * MS + MS // 4,
            T0 + number * MS + MS // 3,
            f"svc{number}",
        )
        spans += [consumer, send]
        previous = send
    bounded = story(SpanListSource(spans), f"{1:032x}", limit=5)
    assert len(bounded.trace_ids) == 5 and bounded.truncated == 1
    assert len(story(SpanListSource(spans), f"{1:032x}").trace_ids) == 8


def test_traces_that_link_into_each_other_neither_hang_nor_lose_spans() -> None:
    """Hostile or buggy data: two traces whose consumers each link to the other's send."""
    a, b = "a" * 32, "b" * 32
    spans = [
        SpanRecord(
            a,
            "1" * 16,
            None,
            "process loop",
            "CONSUMER",
            T0,
            T0 + 10 * MS,
            "x",
            links=(LinkRecord(b, "4" * 16),),
        ),
        SpanRecord(a, "2" * 16, "1" * 16, "send loop", "PRODUCER", T0 + MS, T0 + 2 * MS, "x"),
        SpanRecord(
            b,
            "3" * 16,
            None,
            "process loop",
            "CONSUMER",
            T0 + 3 * MS,
            T0 + 9 * MS,
            "y",
            links=(LinkRecord(a, "2" * 16),),
        ),
        SpanRecord(b, "4" * 16, "3" * 16, "send loop", "PRODUCER", T0 + 4 * MS, T0 + 5 * MS, "y"),
    ]
    whole = story(SpanListSource(spans), a)
    assert whole.trace_ids == {a, b} and whole.cycles_broken == 1
    reached, stack = set(), list(whole.roots)
    while stack:
        span = stack.pop()
        reached.add(span.span_id)
        stack.extend(whole.children.get(span.span_id, []))
    assert reached == {s.span_id for s in spans}
    assert diagnose(whole).span_count == 4

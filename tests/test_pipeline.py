"""The light span pipeline: sampler decisions honoured, nothing dropped, bounded flush."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from tracebridge.config import KafkaCarrier
from tracebridge.exporting import BatchExportProcessor, CountingExporter
from tracebridge.messaging.light_span import LightSpan, LightTracer
from tracebridge.messaging.record_context import inject_record_context
from tracebridge.propagation.w3c import W3CTraceState, new_span_context

PARENT = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(0x03))


def light(sampler: Sampler) -> tuple[LightTracer, InMemorySpanExporter]:
    provider = TracerProvider(sampler=sampler, resource=Resource({"service.name": "unit"}))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return LightTracer(provider.get_tracer("unit")), exporter


def test_light_span_ends_as_a_readable_span_with_everything_set() -> None:
    tracer, exporter = light(ParentBased(ALWAYS_ON))
    span = tracer.start_span("process orders", kind=SpanKind.CONSUMER, parent=PARENT, follows=PARENT)
    assert isinstance(span, LightSpan)
    span.set_attributes({"a": 1, "b": ["x", "y"], "bad": object()})
    span.set_attribute("c", True)
    span.record_exception(ValueError("boom"))
    span.end()
    span.set_attribute("after", 1)  # ignored once ended
    (done,) = exporter.get_finished_spans()
    assert (done.name, done.kind, done.parent.span_id) == ("process orders", SpanKind.CONSUMER, 0xDEF)
    assert done.context.trace_id == 0xABC and done.context.trace_flags == 0x03
    assert dict(done.attributes) == {"a": 1, "b": ("x", "y"), "c": True}
    assert done.events[0].attributes["exception.type"] == "ValueError"
    assert [(link.context.span_id, dict(link.attributes)) for link in done.links] == [
        (0xDEF, {"tracebridge.link.type": "follows_from"})
    ]
    assert done.resource.attributes["service.name"] == "unit"
    assert done.instrumentation_scope.name == "unit"


def test_unsampled_parent_gives_non_recording_child_with_new_span_id() -> None:
    tracer, exporter = light(ParentBased(ALWAYS_ON))
    unsampled = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(0x02))
    span = tracer.start_span("x", parent=unsampled)
    assert isinstance(span, NonRecordingSpan)
    child = span.get_span_context()
    assert (child.trace_id, child.trace_flags) == (0xABC, 0x02) and child.span_id != 0xDEF
    span.end()
    assert exporter.get_finished_spans() == ()


class CountingOnStart(SimpleSpanProcessor):
    def __init__(self, exporter: InMemorySpanExporter) -> None:
        super().__init__(exporter)
        self.started = 0

    def on_start(self, span: object, parent_context: object = None) -> None:
        self.started += 1


def test_roots_under_an_always_off_root_sampler_are_unsampled_with_fresh_ids() -> None:
    """The fast path for ``parentbased_always_off`` / ``always_off`` roots: no sampler call, but
    a valid context to propagate (new trace per root, random-id flag) and nothing recorded."""
    for sampler in (ParentBased(ALWAYS_OFF), ALWAYS_OFF):
        provider = TracerProvider(sampler=sampler)
        exporter = InMemorySpanExporter()
        processor = CountingOnStart(exporter)
        provider.add_span_processor(processor)
        tracer = LightTracer(provider.get_tracer("unit"))
        roots = [tracer.start_span("send t", context=Context(), kind=SpanKind.PRODUCER) for _ in range(20)]
        contexts = [root.get_span_context() for root in roots]
        assert all(isinstance(root, NonRecordingSpan) and not root.is_recording() for root in roots)
        assert all(c.is_valid and not c.is_remote and c.trace_flags == 0x02 for c in contexts)
        assert len({c.trace_id for c in contexts}) == 20 and len({c.span_id for c in contexts}) == 20
        for root in roots:
            root.end()
        assert exporter.get_finished_spans() == () and processor.started == 0


def test_unsampled_child_keeps_the_parents_trace_state() -> None:
    tracer, _exporter = light(ParentBased(ALWAYS_ON))
    state = W3CTraceState([("vendor@x", "1"), ("other", "2")])
    parent = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(0x00), trace_state=state)
    child = tracer.start_span("x", parent=parent).get_span_context()
    assert (child.trace_id, child.trace_flags, list(child.trace_state.items())) == (
        0xABC,
        0x00,
        [("vendor@x", "1"), ("other", "2")],
    )
    headers, _ = inject_record_context(KafkaCarrier.HEADERS, NonRecordingSpan(child), None, b"")
    assert dict(headers)["tracestate"] == b"vendor@x=1,other=2"


def test_parent_based_with_custom_delegates_still_asks_the_sampler() -> None:
    """Only the standard delegates let a parent decide alone: here a sampled parent is dropped
    (remote_parent_sampled=ALWAYS_OFF) and an unsampled one recorded (…_not_sampled=ALWAYS_ON)."""
    sampler = ParentBased(ALWAYS_OFF, remote_parent_sampled=ALWAYS_OFF, remote_parent_not_sampled=ALWAYS_ON)
    tracer, _exporter = light(sampler)
    assert not tracer.start_span("x", parent=PARENT).is_recording()
    unsampled = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(0x00))
    assert tracer.start_span("x", parent=unsampled).is_recording()


@pytest.mark.parametrize(
    ("trace_id", "span_id"),
    [(0xABC, 0xDEF), (0, 0xDEF), (0xABC, 0), ((1 << 128) - 1, (1 << 64) - 1), (1 << 128, 1), (1, 1 << 64)],
)
def test_span_contexts_built_directly_equal_the_constructors(trace_id: int, span_id: int) -> None:
    for flags in (0, 1, 2, 3):
        direct = new_span_context(trace_id, span_id, True, flags, DEFAULT_TRACE_STATE)
        built = SpanContext(trace_id, span_id, True, TraceFlags(flags), DEFAULT_TRACE_STATE)
        assert direct == built and direct.is_valid == built.is_valid and direct.trace_flags == flags


def test_root_sampling_uses_the_providers_sampler() -> None:
    tracer, exporter = light(ParentBased(TraceIdRatioBased(0.0)))
    for _ in range(50):
        tracer.start_span("root").end()
    assert exporter.get_finished_spans() == ()


def test_record_only_decision_records_without_sampled_flag() -> None:
    class RecordOnly(Sampler):
        def should_sample(self, *args: object, **kwargs: object) -> SamplingResult:
            return SamplingResult(Decision.RECORD_ONLY, {"sampler.said": "record"})

        def get_description(self) -> str:
            return "RecordOnly"

    tracer, _exporter = light(RecordOnly())
    span = tracer.start_span("x", parent=PARENT)
    assert span.is_recording() and not span.get_span_context().trace_flags.sampled
    assert isinstance(span, LightSpan) and span._attributes["sampler.said"] == "record"


def test_non_sdk_provider_falls_back_to_its_own_tracer() -> None:
    tracer = LightTracer(trace.NoOpTracerProvider().get_tracer("x"))
    span = tracer.start_span("x", context=Context(), parent=PARENT, follows=PARENT)
    assert span.get_span_context() == PARENT  # the API's no-op tracer passes the parent through


class SlowExporter(SpanExporter):
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        time.sleep(self.delay)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


def test_processor_keeps_up_with_sustained_load_without_dropping() -> None:
    exporter = CountingExporter()
    processor = BatchExportProcessor(exporter, max_queue_size=2048, max_export_batch_size=512)
    tracer, _ = light(ALWAYS_ON)
    provider_span = tracer.start_span("template")
    provider_span.end()
    template = ReadableSpan(name="s", context=provider_span.get_span_context())
    for burst in range(80):
        for _ in range(250):
            processor.on_end(template)
        time.sleep(0.001 if burst % 4 else 0.01)
    assert processor.force_flush(5000)
    assert (exporter.exported_spans, processor.queue_dropped) == (20000, 0)
    processor.shutdown()


def test_spans_trickling_in_during_an_export_wait_for_a_full_batch() -> None:
    """Woken by a full batch, the worker used to export every span that arrived meanwhile as
    a request of its own (14 spans a request at 2 000 calls/s): five times the CPU a span."""

    class Sizes(SpanExporter):
        def __init__(self) -> None:
            self.sizes: list[int] = []

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            self.sizes.append(len(spans))
            time.sleep(0.005)  # a POST's round trip, while more spans end
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            return None

    exporter = Sizes()
    processor = BatchExportProcessor(exporter, max_queue_size=8192, max_export_batch_size=100)
    sampled = ReadableSpan(name="s", context=PARENT)
    for number in range(2000):
        processor.on_end(sampled)
        if number % 5 == 0:
            time.sleep(0.0002)
    assert processor.force_flush(5000)
    assert sum(exporter.sizes) == 2000
    assert exporter.sizes == [100] * 20, exporter.sizes
    processor.on_end(sampled)
    assert processor.force_flush(5000)  # a flush sends the partial batch at once
    assert exporter.sizes[-1] == 1
    processor.shutdown()


def test_full_queue_drops_are_counted() -> None:
    exporter = SlowExporter(delay=0.5)
    processor = BatchExportProcessor(exporter, max_queue_size=100, max_export_batch_size=100)
    sampled = ReadableSpan(name="s", context=PARENT)
    for _ in range(350):
        processor.on_end(sampled)
    processor.shutdown()
    assert exporter.exported + processor.queue_dropped == 350
    assert processor.queue_dropped >= 150


def test_force_flush_returns_when_its_timeout_is_up() -> None:
    release = threading.Event()

    class Stuck(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            release.wait(10)
            return SpanExportResult.SUCCESS

    processor = BatchExportProcessor(Stuck())
    processor.on_end(ReadableSpan(name="s", context=PARENT))
    assert processor.force_flush(timeout_millis=100) is False
    release.set()
    processor.shutdown()

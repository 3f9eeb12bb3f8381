"""Instructions per span for one step of the span path, counted by callgrind.

    make instructions                         # every step
    python bench/instructions.py [STEP ...]   # steps: redact unpack encode pack send-unsampled
                                              #        collector-prepare collector-prepare-python http-client
                                              #        redact-http encode-http

A profiling aid, not a benchmark (it prints counts, not ratios): this machine's timings move
twofold within an hour, while ``valgrind --tool=callgrind`` counts the same instructions
on every run whatever the other core is doing.  Each step runs twice under callgrind over the
same 2 048 kafka-python ``send`` spans (``-http`` steps: httpx client spans) — once with the
step repeated once, once twice — and the difference, divided by 2 048, is the step's own cost:
start-up, imports and set-up cancel out.  ``http-client`` is the httpx client span's own path
(start, context headers, end; ``OTEL_TRACES_EXPORTER=none``), around a transport that answers
at once.
The cyclic GC is off inside (its collections depend on the heap's size, not on the step).
Only single-threaded steps are counted: with an export thread the count depends on how the
threads were scheduled.
"""

from __future__ import annotations

import gc
import re
import subprocess
import sys
from typing import Any

SPANS = 2048
STEPS = (
    "redact",
    "unpack",
    "encode",
    "pack",
    "send-unsampled",
    "collector-prepare",
    "collector-prepare-python",
    "http-client",
    "redact-http",
    "encode-http",
)


def _spans(sampler: str) -> tuple[Any, list[Any]]:
    """kafka-python send spans as the instrumentation makes them (no broker: the client's own
    ``send`` is replaced by one that returns a future at once)."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    import tracebridge

    kept: list[Any] = []

    class Keep(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            kept.extend(spans)
            return SpanExportResult.SUCCESS

    if sampler == "parentbased_always_off":  # as configured for real; no span reaches export
        tracebridge.configure(service_name="instructions", sampler=sampler, traces_exporter="none")
    else:  # every span kept in this thread: no export thread to count by accident
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(Keep()))
        trace.set_tracer_provider(provider)
    from tracebridge.messaging.kafka import kafka_python
    from tracebridge.messaging.kafka.client import spans_from_settings

    spans = spans_from_settings("instructions", {})

    class Future:
        def add_callback(self, callback: Any) -> None:
            self.acknowledge = callback

        def add_errback(self, callback: Any) -> None:
            return None

    class Metadata:
        partition, offset = 0, 5

    class Producer:
        config = {"bootstrap_servers": "127.0.0.1:9092", "client_id": "shop"}

    producer, payload = Producer(), b"x" * 200

    def send(number: int) -> None:
        future = kafka_python._traced_send(
            spans, lambda *_: Future(), producer, ("orders", payload), {"key": b"order-%d" % number}
        )
        if hasattr(future, "acknowledge"):
            future.acknowledge(Metadata())

    return send, kept


def _http_client(exporter: Any | None) -> Any:
    """One traced httpx call through the instrumentation's transport wrapper, the transport
    itself answering at once (no socket: the span path alone)."""
    import httpx

    import tracebridge

    if exporter is None:
        tracebridge.configure(service_name="instructions", traces_exporter="none")
    else:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
    tracebridge.instrument(only=("httpx",))
    traced = httpx.HTTPTransport.handle_request._self_wrapper  # what wrapt calls per request
    response = httpx.Response(200, extensions={"http_version": b"HTTP/1.1"})

    def answer(request: Any) -> Any:
        return response

    def call(request: Any) -> None:
        traced(answer, None, (request,), {})

    return call


def _http_requests(count: int) -> list[Any]:
    import httpx

    return [
        httpx.Request("GET", f"http://127.0.0.1:8000/stock/SKU-{number % 50}", headers={"accept": "*/*"})
        for number in range(count)
    ]


def _kept_http_spans() -> list[Any]:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    kept: list[Any] = []

    class Keep(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            kept.extend(spans)
            return SpanExportResult.SUCCESS

    call = _http_client(Keep())
    for request in _http_requests(SPANS):
        call(request)
    return kept


def run_step(step: str, repeats: int) -> None:
    """The inside of one callgrind run."""
    if step.startswith("collector-prepare"):  # the collector's rows for bench/collector.py's requests
        import tempfile
        import time

        from collector import batch  # bench/collector.py
        from tracebridge.collector.store import SpanStore
        from tracebridge.otlp import parse_protobuf

        now = time.time_ns()
        bodies = [batch(number, now) for number in range(SPANS // 512)]
        requests = [parse_protobuf(body) for body in bodies]
        # collector-prepare: as the collector does, off the bytes (the C scanner);
        # collector-prepare-python: the reference, off the decoded message
        raw = [None] * len(bodies) if step.endswith("-python") else bodies
        with tempfile.TemporaryDirectory() as folder:
            store = SpanStore(f"{folder}/traces.db")
            gc.disable()
            for _ in range(repeats):
                [store.prepare(request, body) for request, body in zip(requests, raw, strict=True)]
        return
    if step == "send-unsampled":
        send, _ = _spans("parentbased_always_off")
        for number in range(200):
            send(number)
        gc.disable()
        for _ in range(repeats):
            for number in range(SPANS):
                send(number)
        return
    if step == "http-client":
        call = _http_client(None)
        for request in _http_requests(200):
            call(request)
        # As many requests made in either run (the second run's count minus the first's is the
        # step alone); each run sends `repeats` batches of them.
        requests = [_http_requests(SPANS) for _ in range(2)]
        gc.disable()
        for batch in requests[:repeats]:
            for request in batch:
                call(request)
        return
    from tracebridge.export_frames import SpanPacker, SpanUnpacker
    from tracebridge.otlp_wire import encode_spans
    from tracebridge.redaction import RedactionPolicy, Redactor

    if step.endswith("-http"):
        kept = _kept_http_spans()
        step = step.removesuffix("-http")
    else:
        send, kept = _spans("parentbased_always_on")
        for number in range(SPANS):
            send(number)
    batches = [kept[start : start + 512] for start in range(0, SPANS, 512)]
    packer = SpanPacker()
    frames = [packer.pack(batch) for batch in batches]
    unpacker = SpanUnpacker()
    rebuilt = [unpacker.unpack(frame) for frame in frames]
    redactor = Redactor(RedactionPolicy.parse(None))
    for batch in rebuilt:  # caches warm, as in a long-running exporter
        encode_spans([redactor.span(span) for span in batch])
    gc.disable()
    for _ in range(repeats):
        if step == "pack":
            fresh = SpanPacker()
            [fresh.pack(batch) for batch in batches]
        elif step == "unpack":
            fresh_unpacker = SpanUnpacker()
            [fresh_unpacker.unpack(frame) for frame in frames]
        elif step == "redact":
            [[redactor.span(span) for span in batch] for batch in rebuilt]
        elif step == "encode":
            [encode_spans(batch) for batch in rebuilt]


def count(step: str, repeats: int) -> int:
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--inside",
            step,
            str(repeats),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", result.stderr)
    if found is None:
        raise SystemExit(f"callgrind printed no count for {step}:\n{result.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    if sys.argv[1:2] == ["--inside"]:
        run_step(sys.argv[2], int(sys.argv[3]))
        return
    steps = sys.argv[1:] or list(STEPS)
    unknown = [step for step in steps if step not in STEPS]
    if unknown:
        raise SystemExit(f"unknown step {', '.join(unknown)}; steps: {', '.join(STEPS)}")
    for step in steps:
        per_span = (count(step, 2) - count(step, 1)) / SPANS
        print(f"{step:16s} {per_span:10,.0f} instructions a span")


if __name__ == "__main__":
    main()

"""Exporting from the helper process (``tracebridge.export_process``): the spans it sends are the
ones the application made, field for field; it really is another process; and when it cannot
start, dies, or the application forks, no span made afterwards is lost."""

from __future__ import annotations

import enum
import subprocess
import threading
import time
from http.server import ThreadingHTTPServer

from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.otlp_receiver import Receiver, run_python, spans_received
from tests.test_otlp_wire import decoded, handmade
from tracebridge.export_frames import SpanPacker, SpanUnpacker
from tracebridge.otlp_wire import encode_spans


class Colour(enum.StrEnum):
    RED = "red"


def through_frames(batches):
    """Each batch packed as the application does and unpacked as the helper does."""
    packer, unpacker = SpanPacker(), SpanUnpacker()
    return [unpacker.unpack(packer.pack(batch)) for batch in batches]


def sdk_spans():
    """Spans of the SDK's own Span class, with limits that make it drop attributes, events and
    links — counts the helper must carry over."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=2, max_events=1, max_links=1))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("orders.sdk", "2.0")
    with tracer.start_as_current_span("parent", kind=SpanKind.SERVER) as parent:
        parent.set_attributes({"a": 1, "b": "two", "c": 3.0})
        parent.add_event("first", {"n": 1})
        parent.add_event("second")
        with tracer.start_as_current_span("child", links=[]) as child:
            child.set_attribute("colour", Colour.RED)  # a str enum: marshal refuses it as it is
            child.set_status(Status(StatusCode.ERROR, "it broke"))
    return list(exporter.get_finished_spans())


def test_spans_through_the_frames_encode_exactly_as_the_originals() -> None:
    originals = [
        handmade("every field"),
        handmade("no parent, no attributes", parent=None, attributes=None, events=(), links=()),
        handmade("ok", status=Status(StatusCode.OK)),
        handmade("other scope", instrumentation_scope=InstrumentationScope("flask", "3.0")),
        handmade("no scope", instrumentation_scope=None),
        *sdk_spans(),
    ]
    second = [handmade("second batch"), *sdk_spans()]  # resources and scopes the helper knows
    received = through_frames([originals, second])
    for before, after in zip([originals, second], received, strict=True):
        assert decoded(encode_spans(after)) == decoded(encode_spans(before))
    child = next(span for span in received[0] if span.name == "child")
    assert child.attributes["colour"] == "red" and type(child.attributes["colour"]) is str
    parent = next(span for span in received[0] if span.name == "parent")
    assert (parent.dropped_attributes, parent.dropped_events) == (1, 1)
    assert parent.kind is SpanKind.SERVER and child.parent.span_id == parent.context.span_id


def test_real_light_spans_survive_the_frames(spans) -> None:
    from tests.test_otlp_wire import test_real_light_spans_from_the_kafka_path_encode_as_the_sdk_does

    test_real_light_spans_from_the_kafka_path_encode_as_the_sdk_does(spans)
    finished = list(spans.get_finished_spans())
    (after,) = through_frames([finished])
    assert decoded(encode_spans(after)) == decoded(encode_spans(finished))
    assert [span.kind for span in after] == [SpanKind.PRODUCER, SpanKind.CONSUMER]


def run(program: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_python(
        program, OTEL_SERVICE_NAME="helper-test", **{"TRACEBRIDGE_EXPORT_PROCESS": "helper", **env}
    )


PREAMBLE = """
import os, signal, sys, time
import tracebridge
from opentelemetry import trace
from tracebridge.sdk import configured, dropped_spans
provider = tracebridge.configure()
tracer = trace.get_tracer("app")
def spans(prefix, count=5):
    for number in range(count):
        with tracer.start_as_current_span(f"{prefix} {number}"):
            pass
    assert provider.force_flush(10000)
"""


def test_spans_leave_through_a_helper_process_that_exits_with_the_application(receiver) -> None:
    result = run(
        PREAMBLE
        + """
exporter = configured().exporter
spans("work")
helper = exporter._helper.process
command = open(f"/proc/{exporter.helper_pid}/cmdline").read().split(chr(0))[1:3]
print(os.getpid(), exporter.helper_pid, command)
tracebridge.shutdown()
print("exited", helper.poll(), "dropped", dropped_spans(), "exported", exporter.exported_spans)
""",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver,
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    own, helper, command = first.split(" ", 2)
    assert own != helper and command == "['-m', 'tracebridge.export_helper']"
    assert second == "exited 0 dropped 0 exported 5"
    assert sorted(spans_received()) == [f"work {n}" for n in range(5)]
    assert result.stderr == ""


class SlowFirstAnswer(Receiver):
    """A collector that takes 3.5 s over its first request, then answers at once."""

    answered = 0

    def do_POST(self) -> None:
        type(self).answered += 1
        if type(self).answered == 1:
            time.sleep(3.5)
        super().do_POST()


def test_the_helper_delivers_what_it_was_handed_after_the_application_has_exited() -> None:
    """The application exits on time (its 3 s budget spent waiting for a slow collector); the
    helper, still sending, finds nobody listening to its answers and goes on delivering the
    batches it already has — within the same budget — instead of dying with them."""
    Receiver.requests, SlowFirstAnswer.answered = [], 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowFirstAnswer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        started = time.monotonic()
        result = run(
            PREAMBLE.replace("    assert provider.force_flush(10000)\n", "")
            + """
spans("work")
started = time.monotonic()
tracebridge.shutdown()
print("shutdown", round(time.monotonic() - started, 1))
""",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{server.server_port}",
            OTEL_BSP_MAX_EXPORT_BATCH_SIZE="2",  # three frames: two wait behind the slow one
            TRACEBRIDGE_SHUTDOWN_TIMEOUT="3",
        )
        elapsed = time.monotonic() - started
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.split("shutdown")[1]) <= 3.5  # the application kept its promise
    assert sorted(spans_received()) == [f"work {n}" for n in range(5)]
    assert "Traceback" not in result.stderr and "Exception" not in result.stderr, result.stderr
    assert elapsed < 15  # and the helper, too, ended by itself


def test_a_helper_that_dies_is_replaced_by_the_export_thread_and_nothing_after_is_lost(receiver) -> None:
    result = run(
        PREAMBLE
        + """
spans("before")
helper = configured().exporter._helper.process
helper.kill()
helper.wait()
spans("after")
tracebridge.shutdown()
print("dropped", dropped_spans())
""",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["dropped", "0"]  # "before" was delivered and answered
    assert sorted(spans_received()) == sorted(
        [f"before {n}" for n in range(5)] + [f"after {n}" for n in range(5)]
    )
    assert result.stderr.count("exporting from the application's own export thread from now on") == 1


def test_a_helper_that_cannot_start_leaves_the_export_in_the_application(receiver) -> None:
    result = run(
        "import sys\nsys.executable = '/nonexistent/python'\n" + PREAMBLE + "spans('inline')\n",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(spans_received()) == [f"inline {n}" for n in range(5)]
    assert result.stderr.count("cannot start the export helper process") == 1


def test_a_forked_child_starts_its_own_helper(receiver) -> None:
    result = run(
        PREAMBLE
        + """
spans("parent before", 2)
parent_helper = configured().exporter.helper_pid
child = os.fork()
if child == 0:
    spans("child", 3)
    print("child helper", configured().exporter.helper_pid != parent_helper, flush=True)
    tracebridge.shutdown()
    os._exit(0)
os.waitpid(child, 0)
spans("parent after", 2)
print("parent helper", configured().exporter.helper_pid == parent_helper, flush=True)
""",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["child helper True", "parent helper True"]
    assert sorted(spans_received()) == sorted(
        [
            "parent before 0",
            "parent before 1",
            "child 0",
            "child 1",
            "child 2",
            "parent after 0",
            "parent after 1",
        ]
    )


def test_inline_export_is_the_default(receiver) -> None:
    result = run(
        PREAMBLE + "spans('inline')\nprint(type(configured().exporter).__name__)\n",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver,
        TRACEBRIDGE_EXPORT_PROCESS="",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "RedactingExporter"
    assert sorted(spans_received()) == [f"inline {n}" for n in range(5)]

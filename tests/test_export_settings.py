"""The exporter's documented settings, each seen working over real sockets: OTLP headers and
gzip reach the receiver; the collector's token from the environment guards it; a disabled SDK
exports nothing; the queue bound drops and counts; the shutdown timeout bounds exit."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from http.server import ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.otlp_receiver import Receiver, run_python, spans_received
from tracebridge.broker import free_port

PROGRAM = """
import tracebridge
from opentelemetry import trace
tracebridge.configure()
tracer = trace.get_tracer("app")
for number in range(5):
    with tracer.start_as_current_span(f"work {number}"):
        pass
print("done")
"""


def run_program(**env: str) -> subprocess.CompletedProcess[str]:
    return run_python(PROGRAM, OTEL_SERVICE_NAME="settings", **env)


def test_otlp_headers_and_gzip_reach_the_receiver(receiver) -> None:
    result = run_program(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver,
        OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer%20s3cret,x-tenant=shop",
        OTEL_EXPORTER_OTLP_COMPRESSION="gzip",
    )
    assert result.returncode == 0, result.stderr
    assert sorted(spans_received()) == [f"work {n}" for n in range(5)]
    for headers, _ in Receiver.requests:
        assert headers["authorization"] == "Bearer s3cret" and headers["x-tenant"] == "shop"
        assert headers["content-encoding"] == "gzip"
        assert headers["content-type"] == "application/x-protobuf"


def test_disabled_sdk_exports_nothing(receiver) -> None:
    result = run_program(OTEL_EXPORTER_OTLP_ENDPOINT=receiver, OTEL_SDK_DISABLED="true")
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr
    assert Receiver.requests == []


def test_a_full_queue_drops_and_counts_and_never_blocks(receiver) -> None:
    program = PROGRAM.replace("range(5)", "range(500)") + (
        "from tracebridge.sdk import dropped_spans\nprint('dropped', dropped_spans())\n"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEBRIDGE_"))}
    environment |= {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver,
        "OTEL_BSP_MAX_QUEUE_SIZE": "10",
        "OTEL_BSP_SCHEDULE_DELAY": "60000",  # nothing leaves before the loop is done
    }
    result = subprocess.run(
        [sys.executable, "-c", program],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    dropped = int(result.stdout.split("dropped")[1])
    # How many get through depends on how fast the worker hands full batches of 10 on; what
    # must hold is that most are dropped, and every span is either received or counted.
    assert dropped >= 250 and len(spans_received()) == 500 - dropped


def test_shutdown_timeout_bounds_exit_with_a_hanging_collector() -> None:
    """A collector that accepts connections and never answers: exit still comes within
    TRACEBRIDGE_SHUTDOWN_TIMEOUT, not after the OTLP timeout."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        started = time.monotonic()
        result = run_program(
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{listener.getsockname()[1]}",
            OTEL_EXPORTER_OTLP_TIMEOUT="20000",
            TRACEBRIDGE_SHUTDOWN_TIMEOUT="1",
        )
        elapsed = time.monotonic() - started
    finally:
        listener.close()
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr
    assert elapsed < 8, elapsed  # start-up ~1-2 s + the 1 s bound; the OTLP timeout is 20 s


@pytest.mark.parametrize("export_process", ["inline", "helper"])
def test_shutdown_takes_one_budget_in_all_with_a_hanging_collector(export_process: str) -> None:
    """The flush and the helper's last delivery share TRACEBRIDGE_SHUTDOWN_TIMEOUT: the helper
    gets what the flush left of it, not a budget of its own on top (twice the promise)."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    program = PROGRAM + (
        "import time\nstarted = time.monotonic()\ntracebridge.shutdown()\n"
        "print('shutdown', round(time.monotonic() - started, 2))\n"
    )
    try:
        result = run_python(
            program,
            OTEL_SERVICE_NAME="settings",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{listener.getsockname()[1]}",
            OTEL_EXPORTER_OTLP_TIMEOUT="20000",
            TRACEBRIDGE_SHUTDOWN_TIMEOUT="2",
            TRACEBRIDGE_EXPORT_PROCESS=export_process,
        )
    finally:
        listener.close()
    assert result.returncode == 0, result.stderr
    took = float(result.stdout.split("shutdown")[1])
    assert 1.5 <= took <= 2.8, took  # it did wait for the stuck export, and no longer than promised


def test_collector_token_from_the_environment_guards_the_collector(tmp_path) -> None:
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEBRIDGE_"))}
    environment["TRACEBRIDGE_COLLECTOR_TOKEN"] = "s3cret"
    command = [
        sys.executable,
        "-m",
        "tracebridge",
        "collector",
        "--db",
        str(tmp_path / "t.db"),
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}/api/services"
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert response.status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer s3cret"}, timeout=5).status_code == 200
    finally:
        process.terminate()
        process.wait(10)


LOGGING_PROGRAM = """
import logging
import tracebridge
from opentelemetry import trace
tracebridge.configure()
tracebridge.instrument(only=("logging",))
log = logging.getLogger("shop")
with trace.get_tracer("app").start_as_current_span("handler"):
    log.warning("stock is low")
    try:
        raise ValueError("card declined")
    except ValueError as error:
        log.error("charge failed", exc_info=error)
"""


@pytest.mark.parametrize(
    ("level", "events", "status"),
    [
        ("warning", ["log", "exception"], 2),
        ("error", ["exception"], 2),
        ("off", [], 0),
    ],
)
def test_log_events_level_decides_what_a_span_records(receiver, level, events, status) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEBRIDGE_"))}
    environment |= {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver, "TRACEBRIDGE_LOG_EVENTS": level}
    result = subprocess.run(
        [sys.executable, "-c", LOGGING_PROGRAM], env=environment, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    (span,) = [
        span
        for _, request in Receiver.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert [event.name for event in span.events] == events
    assert span.status.code == status  # 2: ERROR, set by the logged error
    if "exception" in events:
        exception = next(e for e in span.events if e.name == "exception")
        attributes = {a.key: a.value.string_value for a in exception.attributes}
        assert (
            attributes["exception.type"] == "ValueError"
            and attributes["exception.message"] == "card declined"
        )


class FailsFirst(Receiver):
    """Answers the first request 503, then like Receiver."""

    answered = 0

    def do_POST(self) -> None:
        type(self).answered += 1
        if type(self).answered == 1:
            self.rfile.read(int(self.headers["content-length"]))
            Receiver.requests.append(({}, ExportTraceServiceRequest()))
            self.send_response(503)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        super().do_POST()


RETRY_PROGRAM = """
import time
import tracebridge
import tracebridge.sdk
from opentelemetry import trace
from tracebridge.sdk import configured, dropped_spans
provider = tracebridge.configure()
tracer = trace.get_tracer("app")
for batch in ("first", "second", "third"):
    if batch == "third":
        time.sleep(1.5)  # past TRACEBRIDGE_EXPORTER_RETRY_AFTER=1
    with tracer.start_as_current_span(batch):
        pass
    provider.force_flush()
tracebridge.sdk.shutdown()  # whatever is still held by now is dropped and counted
print("dropped", dropped_spans(), "late", configured().exporter.delivered_late)
"""


def run_retry_program(handler: type[Receiver]) -> subprocess.CompletedProcess[str]:
    """RETRY_PROGRAM in its own process, exporting to ``handler`` with a 1 s retry interval."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEBRIDGE_"))}
        environment |= {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
            "TRACEBRIDGE_EXPORTER_RETRY_AFTER": "1",
        }
        return subprocess.run(
            [sys.executable, "-c", RETRY_PROGRAM], env=environment, capture_output=True, text=True, timeout=60
        )
    finally:
        server.shutdown()


def test_after_a_failed_export_batches_are_held_and_delivered_once_retry_after_passes() -> None:
    FailsFirst.answered = 0
    Receiver.requests = []
    result = run_retry_program(FailsFirst)
    assert result.returncode == 0, result.stderr
    # The first batch was refused (503) and held; the second held without touching the network;
    # after the interval both went out, oldest first, then the third: nothing was lost.
    assert FailsFirst.answered == 4
    assert spans_received() == ["first", "second", "third"]
    assert result.stdout.split() == ["dropped", "0", "late", "2"]
    assert result.stderr.count("cannot export spans") == 1
    assert result.stderr.count("works again (2 spans held during the outage were delivered late") == 1


class Refuses(Receiver):
    """Answers every request 400: the data is refused, retrying it would not help."""

    answered = 0

    def do_POST(self) -> None:
        type(self).answered += 1
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(400)
        self.send_header("content-length", "0")
        self.end_headers()


def test_a_batch_refused_for_what_it_is_is_dropped_and_counted_not_held() -> None:
    Refuses.answered = 0
    result = run_retry_program(Refuses)
    assert result.returncode == 0, result.stderr
    # Each batch is refused once and dropped (or, still held at exit, dropped then); none is
    # retried after its refusal, and nothing is reported as delivered.
    assert result.stdout.split() == ["dropped", "3", "late", "0"]
    assert 2 <= Refuses.answered <= 3


HOLD_PROGRAM = """
import time
import tracebridge
from opentelemetry import trace
from tracebridge.sdk import configured, dropped_spans
provider = tracebridge.configure()
tracer = trace.get_tracer("app")
for number in range(50):
    with tracer.start_as_current_span(f"span {number}"):
        pass
provider.force_flush()
exporter = configured().exporter
print("held", exporter.held_spans, "dropped", dropped_spans(), flush=True)
import sys
sys.stdin.readline()  # the test starts the collector, then lets the idle program go on
deadline = time.monotonic() + 20
while exporter.held_spans and time.monotonic() < deadline:
    time.sleep(0.05)
print("held", exporter.held_spans, "dropped", dropped_spans(), "late", exporter.delivered_late, flush=True)
"""


def test_an_outage_is_bridged_within_the_buffer_and_held_spans_go_out_while_idle(tmp_path) -> None:
    from tests.conftest import RunningCollector
    from tracebridge.broker import free_port

    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEBRIDGE_"))}
    environment |= {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",  # nobody listens yet
        "TRACEBRIDGE_EXPORTER_RETRY_AFTER": "0.2",
        "TRACEBRIDGE_EXPORT_BUFFER": "30",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "10",
    }
    program = subprocess.Popen(
        [sys.executable, "-c", HOLD_PROGRAM],
        env=environment,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert program.stdout is not None and program.stdin is not None
        assert program.stdout.readline().split() == ["held", "30", "dropped", "20"]  # bounded
        with RunningCollector(tmp_path / "t.db", port=port) as collector:
            program.stdin.write("go\n")
            program.stdin.flush()
            assert program.stdout.readline().split() == ["held", "0", "dropped", "20", "late", "30"]
            deadline = time.monotonic() + 10
            while collector.store.span_count() < 30 and time.monotonic() < deadline:
                time.sleep(0.05)
            names = sorted(s.name for s in collector.store.spans_between(0))
        # The oldest 30 were kept, in the order they were made.
        assert names == sorted(f"span {n}" for n in range(30))
    finally:
        program.kill()
        program.wait(10)


def test_held_batches_are_their_encoded_requests_and_a_batch_that_does_not_fit_is_dropped_whole() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tracebridge.broker import free_port
    from tracebridge.exporting import ResilientExporter
    from tracebridge.otlp_wire import WireSpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    for number in range(30):
        provider.get_tracer("t").start_span(f"s{number}").end()
    spans = memory.get_finished_spans()
    dead = f"http://127.0.0.1:{free_port()}/v1/traces"  # nothing listens: every send fails
    exporter = ResilientExporter(WireSpanExporter(dead, timeout_s=1), endpoint=dead, max_held_spans=25)
    for batch in (spans[:10], spans[10:20], spans[20:]):
        exporter.export(batch)  # the third has room for 5 of its 10: it is dropped whole
    held = list(exporter._held)
    assert [len(batch) for batch in held] == [10, 10]
    assert all(isinstance(batch.body, bytes) for batch in held)
    names = [
        s.name
        for b in held
        for rs in ExportTraceServiceRequest.FromString(b.body).resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]
    assert names == [f"s{number}" for number in range(20)]
    assert exporter.dropped_spans == 10 and exporter.held_spans == 20
    exporter.shutdown()


def test_the_proxy_the_environment_names_carries_the_export_and_no_proxy_bypasses_it(receiver) -> None:
    # requests' environment (proxies, CA bundle, .netrc) is read once, when the exporter is
    # built, instead of on every POST: what it says must still decide where batches go.
    def proxies(http: str, no_proxy: str = "") -> dict[str, str]:
        names = {"HTTP_PROXY": http, "HTTPS_PROXY": http, "NO_PROXY": no_proxy}
        return names | {name.lower(): value for name, value in names.items()}

    # A name nobody resolves: only a proxy (the receiver, sent the absolute URL) can deliver it.
    through_proxy = run_program(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://collector.invalid:4318", **proxies(receiver)
    )
    assert through_proxy.returncode == 0, through_proxy.stderr
    assert sorted(spans_received()) == [f"work {n}" for n in range(5)]

    Receiver.requests = []
    dead_proxy = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    bypassed = run_program(OTEL_EXPORTER_OTLP_ENDPOINT=receiver, **proxies(dead_proxy, "127.0.0.1"))
    assert bypassed.returncode == 0, bypassed.stderr
    assert sorted(spans_received()) == [f"work {n}" for n in range(5)]

    Receiver.requests = []
    refused = run_program(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver, TRACEBRIDGE_SHUTDOWN_TIMEOUT="2", **proxies(dead_proxy)
    )
    assert refused.returncode == 0, refused.stderr  # an unreachable proxy loses spans, not the app
    assert spans_received() == [] and "done" in refused.stdout

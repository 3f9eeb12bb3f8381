"""configure(), exporters and the zero-code launchers, each in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer

from tests.conftest import read_topic, unique
from tracebridge.broker import free_port
from tracebridge.config import ConsumerParent, KafkaCarrier, Settings

APPS = Path(__file__).parent / "apps"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEBRIDGE_"))}
    env.update(extra)
    return env


def tracebridge_run(app: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tracebridge", "run", "--", sys.executable, str(APPS / app)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def test_settings_read_otel_then_tracebridge_variables() -> None:
    settings = Settings.from_env(
        {
            "OTEL_SERVICE_NAME": "order",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,service.name=ignored",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
            "OTEL_PROPAGATORS": "tracecontext,baggage,b3",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
            "TRACEBRIDGE_KAFKA_CARRIER": "both",
            "TRACEBRIDGE_CONSUMER_PARENT": "link",
            "TRACEBRIDGE_BAGGAGE_ATTRIBUTES": "order.id, customer.tier",
        }
    )
    assert settings.service_name == "order"
    assert settings.resource_attributes["deployment.environment"] == "prod"
    assert settings.otlp_traces_endpoint == "http://collector:4318/v1/traces"
    assert settings.propagators == ("tracecontext", "baggage", "b3")
    assert (settings.sampler, settings.sampler_arg) == ("parentbased_traceidratio", 0.25)
    assert settings.kafka_carrier is KafkaCarrier.BOTH
    assert settings.consumer_parent is ConsumerParent.LINK
    assert settings.baggage_attributes == ("order.id", "customer.tier")
    assert settings.problems == ()


def test_bad_settings_fall_back_to_defaults_and_say_why() -> None:
    settings = Settings.from_env(
        {
            "OTEL_TRACES_SAMPLER": "sometimes",
            "OTEL_TRACES_SAMPLER_ARG": "2",
            "OTEL_PROPAGATORS": "tracecontext,xray",
            "TRACEBRIDGE_KAFKA_CARRIER": "pigeon",
            "OTEL_BSP_SCHEDULE_DELAY": "soon",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318",
        }
    )
    assert settings.sampler == "parentbased_always_on"
    assert settings.propagators == ("tracecontext",)
    assert settings.kafka_carrier is KafkaCarrier.HEADERS
    assert settings.bsp_schedule_delay_ms == 5000
    assert settings.otlp_traces_endpoint == "http://localhost:4318/v1/traces"
    problems = " | ".join(settings.problems)
    for name in (
        "OTEL_TRACES_SAMPLER",
        "OTEL_PROPAGATORS",
        "TRACEBRIDGE_KAFKA_CARRIER",
        "OTEL_BSP_SCHEDULE_DELAY",
    ):
        assert name in problems
    assert "xray" in problems and "pigeon" in problems


def test_configure_twice_is_harmless() -> None:
    code = (
        "import tracebridge\n"
        "first = tracebridge.configure(service_name='a')\n"
        "second = tracebridge.configure(service_name='b')\n"
        "from opentelemetry import trace\n"
        "assert first is second is trace.get_tracer_provider()\n"
        "print(first.resource.attributes['service.name'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=clean_env(OTEL_TRACES_EXPORTER="none"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "a"
    assert "Overriding of current TracerProvider" not in result.stderr


async def test_service_that_exports_nothing_still_passes_the_context_on(bootstrap, broker) -> None:
    in_topic, out_topic = unique("in"), unique("out")
    broker.create_topics([in_topic, out_topic], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    await producer.send_and_wait(in_topic, b"x", headers=[("traceparent", TRACEPARENT.encode())])
    await producer.stop()
    env = clean_env(
        OTEL_TRACES_EXPORTER="none",
        OTEL_SERVICE_NAME="relay",
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        IN_TOPIC=in_topic,
        OUT_TOPIC=out_topic,
    )
    result = tracebridge_run("relay.py", env)
    assert result.returncode == 0, result.stderr
    (forwarded,) = await read_topic(bootstrap, out_topic, 1)
    traceparent = dict(forwarded.headers)["traceparent"].decode()
    _version, trace_id, span_id, flags = traceparent.split("-")
    assert trace_id == TRACEPARENT.split("-")[1]  # same trace
    assert span_id != TRACEPARENT.split("-")[2]  # a new span of the relay, not a copy
    assert flags == "01"


def test_dead_collector_costs_counted_spans_not_messages_or_time(bootstrap, broker) -> None:
    topic = unique("dead-collector")
    broker.create_topics([topic], partitions=1)
    env = clean_env(
        OTEL_SERVICE_NAME="busy",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}",  # nobody listens
        OTEL_EXPORTER_OTLP_TIMEOUT="30000",
        OTEL_BSP_SCHEDULE_DELAY="50",
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        TOPIC=topic,
        COUNT="300",
        PROBE="1",
    )
    result = tracebridge_run("produce_consume.py", env, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    assert lines["consumed"] == "300"  # no business message lost
    dropped, exported = (int(part) for part in lines["dropped"].split(" exported "))
    assert dropped == 600 and exported == 0  # one send + one process span per record, all counted
    assert float(lines["shutdown"]) < 10  # not the 30 s exporter timeout
    assert result.stderr.count("cannot export spans") == 1  # one warning, not one per batch
    assert "Traceback" not in result.stderr


def stored_spans(collector, at_least: int, timeout: float = 15.0) -> list:
    deadline = time.monotonic() + timeout
    while collector.store.span_count() < at_least:
        assert time.monotonic() < deadline, f"only {collector.store.span_count()} spans arrived"
        time.sleep(0.05)
    return collector.store.spans_between(0)


def test_exporting_to_a_live_collector_delivers_every_span(bootstrap, broker, collector) -> None:
    topic = unique("live-collector")
    broker.create_topics([topic], partitions=1)
    env = clean_env(
        OTEL_SERVICE_NAME="busy",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        TOPIC=topic,
        COUNT="50",
        PROBE="1",
    )
    result = tracebridge_run("produce_consume.py", env)
    assert result.returncode == 0, result.stderr
    spans = stored_spans(collector, 100)
    assert "dropped 0 exported 100" in result.stdout
    assert sorted({s.name for s in spans}) == [f"process {topic}", f"send {topic}"]
    assert len(spans) == 100 and {s.service for s in spans} == {"busy"}


def under_opentelemetry_instrument(app: str, collector, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a test app under the stock ``opentelemetry-instrument``, exporting to ``collector``."""
    environment = clean_env(
        OTEL_SERVICE_NAME="stock",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        **env,
    )
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    result = subprocess.run(
        [str(instrument), sys.executable, str(APPS / app)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_stock_opentelemetry_instrument_loads_our_instrumentor(bootstrap, broker, collector) -> None:
    topic = unique("stock")
    broker.create_topics([topic], partitions=1)
    result = under_opentelemetry_instrument(
        "produce_consume.py", collector, KAFKA_BOOTSTRAP_SERVERS=bootstrap, TOPIC=topic, COUNT="5"
    )
    spans = stored_spans(collector, 10)
    processes = [s for s in spans if s.name == f"process {topic}"]
    assert len(processes) == 5
    assert all(s.attributes["tracebridge.context.source"] == "headers" for s in processes)
    # contrib's aiokafka instrumentation is installed too (the benchmark compares against it):
    # it stepped aside, so every record has one send and one process span, both ours
    assert {s.scope for s in spans} == {"tracebridge.messaging.kafka.aiokafka"}
    assert len([s for s in spans if s.name == f"send {topic}"]) == 5
    assert "tracebridge: skipping upstream instrumentation" in result.stderr
    assert "'aiokafka'" in result.stderr


def test_stock_opentelemetry_instrument_traces_confluent_kafka_once(bootstrap, broker, collector) -> None:
    topic = unique("stock-confluent")
    broker.create_topics([topic], partitions=1)
    result = under_opentelemetry_instrument(
        "confluent_produce.py", collector, KAFKA_BOOTSTRAP_SERVERS=bootstrap, TOPIC=topic, COUNT="3"
    )
    spans = stored_spans(collector, 3)
    sends = [s for s in spans if s.name == f"send {topic}"]
    assert len(sends) == 3 and len(spans) == 3
    assert sorted(s.attributes["messaging.kafka.offset"] for s in sends) == [0, 1, 2]  # ours: to the ack
    assert "tracebridge: skipping upstream instrumentation" in result.stderr
    assert "'confluent_kafka'" in result.stderr


def test_run_without_a_command_says_what_to_do() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tracebridge", "run", "--"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "give a command after '--'" in result.stderr


def test_run_with_unknown_command_names_it() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tracebridge", "run", "--", "no-such-program-xyz"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "no-such-program-xyz" in result.stderr


def test_sigterm_flushes_spans_then_dies_by_sigterm_as_before(bootstrap, broker, collector) -> None:
    """Kubernetes stops pods with SIGTERM; the default action kills Python without atexit,
    which would lose the last spans. Under `tracebridge run` they are flushed first — and the
    program still ends exactly as it would have: killed by SIGTERM."""
    import signal

    topic = unique("sigterm")
    broker.create_topics([topic], partitions=1)
    env = clean_env(
        OTEL_SERVICE_NAME="victim",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
        OTEL_BSP_SCHEDULE_DELAY="60000",  # nothing leaves before the signal
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        TOPIC=topic,
    )
    command = [
        sys.executable,
        "-m",
        "tracebridge",
        "run",
        "--",
        sys.executable,
        str(APPS / "sigterm_victim.py"),
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "produced"
    assert collector.store.is_empty()
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == -signal.SIGTERM
    spans = stored_spans(collector, 5, timeout=5)
    assert sorted({span.name for span in spans}) == [f"send {topic}"]
    assert len(spans) == 5


def test_sigterm_flush_leaves_a_programs_own_handler_alone() -> None:
    import signal

    from tracebridge.sdk import flush_on_sigterm

    previous = signal.getsignal(signal.SIGTERM)

    def own_handler(signum: int, frame: object) -> None:
        return None

    signal.signal(signal.SIGTERM, own_handler)
    try:
        assert flush_on_sigterm() is False
        assert signal.getsignal(signal.SIGTERM) is own_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_run_instruments_each_library_on_its_first_import_not_before(collector) -> None:
    """An installed library the program never imports is never loaded (no memory for it); one
    imported later is traced from its first use — ``from confluent_kafka import Producer``
    binds the traced class, a Flask request gets its server span — and one loaded at start-up
    (``requests``, by the exporter) is traced at once: the handler's call carries the trace."""
    import http.server
    import json
    import threading

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = (self.headers.get("traceparent") or "").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = clean_env(
            OTEL_SERVICE_NAME="lazy",
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
            URL=f"http://127.0.0.1:{server.server_port}/echo",
        )
        result = tracebridge_run("lazy_imports.py", env)
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["preloaded"] == []
    assert seen["producer_class"] == "tracebridge.messaging.kafka.confluent_kafka.TracedProducer"
    stored = [s for s in stored_spans(collector, 3) if s.service == "lazy"]
    time.sleep(0.5)  # a second server span for the FastAPI request would have arrived with it
    stored = [s for s in collector.store.spans_between(0) if s.service == "lazy"]
    assert len(stored) == 3
    servers = sorted(s.name for s in stored if s.kind == "SERVER")
    assert servers == ["GET /hello", "GET /items/{item}"]  # one each: FastAPI's too
    echo = [s for s in stored if s.kind == "CLIENT" and str(s.attributes.get("url.full")).endswith("/echo")]
    spans = {"SERVER": next(s for s in stored if s.name == "GET /hello"), "CLIENT": echo[0]}
    assert len(echo) == 1 and spans["CLIENT"].name == "GET"
    assert spans["CLIENT"].parent_span_id == spans["SERVER"].span_id
    # sampled, random trace id (W3C Level 2 flags 0x03)
    assert seen["traceparent_sent"] == f"00-{spans['CLIENT'].trace_id}-{spans['CLIENT'].span_id}-03"


def test_an_edge_that_drops_inbound_context_instruments_aiohttp_cleanly() -> None:
    """The inbound-context policy is put on each server stack as it loads: arming it must not
    import aiohttp's server instrumentation early (whose aiohttp import would then instrument
    aiohttp inside that half-done import)."""
    env = clean_env(
        OTEL_TRACES_EXPORTER="none", OTEL_LOGS_EXPORTER="none", TRACEBRIDGE_INBOUND_CONTEXT="drop"
    )
    program = "import sys, aiohttp.web; print(sorted(m for m in sys.modules if m.endswith('aiohttp_server')))"
    command = [sys.executable, "-m", "tracebridge", "run", "--", sys.executable, "-c", program]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "could not instrument" not in result.stderr
    # instrumented, on aiohttp's import
    assert result.stdout.strip() == "['opentelemetry.instrumentation.aiohttp_server']"

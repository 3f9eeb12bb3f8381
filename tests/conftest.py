"""Shared fixtures: one real embedded broker per session, one recording tracer provider.

The OpenTelemetry tracer provider can be set only once per process, so the session installs
one that records finished spans in memory (the SDK's own exporter); Kafka and HTTP stay real.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from tests.otlp_receiver import receiver  # noqa: F401 (a fixture, shared)
from tracebridge.broker import EmbeddedBroker
from tracebridge.business_keys import BusinessKeysProcessor
from tracebridge.sdk import build_propagator

# Short group timings: Tansu answers a JoinGroup after ~half the session timeout (DESIGN §4).
CONSUMER_TIMINGS = {"session_timeout_ms": 3000, "heartbeat_interval_ms": 500}
_names = itertools.count()

SPANS = InMemorySpanExporter()
# Sampled unless a test's parent says otherwise; a 0-ratio root sampler lets tests create
# unsampled roots through the real sampler by starting them under an unsampled parent.
PROVIDER = TracerProvider(
    resource=Resource({"service.name": "tests"}), sampler=ParentBased(TraceIdRatioBased(1.0))
)
PROVIDER.add_span_processor(BusinessKeysProcessor(("order.id",), SimpleSpanProcessor(SPANS)))
trace.set_tracer_provider(PROVIDER)
propagate.set_global_textmap(build_propagator(("tracecontext", "baggage")))


def unique(prefix: str) -> str:
    """A fresh topic or group name, so tests never see each other's records."""
    return f"{prefix}-{next(_names)}"


class ExternalKafka:
    """A Kafka cluster of your own, named by ``TRACEBRIDGE_TEST_KAFKA=host:port``: the Kafka
    tests then run against it (Apache Kafka, Redpanda, …) exactly as against the embedded
    broker, so the same behaviour is proven there.  (The eshop stack tests always start their
    own embedded broker.)"""

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        first = bootstrap_servers.split(",")[0].strip()
        self.port = int(first.rpartition(":")[2])

    def create_topics(self, names: list[str] | tuple[str, ...], partitions: int = 1) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        futures = admin.create_topics([NewTopic(name, partitions, 1) for name in names])
        for name, future in futures.items():
            try:
                future.result(30)
            except Exception as error:
                if "TOPIC_ALREADY_EXISTS" not in str(error):
                    raise RuntimeError(f"could not create topic {name!r}: {error}") from error


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker | ExternalKafka]:
    external = os.environ.get("TRACEBRIDGE_TEST_KAFKA", "").strip()
    if external:
        yield ExternalKafka(external)
        return
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture(scope="session")
def bootstrap(broker: EmbeddedBroker) -> str:
    return broker.bootstrap_servers


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    SPANS.clear()
    yield SPANS
    SPANS.clear()


@pytest.fixture
def kafka_instrumented(spans: InMemorySpanExporter) -> Iterator[None]:
    from tracebridge.messaging.kafka.aiokafka import AIOKafkaInstrumentor

    AIOKafkaInstrumentor().instrument()
    yield
    AIOKafkaInstrumentor().uninstrument()


def by_name(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def one(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = by_name(exporter, name)
    assert len(found) == 1, f"expected one {name!r}, got {[s.name for s in exporter.get_finished_spans()]}"
    return found[0]


async def wait_for_spans(
    exporter: InMemorySpanExporter, name: str, count: int = 1, timeout: float = 10
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while len(by_name(exporter, name)) < count:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"waited for {count} {name!r}; have {[s.name for s in exporter.get_finished_spans()]}"
            )
        await asyncio.sleep(0.01)


@pytest.fixture
async def producer(bootstrap: str, kafka_instrumented: None) -> AsyncIterator[object]:
    from aiokafka import AIOKafkaProducer

    running = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await running.start()
    yield running
    await running.stop()


async def read_topic(bootstrap: str, topic: str, count: int) -> list[object]:
    """The first ``count`` records of partition 0, read without a consumer group (no join wait)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        return [await consumer.getone() for _ in range(count)]
    finally:
        await consumer.stop()


class RunningCollector:
    """The collector's ASGI app served by uvicorn on 127.0.0.1, with a temporary store."""

    def __init__(self, db_path, config=None, port: int | None = None) -> None:
        import threading

        import uvicorn

        from tracebridge.broker import free_port
        from tracebridge.collector.app import build_app
        from tracebridge.collector.store import SpanStore

        self.store = SpanStore(db_path)
        self.port = port or free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(build_app(self.store, config), host="127.0.0.1", port=self.port, log_level="error")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RunningCollector:
        import time

        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("collector did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.store.close()


@pytest.fixture
def collector(tmp_path) -> Iterator[RunningCollector]:
    with RunningCollector(tmp_path / "traces.db") as running:
        yield running

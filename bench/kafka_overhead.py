"""Per-record cost of Kafka tracing for every client we instrument: bare vs tracebridge vs
OpenTelemetry contrib's instrumentation of the same client.

    python bench/kafka_overhead.py [--records 20000] [--size 200] [--rounds 3]
                                   [--clients aiokafka,confluent,kafka-python]

All variants run in this one invocation against one embedded broker, each in a fresh process
(the tracer provider and the instrumentation are process-global), interleaved round by round
so machine noise hits them alike; the median of the rounds is reported.  Each traced variant
exports over real OTLP/HTTP to a separate receiving process (``otlp_sink.py``) through the
span pipeline a user gets by default — the SDK's ``BatchSpanProcessor`` for contrib,
``tracebridge.configure()``'s for ours, each with a queue that holds every span of the run so
none is dropped unexported — and each timed phase ends with a flush of the provider, so export
is inside the measurement.  ``tracebridge+helper`` is ours with ``TRACEBRIDGE_EXPORT_PROCESS=helper``
(export in a helper process; that process's CPU per record is printed next to the figures, which
are the measured process's).  The result is the added µs/record over the bare client, our added
cost as a ratio of contrib's (target ≤ 0.15), and an unsampled record's added cost (target ≤ 2 µs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

CLIENTS = ("aiokafka", "confluent", "kafka-python")
VARIANTS = ("bare", "bare+header", "contrib", "tracebridge", "tracebridge+helper", "tracebridge-unsampled")
# What the client itself costs to carry one traceparent header per record — a floor no
# propagating instrumentation can go below, shown so the rest can be read against it.
CONSTANT_HEADER = [("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
WARMUP = 2000
# Room for every span of a run in the export queue, for both pipelines: a span dropped on a full
# queue is never encoded or sent, and would make a variant look cheaper than it is.
QUEUE = 1 << 17
RATIO_TARGET = 0.15  # issue "Tracing that costs close to nothing"
UNSAMPLED_TARGET_US = 2.0
OURS = {"aiokafka": "aiokafka", "confluent": "confluent_kafka", "kafka-python": "kafka_python"}
CONTRIB = {
    "aiokafka": "opentelemetry.instrumentation.aiokafka:AIOKafkaInstrumentor",
    "confluent": "opentelemetry.instrumentation.confluent_kafka:ConfluentKafkaInstrumentor",
    "kafka-python": "opentelemetry.instrumentation.kafka:KafkaInstrumentor",
}


def contrib_provider(endpoint: str):  # type: ignore[no-untyped-def]
    """The pipeline contrib's users get: the SDK's provider, ``BatchSpanProcessor`` (with room
    for every span of a run) and OTLP/HTTP exporter, set as the global provider."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), max_queue_size=QUEUE))
    trace.set_tracer_provider(provider)
    return provider


def setup(client: str, variant: str, endpoint: str) -> Callable[[], None]:
    """Install the variant's tracing, exactly as a user would; return its flush."""
    if variant in ("bare", "bare+header"):
        return lambda: None
    if variant == "contrib":
        import importlib

        provider = contrib_provider(endpoint)
        module, _, name = CONTRIB[client].partition(":")
        getattr(importlib.import_module(module), name)().instrument()
        return lambda: provider.force_flush()
    import tracebridge

    # Unsampled as it happens in practice: the trace was not sampled upstream, and every span
    # follows its parent's decision (the default parent-based sampler).
    sampler = "parentbased_always_off" if variant == "tracebridge-unsampled" else "parentbased_always_on"
    provider = tracebridge.configure(
        service_name="bench",
        sampler=sampler,
        otlp_traces_endpoint=endpoint,
        bsp_max_queue_size=QUEUE,
        export_process="helper" if variant == "tracebridge+helper" else "inline",
    )
    tracebridge.instrument(only=(OURS[client],))
    return lambda: provider.force_flush()


async def aiokafka_run(bootstrap: str, topic: str, payload: bytes, headers, records: int, flush) -> dict:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()

    async def produce(count: int) -> float:
        started = time.perf_counter()
        pending = []
        for _ in range(count):
            pending.append(await producer.send(topic, payload, headers=headers))
            if len(pending) == 1000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        flush()
        return time.perf_counter() - started

    try:
        await produce(WARMUP)
        produce_seconds = await produce(records)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        for _ in range(WARMUP):
            await consumer.getone()
        started = time.perf_counter()
        for _ in range(records):
            await consumer.getone()
        flush()
        consume_seconds = time.perf_counter() - started
    finally:
        await consumer.stop()
    return {"produce_us": produce_seconds / records * 1e6, "consume_us": consume_seconds / records * 1e6}


def confluent_run(bootstrap: str, topic: str, payload: bytes, headers, records: int, flush) -> dict:
    import confluent_kafka  # after setup(): the instrumentations replace its classes

    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})

    def produce(count: int) -> float:
        started = time.perf_counter()
        for number in range(count):
            while True:
                try:
                    producer.produce(topic, payload, headers=headers)
                    break
                except BufferError:
                    producer.poll(0.05)
            if number % 1000 == 0:
                producer.poll(0)
        producer.flush(60)
        flush()
        return time.perf_counter() - started

    produce(WARMUP)
    produce_seconds = produce(records)
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])

    def consume(count: int) -> None:
        seen = 0
        while seen < count:
            message = consumer.poll(5.0)
            if message is not None and message.error() is None:
                seen += 1

    try:
        consume(WARMUP)
        started = time.perf_counter()
        consume(records)
        consumer.poll(0)  # ends the last process span, as the next loop turn would
        flush()
        consume_seconds = time.perf_counter() - started
    finally:
        consumer.close()
    return {"produce_us": produce_seconds / records * 1e6, "consume_us": consume_seconds / records * 1e6}


def kafka_python_run(bootstrap: str, topic: str, payload: bytes, headers, records: int, flush) -> dict:
    import kafka

    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)

    def produce(count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            producer.send(topic, payload, headers=headers)
        producer.flush(60)
        flush()
        return time.perf_counter() - started

    try:
        produce(WARMUP)
        produce_seconds = produce(records)
    finally:
        producer.close()
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=30_000
    )
    partition = kafka.TopicPartition(topic, 0)
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    try:
        for _ in range(WARMUP):
            next(consumer)
        started = time.perf_counter()
        for _ in range(records):
            next(consumer)
        flush()
        consume_seconds = time.perf_counter() - started
    finally:
        consumer.close()
    return {"produce_us": produce_seconds / records * 1e6, "consume_us": consume_seconds / records * 1e6}


def measure(
    client: str, variant: str, bootstrap: str, topic: str, records: int, size: int, endpoint: str
) -> dict:
    flush = setup(client, variant, endpoint)
    payload = os.urandom(size // 2).hex().encode()[:size]
    headers = list(CONSTANT_HEADER) if variant == "bare+header" else None
    if client == "aiokafka":
        result = asyncio.run(aiokafka_run(bootstrap, topic, payload, headers, records, flush))
    else:
        run = confluent_run if client == "confluent" else kafka_python_run
        result = run(bootstrap, topic, payload, headers, records, flush)
    result["helper_cpu_us"] = helper_cpu_seconds() / (2 * (records + WARMUP)) * 1e6
    return result


def helper_cpu_seconds() -> float:
    """CPU time the export helper process has used (tracebridge's export runs there, not in
    the measured process: it is reported next to the figures, not hidden by them)."""
    from tracebridge.sdk import configured

    state = configured()
    pid = getattr(state.exporter, "helper_pid", None) if state is not None else None
    if pid is None:
        return 0.0
    return process_cpu_seconds(pid)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process, from ``/proc`` (the benchmarks' one reader of it)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sink:
    """``otlp_sink.py`` in its own process."""

    def __init__(self) -> None:
        from tracebridge.broker import free_port

        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("otlp_sink.py")), str(self.port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "ready"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def received(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/count", timeout=5) as response:
            return int(response.read())

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--client", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # one measurement, in a fresh process
        result = measure(
            args.client, args.variant, args.bootstrap, args.topic, args.records, args.size, args.endpoint
        )
        print(json.dumps(result))
        return
    clients = [name.strip() for name in args.clients.split(",") if name.strip()]
    unknown = set(clients) - set(CLIENTS)
    if unknown:
        parser.error(f"unknown client(s) {', '.join(sorted(unknown))}; choose from {', '.join(CLIENTS)}")

    from tracebridge.broker import EmbeddedBroker

    results = {client: {variant: [] for variant in VARIANTS} for client in clients}
    exported = {client: {variant: [] for variant in VARIANTS} for client in clients}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEBRIDGE_"))}
    with EmbeddedBroker() as broker, Sink() as sink:
        for round_number in range(1, args.rounds + 1):
            for client in clients:
                for variant in VARIANTS:
                    topic = f"bench-{client}-{variant}-{uuid.uuid4().hex[:6]}".replace("+", "-")
                    broker.create_topics([topic], partitions=1)
                    before = sink.received()
                    command = [sys.executable, __file__, "--client", client, "--variant", variant]
                    command += [
                        "--bootstrap",
                        broker.bootstrap_servers,
                        "--topic",
                        topic,
                        "--endpoint",
                        sink.endpoint,
                    ]
                    command += ["--records", str(args.records), "--size", str(args.size)]
                    output = subprocess.run(
                        command, env=env, capture_output=True, text=True, check=True
                    ).stdout
                    results[client][variant].append(json.loads(output.strip().splitlines()[-1]))
                    exported[client][variant].append(sink.received() - before)
                    print(
                        f"round {round_number} {client:<13} {variant:<22} {results[client][variant][-1]} "
                        f"spans exported: {exported[client][variant][-1]}",
                        file=sys.stderr,
                        flush=True,
                    )
    for client in clients:
        report(client, results[client], exported[client], args)


def report(client: str, results: dict, exported: dict, args: argparse.Namespace) -> None:
    """Medians per variant, and ratios computed within each round (the variants of one round
    share the machine's mood) then taken as the median over rounds."""
    sides = ("produce_us", "consume_us")
    median = {v: {k: statistics.median(run[k] for run in runs) for k in sides} for v, runs in results.items()}
    bare = median["bare"]
    print(
        f"\n{client}: {args.records} records of {args.size} B, one partition, median of {args.rounds} rounds"
    )
    print(f"µs per record; 'added' is over bare {client} in the same run; spans: received by the OTLP sink")
    print(f"{'variant':<24}{'produce':>10}{'added':>10}{'consume':>10}{'added':>10}{'spans':>10}")
    for variant in VARIANTS:
        m = median[variant]
        print(
            f"{variant:<24}{m['produce_us']:>10.1f}{m['produce_us'] - bare['produce_us']:>10.1f}"
            f"{m['consume_us']:>10.1f}{m['consume_us'] - bare['consume_us']:>10.1f}"
            f"{statistics.median(exported[variant]):>10.0f}"
        )
    rounds = range(len(results["bare"]))
    for side in sides:

        def added(variant: str, number: int, side: str = side) -> float:
            return results[variant][number][side] - results["bare"][number][side]

        unsampled = statistics.median(added("tracebridge-unsampled", n) for n in rounds)
        header_floor = statistics.median(added("bare+header", n) for n in rounds)
        for ours in ("tracebridge", "tracebridge+helper"):
            ratios = [added(ours, n) / added("contrib", n) for n in rounds if added("contrib", n) > 0]
            ratio = statistics.median(ratios) if ratios else float("nan")
            ratio_verdict = "met" if ratio <= RATIO_TARGET else "NOT met"
            print(
                f"{client} {side.removesuffix('_us')}: {ours}/contrib added cost = {ratio:.2f} "
                f"(per round: {', '.join(f'{r:.2f}' for r in ratios)}; target ≤ {RATIO_TARGET}: "
                f"{ratio_verdict})"
            )
        unsampled_verdict = "met" if unsampled <= UNSAMPLED_TARGET_US else "NOT met"
        print(
            f"{client} {side.removesuffix('_us')}: unsampled adds {unsampled:.1f} µs (target ≤ "
            f"{UNSAMPLED_TARGET_US:.0f} µs: {unsampled_verdict}), of which {header_floor:.1f} µs is "
            "the client carrying the header"
        )
    helper = statistics.median(run.get("helper_cpu_us", 0.0) for run in results["tracebridge+helper"])
    print(
        f"{client}: tracebridge+helper's export helper process used {helper:.1f} µs of CPU per record "
        "(produce and consume alike; outside the figures above, which are the application's)"
    )


if __name__ == "__main__":
    main()
